// Inner kernels of the fast CPU backend (fast.h): row conversion, one key chunk of flash attention, and one
// tile of stage-1 sampled rows. Implementations with the same contract: AVX-512 (F, DQ, BW, VL;
// fast_kernels_avx512.cpp), the same plus AVX512_BF16 dot products for bf16 data
// (fast_kernels_avx512_bf16.cpp), the same with AMX tile products (fast_kernels_amx.cpp), AVX2+FMA+F16C
// (fast_kernels_avx2.cpp), all compiled with per-function target attributes, and portable C++
// (fast_kernels_portable.cpp); kernels() picks one at run time.
//
// Layouts. Scores are kept transposed, S^T (keys, query rows), so that a vector holds 8 (AVX2) or 16 (AVX-512)
// query rows of one key: the row max and sum of the online softmax are then vertical (element-wise)
// operations, and Q K^T needs K in its natural (key, d) layout, broadcast one element (or bf16 pair) at a time.
// Q is stored transposed once per tile. All scores are in log2 units: Q is pre-multiplied by scale * log2(e)
// (the bf16 path multiplies the scores instead) and exp2 replaces exp.
#pragma once

#include <cstdint>

#include "sampleattn/tensor.h"

namespace sampleattn::cpu::fast {

inline constexpr int kLanes = 16;        // query rows are padded to a multiple of this (two 8-float vectors)
inline constexpr int kTileRows = 64;     // query rows per attention tile (Kernels::bf16_tile_rows may differ)
inline constexpr int kChunk = 64;        // keys per attention chunk
inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

inline std::int64_t round_up(std::int64_t x, std::int64_t m) { return (x + m - 1) / m * m; }

// One attention tile: up to kTileRows (or the set's bf16_tile_rows) consecutive query rows of one (batch,
// head). Buffers belong to the calling thread; the kernel updates o, m, l in place (online softmax).
struct QueryTile {
  int rows = 0;          // valid rows, 1..kTileRows (or bf16_tile_rows)
  int rows_padded = 0;   // rows rounded up to kLanes
  int dim = 0;           // head_dim d
  int dim_padded = 0;    // d rounded up to 8: the length of V rows and O rows
  const float* qt = nullptr;  // (d, rows_padded) Q^T * scale * log2(e); padded rows are zero
  float* o = nullptr;         // (rows_padded, dim_padded) unnormalised output (padded rows are never stored)
  float* m = nullptr;         // (rows_padded) running max of the scores, -inf before the first key
  float* l = nullptr;         // (rows_padded) running sum of exp2(score - m)
  float* s = nullptr;         // (kChunk, rows_padded) scratch: scores, then probabilities
  float* corr = nullptr;      // (rows_padded) scratch: exp2(m_old - m_new)
  // Per row (rows_padded; padded rows copy the last valid row): keys [lo, hi) are its band, keys below vis
  // are visible. Read for masked chunks only.
  const std::int32_t* lo = nullptr;
  const std::int32_t* hi = nullptr;
  const std::int32_t* vis = nullptr;
  // The bf16 path (Kernels::attend_chunk_bf16; bf16 q, k and v): Q^T unscaled as bf16 pairs, (dim_pairs,
  // rows_padded) words, word (c, i) = Q[i][2c] | Q[i][2c + 1] << 16 (zero past d and in padded rows); scores
  // are the pair dot products times q_scale (scale * log2(e)). pairs: scratch of kPairScratch(rows_padded,
  // dim_padded) words.
  const std::uint32_t* qp = nullptr;
  int dim_pairs = 0;
  float q_scale = 1.0f;
  std::uint32_t* pairs = nullptr;
};

// Words of QueryTile::pairs scratch: P as bf16 pairs of keys (kChunk / 2, rows_padded), then V as bf16 pairs
// of keys (kChunk / 2, dim_padded), then room for kChunk K rows of dim_padded bf16 values (the AMX set copies
// gathered rows there).
inline std::int64_t pair_scratch_words(int rows_padded, int dim_padded) {
  return static_cast<std::int64_t>(kChunk / 2) * (rows_padded + 2 * dim_padded);
}

// Up to kChunk keys, given by row pointers (a contiguous span or a gathered stripe list alike).
// Unmasked: every key is kept for every row of the tile. Masked: the keys are first_key, first_key + 1, ...
// and row i keeps key j iff lo[i] <= j < hi[i], or is_column[j] and j < vis[i] (SPEC step 4).
struct KeyChunk {
  int n = 0;
  const float* const* k = nullptr;  // n rows of d floats
  const float* const* v = nullptr;  // n rows of dim_padded floats
  bool masked = false;
  std::int32_t first_key = 0;
  const std::uint8_t* is_column = nullptr;  // flags by key index; null: no columns
  // The bf16 path: the same n rows as bf16 bits, 2 * dim_pairs (K) and dim_padded (V) readable per row,
  // zeros past head_dim.
  const std::uint16_t* const* k16 = nullptr;
  const std::uint16_t* const* v16 = nullptr;
  // The bf16 path, where the set asks for it (Kernels::wants_v_pairs) and the chunk's keys are consecutive
  // from an even first_key: V as pairs of keys, row jj (dim_padded words) = keys 2 jj and 2 jj + 1, word x =
  // V[.][x] | V[.][x] << 16, at least 16 rows past the chunk's last pair readable (later keys or zeros).
  const std::uint32_t* v_pairs = nullptr;
};

// Stage 1 for up to kLanes sampled rows of one (batch, head): the exact softmax of each row over its visible
// keys, summed per key column into colscore, and the part outside each row's band into outside.
struct SampleTile {
  int rows = 0;  // valid rows, 1..kLanes
  int dim = 0;
  const float* qt = nullptr;      // (d, kLanes) Q^T * scale * log2(e); padded rows zero
  std::int64_t end = 0;           // keys [0, end) are scored: the largest visible end of the rows
  const float* k = nullptr;       // K rows: key j at k + j * k_ld
  std::int64_t k_ld = 0;
  const std::int32_t* vis = nullptr;  // (kLanes) visible end per row; padded rows 0
  const std::int32_t* lo = nullptr;   // (kLanes) band [lo, hi) per row; a dense-tail row has [0, vis)
  const std::int32_t* hi = nullptr;
  // Over the valid rows: keys below out_lo or at/after out_hi are outside every band (or invisible);
  // keys in [in_lo, in_hi) are inside every band.
  std::int64_t out_lo = 0, out_hi = 0, in_lo = 0, in_hi = 0;
  float* s = nullptr;          // scratch (end, kLanes)
  double* colscore = nullptr;  // (end) += sum over rows of P[row, j]
  double* outside = nullptr;   // (end) += the same sum over rows whose band does not hold j
  // The bf16 path (Kernels::sample_rows_bf16; bf16 q and k): Q^T as bf16 pairs (dim_pairs, kLanes) as in
  // QueryTile, K rows as bf16 bits at k16 + j * k16_ld (2 * dim_pairs readable, zeros past d).
  const std::uint32_t* qp = nullptr;
  int dim_pairs = 0;
  float q_scale = 1.0f;
  const std::uint16_t* k16 = nullptr;
  std::int64_t k16_ld = 0;
};

// n elements of a row in `dtype` with element stride `stride` -> dst[0..n) as float times `scale`;
// dst[n..padded) = 0.
using ConvertRowFn = void (*)(const void* src, DType dtype, std::int64_t stride, std::int64_t n, float scale,
                              float* dst, std::int64_t padded);
// src[0..n) times `scale` -> n elements of `dtype` at dst with element stride `stride` (round to nearest even).
using StoreRowFn = void (*)(const float* src, std::int64_t n, float scale, void* dst, DType dtype,
                            std::int64_t stride);

struct Kernels {
  const char* name;
  ConvertRowFn convert_row;
  StoreRowFn store_row;
  void (*attend_chunk)(const QueryTile& tile, const KeyChunk& chunk);
  void (*sample_rows)(const SampleTile& tile);
  // Null, or attend_chunk from bf16 pairs (QueryTile::qp, KeyChunk::k16 / v16) with bf16 dot products: P is
  // rounded to bf16 for P V (as GPU kernels do), every sum stays fp32. Used when q, k, v and out are bf16.
  void (*attend_chunk_bf16)(const QueryTile& tile, const KeyChunk& chunk);
  // Null, or sample_rows from bf16 pairs (SampleTile::qp, k16): the same fp32 softmax and sums, scores from
  // exact bf16 products. Used when q and k are bf16.
  void (*sample_rows_bf16)(const SampleTile& tile);
  // Query rows per attention tile when attend_chunk_bf16 runs (a multiple of kLanes).
  int bf16_tile_rows = kTileRows;
  // Null, or whether attend_chunk_bf16 reads KeyChunk::v_pairs for this head_dim (the caller then builds
  // them once per KV head).
  bool (*wants_v_pairs)(int head_dim) = nullptr;
};

const Kernels& portable_kernels();
// The AVX2 set, or null where the CPU lacks AVX2, FMA or F16C (or the compiler cannot target them).
const Kernels* avx2_kernels();
// The AVX-512 set (its row conversion and stores are the AVX2 set's), or null where the CPU lacks AVX-512 F,
// DQ, BW or VL, or the AVX2 set.
const Kernels* avx512_kernels();
// The AVX-512 sets' masking and online-softmax step over the fp32 scores in tile.s (fast_kernels_avx512.cpp;
// call only where avx512_kernels() is not null).
void avx512_softmax_step(const QueryTile& tile, const KeyChunk& chunk);
// The AVX-512 sets' stage 1 after the scores: tile.s holds the (end, kLanes) scores in log2 units.
void avx512_sample_rows_from_scores(const SampleTile& tile);
// The AVX-512 set plus attend_chunk_bf16 (AVX512_BF16 dot products), or null where the CPU lacks AVX512_BF16.
const Kernels* avx512_bf16_kernels();
// The bf16 set with AMX tile products (AMX-TILE and AMX-BF16, fast_kernels_amx.cpp) for its bf16 attention
// chunks and stage-1 scores where head_dim rounded up to even is a multiple of 32 (up to 256; other head dims
// run the bf16 set's code), or null where the CPU or the OS (Linux grants the tile state per process) does
// not offer AMX.
const Kernels* amx_kernels();
// Whether the automatic choice takes the bf16 set where it exists: on AMD CPUs only. Zen 5 runs vdpbf16ps
// zmm at two per cycle, as its FMAs (the set was 1.77x faster than the AVX-512 set here); the Intel Xeon of
// the device machine runs it at one per cycle against two FMAs, and the set was 1.56x slower there.
bool bf16_dot_preferred();
// The set the backend uses: the one force_kernels() named; else the one SAMPLEATTN_CPU_KERNELS names
// (amx, avx512bf16, avx512, avx2 or portable), or the next narrower one the CPU has; else (unset) the widest
// the CPU has, with the bf16 set only where bf16_dot_preferred(). Throws sampleattn::Error on any other value.
const Kernels& kernels();
// Tests: makes the set called `name` ("amx", "avx512bf16", "avx512", "avx2", "portable") the one kernels() returns,
// or (nullptr) goes back to the automatic choice. False, changing nothing, where that set is not available.
// A call already running keeps the set it read at its start.
bool force_kernels(const char* name);

}  // namespace sampleattn::cpu::fast
