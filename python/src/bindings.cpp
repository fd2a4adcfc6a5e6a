// nanobind extension sampleattn._sampleattn: the public C++ API (include/sampleattn/api.h) for Python.
//
// Any DLPack tensor (NumPy, PyTorch CPU/CUDA, CuPy, ...) becomes a sampleattn::TensorView with zero copy:
// the data pointer, dtype, device and the four sizes and element strides are read off the DLPack header,
// so [batch, heads, seq, dim] buffers and slices of fused projections pass as they are. Outputs are
// allocated by the Python layer (sampleattn/_api.py) in the caller's framework and handed in here; this
// file never allocates tensor memory. sampleattn::Error becomes sampleattn.Error, a ValueError subclass;
// a non-tensor or an unsupported dtype is a TypeError. The GIL is released while the library computes.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "sampleattn/api.h"
#ifdef SAMPLEATTN_WITH_CUDA
#include "sampleattn/cuda.h"
#endif
#include "sampleattn/error.h"

namespace nb = nanobind;

namespace {

using sampleattn::Backend;
using sampleattn::DType;
using sampleattn::Selection;
using sampleattn::TensorView;

// Inputs may be read-only (a NumPy view, say); outputs must be writable.
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

std::string dtype_name(nb::dlpack::dtype t) {
  switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
    case nb::dlpack::dtype_code::Int: return cat("int", int(t.bits));
    case nb::dlpack::dtype_code::UInt: return cat("uint", int(t.bits));
    case nb::dlpack::dtype_code::Float: return cat("float", int(t.bits));
    case nb::dlpack::dtype_code::Bfloat: return cat("bfloat", int(t.bits));
    case nb::dlpack::dtype_code::Bool: return "bool";
    case nb::dlpack::dtype_code::Complex: return cat("complex", int(t.bits));
    default: return cat("dlpack code ", int(t.code), " bits ", int(t.bits));
  }
}

DType to_dtype(nb::dlpack::dtype t, const char* name) {
  const auto code = static_cast<nb::dlpack::dtype_code>(t.code);
  if (t.lanes == 1) {
    if (code == nb::dlpack::dtype_code::Float && t.bits == 32) return DType::f32;
    if (code == nb::dlpack::dtype_code::Float && t.bits == 16) return DType::f16;
    if (code == nb::dlpack::dtype_code::Bfloat && t.bits == 16) return DType::bf16;
  }
  throw nb::type_error(
      cat(name, ".dtype (", dtype_name(t), ") is not supported: use float32, float16 or bfloat16").c_str());
}

// Reads a 4-d DLPack tensor [batch, seq, heads, head_dim] into a view: no copy, strides kept.
template <typename Array>
TensorView to_view(const Array& a, const char* name) {
  if (a.ndim() != 4) {
    throw nb::value_error(
        cat(name, " must have 4 dimensions [batch, seq, heads, head_dim], but it has ", a.ndim()).c_str());
  }
  TensorView v;
  v.data = const_cast<void*>(static_cast<const void*>(a.data()));
  v.dtype = to_dtype(a.dtype(), name);
  const int dev = a.device_type();
  if (dev == nb::device::cpu::value || dev == nb::device::cuda_host::value) {
    v.device = sampleattn::Device::cpu;
  } else if (dev == nb::device::cuda::value) {
    v.device = sampleattn::Device::cuda;
  } else {
    throw nb::value_error(cat(name, " lives on DLPack device type ", dev,
                              ", which sampleattn does not support (only CPU and CUDA)").c_str());
  }
  v.device_index = a.device_id();
  for (std::size_t i = 0; i < 4; ++i) {
    v.shape[i] = static_cast<std::int64_t>(a.shape(i));
    v.stride[i] = a.stride(i);
  }
  return v;
}

// The optional log-sum-exp output: float32, contiguous [batch, q_heads, seq_q], on q's device.
float* lse_pointer(const std::optional<OutArray>& lse, const TensorView& q) {
  if (!lse) return nullptr;
  const OutArray& a = *lse;
  const std::int64_t want[3] = {q.batch(), q.heads(), q.seq()};
  bool ok = a.ndim() == 3 && a.dtype() == nb::dtype<float>();
  for (std::size_t i = 0; ok && i < 3; ++i) ok = static_cast<std::int64_t>(a.shape(i)) == want[i];
  if (ok && a.size() > 0) ok = a.stride(2) == 1 && a.stride(1) == want[2] && a.stride(0) == want[1] * want[2];
  if (!ok) {
    throw nb::value_error(cat("lse must be a contiguous float32 [batch, q_heads, seq_q] = [", want[0], ", ",
                              want[1], ", ", want[2], "] tensor").c_str());
  }
  const bool on_cuda = a.device_type() == nb::device::cuda::value;
  if (on_cuda != (q.device == sampleattn::Device::cuda) || (on_cuda && a.device_id() != q.device_index)) {
    throw nb::value_error("lse must be on q's device");
  }
  return static_cast<float*>(a.data());
}

// The views of one attention call's tensors and its optional lse output.
struct CallViews {
  TensorView q, k, v, out;
  float* lse;
};

CallViews call_views(const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
                     const std::optional<OutArray>& lse) {
  CallViews c{to_view(q, "q"), to_view(k, "k"), to_view(v, "v"), to_view(out, "out"), nullptr};
  c.lse = lse_pointer(lse, c.q);
  return c;
}

Backend to_backend(const std::string& name) {
  if (name == "auto" || name == "automatic") return Backend::automatic;
  if (name == "cpu") return Backend::cpu;
  if (name == "cpu_reference") return Backend::cpu_reference;
  if (name == "cuda") return Backend::cuda;
  throw nb::value_error(
      cat("backend (\"", name, "\") must be one of \"auto\", \"cpu\", \"cpu_reference\", \"cuda\"").c_str());
}

sampleattn::ExecOptions exec_options(const std::string& backend, int num_threads, std::uintptr_t stream) {
  sampleattn::ExecOptions o;
  o.backend = to_backend(backend);
  o.num_threads = num_threads;
  o.cuda_stream = reinterpret_cast<void*>(stream);
  return o;
}

sampleattn::AttnParams attn_params(bool causal, std::optional<float> scale) {
  sampleattn::AttnParams p;
  p.causal = causal;
  p.scale = scale;
  return p;
}

sampleattn::SampleConfig sample_config(double alpha, double sample_ratio, double window_ratio,
                                       std::int64_t min_window, std::int64_t sink_tokens,
                                       std::int64_t dense_tail, double dense_head_density) {
  sampleattn::SampleConfig c;
  c.alpha = alpha;
  c.sample_ratio = sample_ratio;
  c.window_ratio = window_ratio;
  c.min_window = min_window;
  c.sink_tokens = sink_tokens;
  c.dense_tail = dense_tail;
  c.dense_head_density = dense_head_density;
  return c;
}

// A NumPy array that owns a copy of `values` (for per-head stats, computed on request).
template <typename T>
nb::ndarray<nb::numpy, T> owned_array(std::vector<T> values, std::initializer_list<std::size_t> shape) {
  auto* held = new std::vector<T>(std::move(values));
  nb::capsule owner(held, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(held->data(), shape, owner);
}

// A read-only NumPy view of a Selection's array; the Python Selection object stays alive while it exists.
template <typename T>
nb::ndarray<nb::numpy, const T> selection_view(const Selection& s, const std::vector<T>& values,
                                               std::initializer_list<std::size_t> shape) {
  return nb::ndarray<nb::numpy, const T>(values.data(), shape, nb::find(&s));
}

template <typename T, typename Field>
nb::ndarray<nb::numpy, T> head_stat(const Selection& s, Field field) {
  std::vector<T> out;
  out.reserve(s.stats.size());
  for (const auto& st : s.stats) out.push_back(static_cast<T>(st.*field));
  if (out.size() != static_cast<std::size_t>(s.batch * s.heads)) {
    throw nb::value_error("selection has no per-head stats (call recompute_counts())");
  }
  return owned_array<T>(std::move(out), {static_cast<std::size_t>(s.batch), static_cast<std::size_t>(s.heads)});
}

using IndexArray64 = nb::ndarray<const std::int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using IndexArray32 = nb::ndarray<const std::int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

Selection make_selection(std::int64_t batch, std::int64_t heads, std::int64_t seq_q, std::int64_t seq_k,
                         IndexArray64 window, IndexArray64 offsets, IndexArray32 indices, bool causal,
                         std::int64_t dense_tail) {
  Selection s;
  s.batch = batch;
  s.heads = heads;
  s.seq_q = seq_q;
  s.seq_k = seq_k;
  s.causal = causal;
  s.dense_tail = dense_tail;
  s.window.assign(window.data(), window.data() + window.shape(0));
  s.offsets.assign(offsets.data(), offsets.data() + offsets.shape(0));
  s.indices.assign(indices.data(), indices.data() + indices.shape(0));
  s.validate();
  s.recompute_counts();
  for (auto& st : s.stats) st.sampled_coverage = 0.0;  // unknown for a hand-made selection
  return s;
}

std::string selection_repr(const Selection& s) {
  std::ostringstream os;
  os << "Selection(batch=" << s.batch << ", heads=" << s.heads << ", seq_q=" << s.seq_q << ", seq_k=" << s.seq_k
     << ", causal=" << (s.causal ? "True" : "False") << ", columns=" << s.indices.size();
  if (!s.stats.empty()) os << ", density=" << s.density() << ", min_sampled_coverage=" << s.min_sampled_coverage();
  os << ")";
  return os.str();
}

void bind_selection(nb::module_& m) {
  using sampleattn::HeadStats;
  // Arrays come back as NumPy arrays that own a copy (stats) or view the Selection (window, offsets,
  // indices, columns), which they keep alive; `automatic` leaves the owner they carry in place.
  constexpr auto kOwned = nb::rv_policy::automatic;
  nb::class_<Selection>(m, "Selection",
                        "What SampleAttention keeps per (batch, query head): the local window and the sorted kept "
                        "key columns (CSR: offsets + indices), with per-head stats.")
      .def(nb::new_(&make_selection), nb::arg("batch"), nb::arg("heads"), nb::arg("seq_q"), nb::arg("seq_k"),
           nb::arg("window"), nb::arg("offsets"), nb::arg("indices"), nb::arg("causal") = true,
           nb::arg("dense_tail") = 0,
           "Builds a selection from arrays: window int64 [batch*heads], offsets int64 [batch*heads+1], indices "
           "int32 (sorted, unique per head). Validated; counts are recomputed.")
      .def_ro("batch", &Selection::batch)
      .def_ro("heads", &Selection::heads)
      .def_ro("seq_q", &Selection::seq_q)
      .def_ro("seq_k", &Selection::seq_k)
      .def_ro("causal", &Selection::causal)
      .def_ro("dense_tail", &Selection::dense_tail)
      .def_prop_ro(
          "window",
          [](const Selection& s) {
            return selection_view(s, s.window, {static_cast<std::size_t>(s.batch), static_cast<std::size_t>(s.heads)});
          },
          kOwned, "Local window w per head, [batch, heads].")
      .def_prop_ro(
          "offsets", [](const Selection& s) { return selection_view(s, s.offsets, {s.offsets.size()}); }, kOwned,
          "CSR offsets into indices, [batch * heads + 1].")
      .def_prop_ro(
          "indices", [](const Selection& s) { return selection_view(s, s.indices, {s.indices.size()}); }, kOwned,
          "Kept key columns of every head, concatenated (int32).")
      .def(
          "columns",
          [](const Selection& s, std::int64_t b, std::int64_t h) {
            if (b < 0 || b >= s.batch || h < 0 || h >= s.heads) {
              throw nb::index_error(cat("columns(", b, ", ", h, "): batch must be in [0, ", s.batch,
                                        ") and head in [0, ", s.heads, ")").c_str());
            }
            const std::int64_t i = b * s.heads + h;
            const auto n = static_cast<std::size_t>(s.offsets[i + 1] - s.offsets[i]);
            return nb::ndarray<nb::numpy, const std::int32_t>(s.indices.data() + s.offsets[i], {n}, nb::find(&s));
          },
          nb::arg("batch"), nb::arg("head"), kOwned, "The kept key columns of one (batch, query head), sorted.")
      .def_prop_ro(
          "kept_columns", [](const Selection& s) { return head_stat<std::int64_t>(s, &HeadStats::kept_columns); },
          kOwned, "Selected columns |I| per head, [batch, heads].")
      .def_prop_ro(
          "kept_entries", [](const Selection& s) { return head_stat<std::int64_t>(s, &HeadStats::kept_entries); },
          kOwned, "Entries of the mask per head (band, stripes and tail, each once), [batch, heads].")
      .def_prop_ro(
          "visible_entries",
          [](const Selection& s) { return head_stat<std::int64_t>(s, &HeadStats::visible_entries); }, kOwned,
          "Entries dense attention computes per head, [batch, heads].")
      .def_prop_ro(
          "head_density", [](const Selection& s) { return head_stat<double>(s, &HeadStats::density); }, kOwned,
          "Kept entries / visible entries per head, [batch, heads].")
      .def_prop_ro(
          "sampled_coverage", [](const Selection& s) { return head_stat<double>(s, &HeadStats::sampled_coverage); },
          kOwned, "Fraction of the sampled rows' attention mass that the mask keeps, per head, [batch, heads].")
      .def_prop_ro("density", &Selection::density, "Kept entries / visible entries, all heads together.")
      .def_prop_ro("min_sampled_coverage", &Selection::min_sampled_coverage)
      .def("validate", &Selection::validate)
      .def("__repr__", &selection_repr);
}

}  // namespace

NB_MODULE(_sampleattn, m) {
  m.doc() = "sampleattn C++ core (nanobind). Use the functions of the sampleattn package, not these.";
  nb::exception<sampleattn::Error>(m, "Error", PyExc_ValueError);
  bind_selection(m);

#ifdef SAMPLEATTN_WITH_CUDA
  m.attr("built_with_cuda") = true;
  // The no-allocation, no-synchronisation CUDA path (include/sampleattn/cuda.h): the Python layer allocates
  // the workspace in the caller's framework (its caching allocator, on its stream) and calls this whenever
  // no Selection has to come back to the host.
  m.def(
      "cuda_workspace_size",
      [](const InArray& q, const InArray& k, bool causal, std::optional<float> scale, double alpha,
         double sample_ratio, double window_ratio, std::int64_t min_window, std::int64_t sink_tokens,
         std::int64_t dense_tail, double dense_head_density) {
        return sampleattn::cuda::sample_attention_workspace_size(
            to_view(q, "q"), to_view(k, "k"), attn_params(causal, scale),
            sample_config(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density));
      },
      nb::arg("q"), nb::arg("k"), nb::arg("causal"), nb::arg("scale").none(), nb::arg("alpha"),
      nb::arg("sample_ratio"), nb::arg("window_ratio"), nb::arg("min_window"), nb::arg("sink_tokens"),
      nb::arg("dense_tail"), nb::arg("dense_head_density"));
  m.def(
      "cuda_sample_attention",
      [](const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
         const std::optional<OutArray>& lse, bool causal, std::optional<float> scale, double alpha,
         double sample_ratio, double window_ratio, std::int64_t min_window, std::int64_t sink_tokens,
         std::int64_t dense_tail, double dense_head_density, const OutArray& workspace, std::uintptr_t stream) {
        const auto [qv, kv, vv, ov, lp] = call_views(q, k, v, out, lse);
        SA_CHECK(workspace.device_type() == nb::device::cuda::value && workspace.device_id() == qv.device_index,
                 "workspace must be a CUDA buffer on q's device");
        const auto params = attn_params(causal, scale);
        const auto config =
            sample_config(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density);
        nb::gil_scoped_release unlocked;
        sampleattn::cuda::sample_attention(qv, kv, vv, ov, lp, params, config, workspace.data(), workspace.nbytes(),
                                           reinterpret_cast<void*>(stream));
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse").none(), nb::arg("causal"),
      nb::arg("scale").none(), nb::arg("alpha"), nb::arg("sample_ratio"), nb::arg("window_ratio"),
      nb::arg("min_window"), nb::arg("sink_tokens"), nb::arg("dense_tail"), nb::arg("dense_head_density"),
      nb::arg("workspace"), nb::arg("stream"));
  m.def(
      "cuda_varlen_workspace_size",
      [](const InArray& q, const InArray& k, const std::vector<std::int64_t>& cu_seqlens_q,
         const std::vector<std::int64_t>& cu_seqlens_k, bool causal, std::optional<float> scale, double alpha,
         double sample_ratio, double window_ratio, std::int64_t min_window, std::int64_t sink_tokens,
         std::int64_t dense_tail, double dense_head_density) {
        return sampleattn::cuda::sample_attention_varlen_workspace_size(
            to_view(q, "q"), to_view(k, "k"), cu_seqlens_q, cu_seqlens_k, attn_params(causal, scale),
            sample_config(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density));
      },
      nb::arg("q"), nb::arg("k"), nb::arg("cu_seqlens_q"), nb::arg("cu_seqlens_k"), nb::arg("causal"),
      nb::arg("scale").none(), nb::arg("alpha"), nb::arg("sample_ratio"), nb::arg("window_ratio"),
      nb::arg("min_window"), nb::arg("sink_tokens"), nb::arg("dense_tail"), nb::arg("dense_head_density"));
  m.def(
      "cuda_sample_attention_varlen",
      [](const InArray& q, const InArray& k, const InArray& v, const std::vector<std::int64_t>& cu_seqlens_q,
         const std::vector<std::int64_t>& cu_seqlens_k, const OutArray& out, const std::optional<OutArray>& lse,
         bool causal, std::optional<float> scale, double alpha, double sample_ratio, double window_ratio,
         std::int64_t min_window, std::int64_t sink_tokens, std::int64_t dense_tail, double dense_head_density,
         const OutArray& workspace, std::uintptr_t stream) {
        const auto [qv, kv, vv, ov, lp] = call_views(q, k, v, out, lse);
        SA_CHECK(workspace.device_type() == nb::device::cuda::value && workspace.device_id() == qv.device_index,
                 "workspace must be a CUDA buffer on q's device");
        const auto params = attn_params(causal, scale);
        const auto config =
            sample_config(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density);
        nb::gil_scoped_release unlocked;
        sampleattn::cuda::sample_attention_varlen(qv, kv, vv, cu_seqlens_q, cu_seqlens_k, ov, lp, params, config,
                                                  workspace.data(), workspace.nbytes(),
                                                  reinterpret_cast<void*>(stream));
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("cu_seqlens_q"), nb::arg("cu_seqlens_k"), nb::arg("out"),
      nb::arg("lse").none(), nb::arg("causal"), nb::arg("scale").none(), nb::arg("alpha"), nb::arg("sample_ratio"),
      nb::arg("window_ratio"), nb::arg("min_window"), nb::arg("sink_tokens"), nb::arg("dense_tail"),
      nb::arg("dense_head_density"), nb::arg("workspace"), nb::arg("stream"));
#else
  m.attr("built_with_cuda") = false;
#endif

  m.def(
      "sample_attention",
      [](const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
         const std::optional<OutArray>& lse, bool causal, std::optional<float> scale, double alpha,
         double sample_ratio, double window_ratio, std::int64_t min_window, std::int64_t sink_tokens,
         std::int64_t dense_tail, double dense_head_density, const std::string& backend, int num_threads,
         std::uintptr_t stream) {
        const auto [qv, kv, vv, ov, lp] = call_views(q, k, v, out, lse);
        const auto params = attn_params(causal, scale);
        const auto config =
            sample_config(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density);
        const auto options = exec_options(backend, num_threads, stream);
        nb::gil_scoped_release unlocked;
        return sampleattn::sample_attention(qv, kv, vv, ov, lp, params, config, options);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse").none(), nb::arg("causal"),
      nb::arg("scale").none(), nb::arg("alpha"), nb::arg("sample_ratio"), nb::arg("window_ratio"),
      nb::arg("min_window"), nb::arg("sink_tokens"), nb::arg("dense_tail"), nb::arg("dense_head_density"),
      nb::arg("backend"), nb::arg("num_threads"), nb::arg("stream"));

  m.def(
      "select",
      [](const InArray& q, const InArray& k, bool causal, std::optional<float> scale, double alpha,
         double sample_ratio, double window_ratio, std::int64_t min_window, std::int64_t sink_tokens,
         std::int64_t dense_tail, double dense_head_density, const std::string& backend, int num_threads,
         std::uintptr_t stream) {
        const TensorView qv = to_view(q, "q"), kv = to_view(k, "k");
        const auto params = attn_params(causal, scale);
        const auto config =
            sample_config(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density);
        const auto options = exec_options(backend, num_threads, stream);
        nb::gil_scoped_release unlocked;
        return sampleattn::select(qv, kv, params, config, options);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("causal"), nb::arg("scale").none(), nb::arg("alpha"),
      nb::arg("sample_ratio"), nb::arg("window_ratio"), nb::arg("min_window"), nb::arg("sink_tokens"),
      nb::arg("dense_tail"), nb::arg("dense_head_density"), nb::arg("backend"), nb::arg("num_threads"),
      nb::arg("stream"));

  m.def(
      "attend",
      [](const InArray& q, const InArray& k, const InArray& v, const Selection& selection, const OutArray& out,
         const std::optional<OutArray>& lse, bool causal, std::optional<float> scale, const std::string& backend,
         int num_threads, std::uintptr_t stream) {
        const auto [qv, kv, vv, ov, lp] = call_views(q, k, v, out, lse);
        const auto params = attn_params(causal, scale);
        const auto options = exec_options(backend, num_threads, stream);
        nb::gil_scoped_release unlocked;
        sampleattn::attend(qv, kv, vv, selection, ov, lp, params, options);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("selection"), nb::arg("out"), nb::arg("lse").none(),
      nb::arg("causal"), nb::arg("scale").none(), nb::arg("backend"), nb::arg("num_threads"), nb::arg("stream"));

  m.def(
      "window_attention",
      [](const InArray& q, const InArray& k, const InArray& v, std::int64_t window, const OutArray& out,
         const std::optional<OutArray>& lse, bool causal, std::optional<float> scale, const std::string& backend,
         int num_threads, std::uintptr_t stream) {
        const auto [qv, kv, vv, ov, lp] = call_views(q, k, v, out, lse);
        const auto params = attn_params(causal, scale);
        const auto options = exec_options(backend, num_threads, stream);
        nb::gil_scoped_release unlocked;
        sampleattn::window_attention(qv, kv, vv, window, ov, lp, params, options);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("window"), nb::arg("out"), nb::arg("lse").none(),
      nb::arg("causal"), nb::arg("scale").none(), nb::arg("backend"), nb::arg("num_threads"), nb::arg("stream"));

  m.def(
      "dense_attention",
      [](const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
         const std::optional<OutArray>& lse, bool causal, std::optional<float> scale, const std::string& backend,
         int num_threads, std::uintptr_t stream) {
        const auto [qv, kv, vv, ov, lp] = call_views(q, k, v, out, lse);
        const auto params = attn_params(causal, scale);
        const auto options = exec_options(backend, num_threads, stream);
        nb::gil_scoped_release unlocked;
        sampleattn::dense_attention(qv, kv, vv, ov, lp, params, options);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse").none(), nb::arg("causal"),
      nb::arg("scale").none(), nb::arg("backend"), nb::arg("num_threads"), nb::arg("stream"));

  // Packed variable-length batches (api.h): lse, when given, is a contiguous float32 [1, q_heads, total_q]
  // buffer that receives the per-sequence [q_heads, q_len] blocks (the Python layer rearranges them).
  m.def(
      "sample_attention_varlen",
      [](const InArray& q, const InArray& k, const InArray& v, const std::vector<std::int64_t>& cu_seqlens_q,
         const std::vector<std::int64_t>& cu_seqlens_k, const OutArray& out, const std::optional<OutArray>& lse,
         bool causal, std::optional<float> scale, double alpha, double sample_ratio, double window_ratio,
         std::int64_t min_window, std::int64_t sink_tokens, std::int64_t dense_tail, double dense_head_density,
         const std::string& backend, int num_threads, std::uintptr_t stream) {
        const auto [qv, kv, vv, ov, lp] = call_views(q, k, v, out, lse);
        const auto params = attn_params(causal, scale);
        const auto config =
            sample_config(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density);
        const auto options = exec_options(backend, num_threads, stream);
        nb::gil_scoped_release unlocked;
        return sampleattn::sample_attention_varlen(qv, kv, vv, cu_seqlens_q, cu_seqlens_k, ov, lp, params, config,
                                                   options);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("cu_seqlens_q"), nb::arg("cu_seqlens_k"), nb::arg("out"),
      nb::arg("lse").none(), nb::arg("causal"), nb::arg("scale").none(), nb::arg("alpha"), nb::arg("sample_ratio"),
      nb::arg("window_ratio"), nb::arg("min_window"), nb::arg("sink_tokens"), nb::arg("dense_tail"),
      nb::arg("dense_head_density"), nb::arg("backend"), nb::arg("num_threads"), nb::arg("stream"));

  m.def(
      "dense_attention_varlen",
      [](const InArray& q, const InArray& k, const InArray& v, const std::vector<std::int64_t>& cu_seqlens_q,
         const std::vector<std::int64_t>& cu_seqlens_k, const OutArray& out, const std::optional<OutArray>& lse,
         bool causal, std::optional<float> scale, const std::string& backend, int num_threads, std::uintptr_t stream) {
        const auto [qv, kv, vv, ov, lp] = call_views(q, k, v, out, lse);
        const auto params = attn_params(causal, scale);
        const auto options = exec_options(backend, num_threads, stream);
        nb::gil_scoped_release unlocked;
        sampleattn::dense_attention_varlen(qv, kv, vv, cu_seqlens_q, cu_seqlens_k, ov, lp, params, options);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("cu_seqlens_q"), nb::arg("cu_seqlens_k"), nb::arg("out"),
      nb::arg("lse").none(), nb::arg("causal"), nb::arg("scale").none(), nb::arg("backend"), nb::arg("num_threads"),
      nb::arg("stream"));

  m.def(
      "exact_metrics",
      [](const InArray& q, const InArray& k, const InArray& v, const Selection& selection,
         const std::vector<std::int64_t>& rows, bool causal, std::optional<float> scale) {
        const TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
        const auto params = attn_params(causal, scale);
        std::vector<sampleattn::HeadMetrics> metrics;
        {
          nb::gil_scoped_release unlocked;
          metrics = sampleattn::exact_metrics(qv, kv, vv, selection, rows, params);
        }
        std::vector<std::int64_t> n;
        std::vector<double> min_mass, mean_mass, rel_error;
        for (const auto& h : metrics) {
          n.push_back(h.rows);
          min_mass.push_back(h.min_kept_mass);
          mean_mass.push_back(h.mean_kept_mass);
          rel_error.push_back(h.rel_error);
        }
        const auto b = static_cast<std::size_t>(selection.batch), hq = static_cast<std::size_t>(selection.heads);
        nb::dict d;
        d["rows"] = owned_array<std::int64_t>(std::move(n), {b, hq});
        d["min_kept_mass"] = owned_array<double>(std::move(min_mass), {b, hq});
        d["mean_kept_mass"] = owned_array<double>(std::move(mean_mass), {b, hq});
        d["rel_error"] = owned_array<double>(std::move(rel_error), {b, hq});
        return d;
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("selection"), nb::arg("rows"), nb::arg("causal"),
      nb::arg("scale").none());

  m.def("metric_rows", &sampleattn::metric_rows, nb::arg("seq_q"), nb::arg("n"));
}
