// The AMX kernel set of the fast CPU backend (contract: fast_kernels.h): the bf16 set with its bf16 attention
// chunks and stage-1 scores on AMX tile products (tdpbf16ps: a 16 x 16 fp32 tile += a 16 x 32 bf16 tile times
// a 32 x 16 one held as pairs, 8192 multiply-adds per instruction). Used when q, k, v and out are bf16, as the
// bf16 set; the same roundings (P to bf16, every sum fp32), so the outputs differ from it only in the order of
// the fp32 sums.
//
//   Q K^T:   S^T (keys, rows) = K (16 keys x 32 d per tile, the K rows in place when the chunk's keys are
//            consecutive, else copied) times Q^T pairs (QueryTile::qp: already the pair layout a tile's right
//            operand needs), in 2 x 2 blocks of 16 x 16 tiles straight into the scores; then times scale.
//   softmax: the AVX-512 set's, on the fp32 scores.
//   P V:     P rounded to bf16 and transposed to (rows, keys) by 16 x 16 word transposes of its key pairs,
//            V paired by keys (once per KV head by the caller for chunks of consecutive keys from an even
//            key, else per chunk); O (rows, d) tiles loaded, multiplied into and stored,
//            after the rows whose maximum moved were rescaled.
// Head dims whose pairs are not a multiple of 16 (the tile width) or above 256 run the bf16 set's code.
// Linux hands out the tile state per process on request (arch_prctl ARCH_REQ_XCOMP_PERM); each call loads the
// tile configuration on its thread and releases the tiles at its end.
#include <cstdint>
#include <cstring>

#include "cpu/fast_kernels.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define SA_HAVE_AMX_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>

#include "cpu/amx_config.h"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace sampleattn::cpu::fast {

#ifdef SA_HAVE_AMX_KERNELS
namespace {

#define SA_AMX \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))

constexpr int kMaxPairs = 128;  // head_dim up to 256
// Query rows per attention tile: each K/V chunk (its copies and V's pairing) serves twice the rows of the
// other sets' tiles (dense 16K on the device machine's 16-core Xeon: -10%; sparse at 10%: the same).
constexpr int kAmxTileRows = 128;

// Tiles 0-3 accumulate, 4-5 hold left operands, 6-7 right ones.
const amx::TileConfig kConfig;

const Kernels* g_bf16 = nullptr;  // the bf16 set, for head dims the tiles do not fit

bool fits_tiles(int dim_pairs) { return dim_pairs % 16 == 0 && dim_pairs <= kMaxPairs; }
bool wants_v_pairs(int head_dim) { return fits_tiles((head_dim + 1) / 2); }

// S^T (16 or 32 keys, 16 or 32 rows) at s (ld rp floats) = K rows (stride kb bytes) times Q^T pairs qp (ld rp).
template <bool TwoKeys, bool TwoRows>
SA_AMX inline void qk_tiles(const std::uint16_t* k, std::int64_t kb, const std::uint32_t* qp, int rp, int steps,
                            float* s) {
  _tile_zero(0);
  if constexpr (TwoRows) _tile_zero(1);
  if constexpr (TwoKeys) _tile_zero(2);
  if constexpr (TwoKeys && TwoRows) _tile_zero(3);
  const std::int64_t qb = static_cast<std::int64_t>(rp) * 4;
  for (int ks = 0; ks < steps; ++ks) {
    const std::uint32_t* q = qp + static_cast<std::int64_t>(16 * ks) * rp;
    _tile_loadd(4, k + 32 * ks, kb);
    _tile_loadd(6, q, qb);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (TwoRows) {
      _tile_loadd(7, q + 16, qb);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (TwoKeys) {
      _tile_loadd(5, reinterpret_cast<const char*>(k + 32 * ks) + 16 * kb, kb);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (TwoRows) _tile_dpbf16ps(3, 5, 7);
    }
  }
  const std::int64_t sb = static_cast<std::int64_t>(rp) * 4;
  _tile_stored(0, s, sb);
  if constexpr (TwoRows) _tile_stored(1, s + 16, sb);
  if constexpr (TwoKeys) _tile_stored(2, s + 16 * rp, sb);
  if constexpr (TwoKeys && TwoRows) _tile_stored(3, s + 16 * rp + 16, sb);
}

SA_AMX void scale_scores(float* s, std::int64_t n, float scale) {
  const __m512 sc = _mm512_set1_ps(scale);
  for (std::int64_t i = 0; i < n; i += 16) _mm512_storeu_ps(s + i, _mm512_mul_ps(_mm512_loadu_ps(s + i), sc));
}

// The 16 x 16 words of w transposed in place: word c of w[i] becomes word i of w[c].
SA_AMX inline void transpose16(__m512i w[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(w[i], w[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(w[i], w[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    w[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    w[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    w[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    w[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // w[4a + b] holds words b, b + 4, b + 8, b + 12 of rows 4a .. 4a + 3, one 128-bit lane each.
  for (int h = 0; h < 16; h += 8)
    for (int b = 0; b < 4; ++b) {
      t[h + b] = _mm512_shuffle_i32x4(w[h + b], w[h + 4 + b], 0x88);
      t[h + 4 + b] = _mm512_shuffle_i32x4(w[h + b], w[h + 4 + b], 0xdd);
    }
  for (int b = 0; b < 8; ++b) {
    w[b] = _mm512_shuffle_i32x4(t[b], t[8 + b], 0x88);
    w[8 + b] = _mm512_shuffle_i32x4(t[b], t[8 + b], 0xdd);
  }
}

// P (rows_padded, 16 * blocks pairs of keys) as bf16 pairs, row i at pa + 32 i: word (i, jj) =
// bf16(P[2jj][i]) | bf16(P[2jj + 1][i]) << 16 from the probabilities S^T in t.s; zero for keys past n.
SA_AMX void p_rows(const QueryTile& t, int n, int blocks, std::uint32_t* pa) {
  const int rp = t.rows_padded;
  alignas(64) static constexpr std::uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                                21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                                11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i order = _mm512_load_si512(kInterleave);
  for (int ib = 0; ib < rp; ib += 16)
    for (int kb = 0; kb < blocks; ++kb) {
      __m512i w[16];
      for (int c = 0; c < 16; ++c) {
        const int k0 = 2 * (16 * kb + c);
        const __m512 p0 = k0 < n ? _mm512_loadu_ps(t.s + static_cast<std::int64_t>(k0) * rp + ib) : _mm512_setzero_ps();
        const __m512 p1 =
            k0 + 1 < n ? _mm512_loadu_ps(t.s + static_cast<std::int64_t>(k0 + 1) * rp + ib) : _mm512_setzero_ps();
        w[c] = _mm512_permutexvar_epi16(order, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(p1, p0)));
      }
      transpose16(w);
      for (int i = 0; i < 16; ++i) _mm512_storeu_si512(pa + static_cast<std::int64_t>(ib + i) * 32 + 16 * kb, w[i]);
    }
}

// V pairs (n/2 rounded up, dp) words: word (jj, x) = V[2jj][x] | V[2jj + 1][x] << 16 (a zero key pads an odd
// n); dp is a multiple of 32. Each 32 dims of two keys: one 16-bit interleave per 128-bit lane, then the
// lanes back in dim order.
SA_AMX void v_pairs(const KeyChunk& c, int dp, std::uint32_t* vp) {
  const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
  const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  const int pairs = (c.n + 1) / 2;
  for (int jj = 0; jj < pairs; ++jj) {
    const std::uint16_t* v0 = c.v16[2 * jj];
    const std::uint16_t* v1 = 2 * jj + 1 < c.n ? c.v16[2 * jj + 1] : nullptr;
    std::uint32_t* out = vp + static_cast<std::int64_t>(jj) * dp;
    for (int x = 0; x < dp; x += 32) {
      const __m512i a = _mm512_loadu_si512(v0 + x);
      const __m512i b = v1 != nullptr ? _mm512_loadu_si512(v1 + x) : _mm512_setzero_si512();
      const __m512i lo = _mm512_unpacklo_epi16(a, b), hi = _mm512_unpackhi_epi16(a, b);
      _mm512_storeu_si512(out + x, _mm512_permutex2var_epi64(lo, first, hi));
      _mm512_storeu_si512(out + x + 16, _mm512_permutex2var_epi64(lo, second, hi));
    }
  }
}

// O (16 or 32 rows, 32 dims) at o (ld dp floats) += P rows pa (ld 32 words) times V pairs vp (ld dp words).
template <bool TwoRows>
SA_AMX inline void pv_tiles(const std::uint32_t* pa, const std::uint32_t* vp, int dp, int blocks, float* o) {
  const std::int64_t ob = static_cast<std::int64_t>(dp) * 4;
  _tile_loadd(0, o, ob);
  _tile_loadd(1, o + 16, ob);
  if constexpr (TwoRows) {
    _tile_loadd(2, o + 16 * dp, ob);
    _tile_loadd(3, o + 16 * dp + 16, ob);
  }
  for (int kb = 0; kb < blocks; ++kb) {
    const std::uint32_t* v = vp + static_cast<std::int64_t>(16 * kb) * dp;
    _tile_loadd(4, pa + 16 * kb, 128);
    _tile_loadd(6, v, ob);
    _tile_loadd(7, v + 16, ob);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if constexpr (TwoRows) {
      _tile_loadd(5, pa + 16 * 32 + 16 * kb, 128);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, o, ob);
  _tile_stored(1, o + 16, ob);
  if constexpr (TwoRows) {
    _tile_stored(2, o + 16 * dp, ob);
    _tile_stored(3, o + 16 * dp + 16, ob);
  }
}

// The chunk's K rows for tile loads: in place when they are consecutive rows of one panel and fill whole
// 16-key tiles, else copied to buf (rows of 2 * dim_pairs values, zero rows up to the next 16). Returns the
// first row; *stride gets the row stride in bytes.
SA_AMX const std::uint16_t* key_rows(const KeyChunk& c, int dim_pairs, std::uint16_t* buf, std::int64_t* stride) {
  if (c.n % 16 == 0) {
    const std::int64_t ld = c.k16[1] - c.k16[0];
    bool consecutive = ld > 0;
    for (int j = 2; j < c.n && consecutive; ++j) consecutive = c.k16[j] - c.k16[j - 1] == ld;
    if (consecutive) {
      *stride = ld * 2;
      return c.k16[0];
    }
  }
  const int width = 2 * dim_pairs;
  for (int j = 0; j < c.n; ++j)
    std::memcpy(buf + static_cast<std::int64_t>(j) * width, c.k16[j], static_cast<std::size_t>(width) * 2);
  const int padded = (c.n + 15) / 16 * 16;
  std::memset(buf + static_cast<std::int64_t>(c.n) * width, 0, static_cast<std::size_t>(padded - c.n) * width * 2);
  *stride = static_cast<std::int64_t>(width) * 2;
  return buf;
}

SA_AMX void attend_chunk_amx(const QueryTile& t, const KeyChunk& c) {
  if (!fits_tiles(t.dim_pairs)) {
    g_bf16->attend_chunk_bf16(t, c);
    return;
  }
  const int rp = t.rows_padded, dp = t.dim_padded, steps = t.dim_pairs / 16;
  std::uint32_t* pa = t.pairs;
  std::uint32_t* vp = t.pairs + static_cast<std::int64_t>(kChunk / 2) * rp;
  auto* kbuf = reinterpret_cast<std::uint16_t*>(vp + static_cast<std::int64_t>(kChunk / 2) * dp);
  std::int64_t kb = 0;
  const std::uint16_t* k = key_rows(c, t.dim_pairs, kbuf, &kb);

  _tile_loadconfig(&kConfig);
  const int key_groups = (c.n + 15) / 16, row_groups = rp / 16;
  for (int g = 0; g < key_groups; g += 2) {
    const std::uint16_t* kg = reinterpret_cast<const std::uint16_t*>(reinterpret_cast<const char*>(k) + 16 * g * kb);
    float* s = t.s + static_cast<std::int64_t>(16 * g) * rp;
    const bool two_keys = g + 1 < key_groups;
    int r = 0;
    for (; r + 2 <= row_groups; r += 2) {
      if (two_keys) {
        qk_tiles<true, true>(kg, kb, t.qp + 16 * r, rp, steps, s + 16 * r);
      } else {
        qk_tiles<false, true>(kg, kb, t.qp + 16 * r, rp, steps, s + 16 * r);
      }
    }
    if (r < row_groups) {
      if (two_keys) {
        qk_tiles<true, false>(kg, kb, t.qp + 16 * r, rp, steps, s + 16 * r);
      } else {
        qk_tiles<false, false>(kg, kb, t.qp + 16 * r, rp, steps, s + 16 * r);
      }
    }
  }
  scale_scores(t.s, static_cast<std::int64_t>(c.n) * rp, t.q_scale);
  avx512_softmax_step(t, c);

  const int pairs = (c.n + 1) / 2, blocks = (pairs + 15) / 16;
  p_rows(t, c.n, blocks, pa);
  // V pairs: the caller's (built once per KV head; the rows past the chunk meet zero P words), or this chunk's.
  const std::uint32_t* vb = c.v_pairs;
  if (vb == nullptr) {
    v_pairs(c, dp, vp);
    std::memset(vp + static_cast<std::int64_t>(pairs) * dp, 0, static_cast<std::size_t>(16 * blocks - pairs) * dp * 4);
    vb = vp;
  }
  for (int i = 0; i < rp; ++i) {
    const float corr = t.corr[i];
    if (corr == 1.0f) continue;
    float* o = t.o + static_cast<std::int64_t>(i) * dp;
    const __m512 cr = _mm512_set1_ps(corr);
    for (int x = 0; x < dp; x += 16) _mm512_storeu_ps(o + x, _mm512_mul_ps(_mm512_loadu_ps(o + x), cr));
  }
  int r = 0;
  for (; r + 2 <= row_groups; r += 2)
    for (int x = 0; x < dp; x += 32)
      pv_tiles<true>(pa + static_cast<std::int64_t>(16 * r) * 32, vb + x, dp, blocks,
                     t.o + static_cast<std::int64_t>(16 * r) * dp + x);
  if (r < row_groups)
    for (int x = 0; x < dp; x += 32)
      pv_tiles<false>(pa + static_cast<std::int64_t>(16 * r) * 32, vb + x, dp, blocks,
                      t.o + static_cast<std::int64_t>(16 * r) * dp + x);
  _tile_release();
}

// Scores of the 16 sampled rows against 64 consecutive keys at k (stride kb bytes) into s (16 floats a key).
SA_AMX inline void sample_tiles4(const std::uint16_t* k, std::int64_t kb, const std::uint32_t* qp, int steps,
                                 float* s) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const char* k0 = reinterpret_cast<const char*>(k);
  for (int ks = 0; ks < steps; ++ks) {
    _tile_loadd(6, qp + 256 * ks, 64);
    _tile_loadd(4, k0 + 64 * ks, kb);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(5, k0 + 16 * kb + 64 * ks, kb);
    _tile_dpbf16ps(1, 5, 6);
    _tile_loadd(4, k0 + 32 * kb + 64 * ks, kb);
    _tile_dpbf16ps(2, 4, 6);
    _tile_loadd(5, k0 + 48 * kb + 64 * ks, kb);
    _tile_dpbf16ps(3, 5, 6);
  }
  _tile_stored(0, s, 64);
  _tile_stored(1, s + 256, 64);
  _tile_stored(2, s + 512, 64);
  _tile_stored(3, s + 768, 64);
}

SA_AMX inline void sample_tile1(const std::uint16_t* k, std::int64_t kb, const std::uint32_t* qp, int steps, float* s) {
  _tile_zero(0);
  for (int ks = 0; ks < steps; ++ks) {
    _tile_loadd(6, qp + 256 * ks, 64);
    _tile_loadd(4, reinterpret_cast<const char*>(k) + 64 * ks, kb);
    _tile_dpbf16ps(0, 4, 6);
  }
  _tile_stored(0, s, 64);
}

// Stage 1 (SampleTile) from bf16 pairs: tile products for the scores of the 16 rows against keys [0, end),
// then the AVX-512 set's softmax and column sums.
SA_AMX void sample_rows_amx(const SampleTile& t) {
  if (!fits_tiles(t.dim_pairs)) {
    g_bf16->sample_rows_bf16(t);
    return;
  }
  const int steps = t.dim_pairs / 16;
  const std::int64_t kb = t.k16_ld * 2, full = t.end / 16 * 16;
  _tile_loadconfig(&kConfig);
  std::int64_t j = 0;
  for (; j + 64 <= full; j += 64) sample_tiles4(t.k16 + j * t.k16_ld, kb, t.qp, steps, t.s + j * kLanes);
  for (; j < full; j += 16) sample_tile1(t.k16 + j * t.k16_ld, kb, t.qp, steps, t.s + j * kLanes);
  if (j < t.end) {  // the last keys, fewer than 16: zero-padded copies in and out
    alignas(64) std::uint16_t rows[16 * 2 * kMaxPairs] = {};
    alignas(64) float s[16 * kLanes];
    const int n = static_cast<int>(t.end - j), width = 2 * t.dim_pairs;
    for (int r = 0; r < n; ++r)
      std::memcpy(rows + r * width, t.k16 + (j + r) * t.k16_ld, static_cast<std::size_t>(width) * 2);
    sample_tile1(rows, static_cast<std::int64_t>(width) * 2, t.qp, steps, s);
    std::memcpy(t.s + j * kLanes, s, static_cast<std::size_t>(n) * kLanes * sizeof(float));
  }
  _tile_release();
  scale_scores(t.s, t.end * kLanes, t.q_scale);
  avx512_sample_rows_from_scores(t);
}

#undef SA_AMX

// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (bit 24); palette 1 (leaf 0x1D) with 8 tiles of 16 rows
// of 64 bytes; XCR0 with the tile state (bits 17, 18); and the kernel's grant of that state to this process.
bool amx_usable() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  if ((d & (1u << 22)) == 0 || (d & (1u << 24)) == 0) return false;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & (1u << 27)) == 0) return false;  // OSXSAVE
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return false;
  if (__get_cpuid_count(0x1d, 1, &a, &b, &c, &d) == 0) return false;
  if ((b & 0xffffu) < 64 || (b >> 16) < 8 || (c & 0xffffu) < 16) return false;
  return amx::request_tile_state();
}

}  // namespace

const Kernels* amx_kernels() {
  static const Kernels* const set = []() -> const Kernels* {
    const Kernels* base = avx512_bf16_kernels();
    if (base == nullptr || !amx_usable()) return nullptr;
    g_bf16 = base;
    static const Kernels k{"amx",      base->convert_row, base->store_row, base->attend_chunk, base->sample_rows,
                           attend_chunk_amx, sample_rows_amx,  kAmxTileRows,     wants_v_pairs};
    return &k;
  }();
  return set;
}

#else

const Kernels* amx_kernels() { return nullptr; }

#endif

}  // namespace sampleattn::cpu::fast
