// CUDA backend entry points (backend.h) behind the public API: validation of what only this backend limits,
// workspace allocation with cudaMallocAsync on the caller's stream (the no-allocation path is
// include/sampleattn/cuda.h), and the upload of host selections for attend().
#include "cuda/backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/attention.h"
#include "cuda/attention_sm80_shape.h"
#include "cuda/check.h"
#include "cuda/fill.h"
#include "cuda/workspace.h"
#include "sampleattn/error.h"

namespace sampleattn::cuda {
namespace {

// Device memory from the stream-ordered allocator, freed on the same stream when the owner goes away
// (also when an exception unwinds).
class StreamBuffer {
 public:
  StreamBuffer(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    SA_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes > 0 ? bytes : 1, stream));
  }
  ~StreamBuffer() { cudaFreeAsync(ptr_, stream_); }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

template <typename T>
void upload(void* dst, const std::vector<T>& src, cudaStream_t stream) {
  // Pageable source: the call returns once the data is staged, so `src` may go away afterwards.
  if (!src.empty())
    SA_CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
}

}  // namespace

bool available() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error so later calls start clean
    return false;
  }
  return n > 0;
}

namespace {

// The current device must be able to address `data`: its own device or managed memory, or registered host
// memory (a plain host pointer labelled Device::cuda would fault inside a kernel and poison the context).
void check_addressable(const void* data, const char* name, int device) {
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, data);
  if (err != cudaSuccess) {
    cudaGetLastError();
    detail::fail(name, " (", data, "): cudaPointerGetAttributes failed: ", cudaGetErrorString(err));
  }
  SA_CHECK(attr.type != cudaMemoryTypeUnregistered, name, " (", data,
           ") is host memory the GPU cannot address: the CUDA backend needs device, managed or registered "
           "(cudaHostRegister / cudaMallocHost) memory");
  SA_CHECK(attr.type != cudaMemoryTypeDevice || attr.device == device, name, " (", data, ") is memory of cuda:",
           attr.device, " but the call runs on cuda:", device);
}

}  // namespace

void check_device_memory(const void* data, const char* name) {
  int device = -1;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_addressable(data, name, device);
}

void check_stream(void* stream) {
#if CUDART_VERSION >= 12080
  if (stream == nullptr) return;  // the current device's default stream
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(s, &capture), "cudaStreamIsCapturing");
  // cudaStreamGetDevice is not permitted on a capturing stream (it would invalidate the capture); the stream
  // was checked by the eager calls that come before a capture, and a foreign one fails the capture's launch.
  if (capture != cudaStreamCaptureStatusNone) return;
  int device = -1, owner = -1;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  const cudaError_t err = cudaStreamGetDevice(s, &owner);
  if (err != cudaSuccess) {
    cudaGetLastError();
    detail::fail("stream (", stream, "): cudaStreamGetDevice failed: ", cudaGetErrorString(err));
  }
  SA_CHECK(owner == device, "stream (", stream, ") belongs to cuda:", owner, " but the call runs on cuda:", device,
           " (pass a stream of cuda:", device, ")");
#else
  (void)stream;  // runtimes before 12.8 cannot tell a stream's device
#endif
}

void check_device_inputs(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView* v,
                         const TensorView* out, const float* lse) {
  const DType dtype = q.dtype;
  SA_CHECK(dtype == DType::bf16 || dtype == DType::f16, "q.dtype (", to_string(dtype),
           ") is not supported by the CUDA backend (bfloat16 or float16)");
  SA_CHECK(sm80::supported_head_dim(p.head_dim), "q.head_dim (", p.head_dim,
           ") is not supported by the CUDA backend (64, 96, 128 or 256)");
  int device = -1;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  SA_CHECK(device == q.device_index, "q is on cuda:", q.device_index, " but the current device is cuda:", device,
           " (make q's device current first)");
  check_attention_supported(dtype, p.head_dim);
  if (out != nullptr) {
    SA_CHECK(out->dtype == dtype, "out.dtype (", to_string(out->dtype), ") must equal q.dtype (", to_string(dtype),
             ") on the CUDA backend");
    if (v != nullptr) check_attention_params(attention_params(p, q, k, *v, *out, nullptr));
  }
  check_addressable(q.data, "q.data", device);
  check_addressable(k.data, "k.data", device);
  if (v != nullptr) check_addressable(v->data, "v.data", device);
  if (out != nullptr) check_addressable(out->data, "out.data", device);
  if (lse != nullptr) check_addressable(lse, "lse", device);
}

Selection select(const core::Problem& p, const TensorView& q, const TensorView& k, const SampleConfig& config,
                 void* stream) {
  const SelectPlan plan = make_plan(p, config);
  const WorkspaceLayout layout = workspace_layout(plan);
  StreamBuffer buffer(layout.bytes, static_cast<cudaStream_t>(stream));
  const Workspace ws = carve_workspace(buffer.get(), layout.bytes, layout);
  run_selection(plan, q, k, ws, stream);
  return download_selection(plan, ws, stream);
}

void attend(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
            const Selection& selection, const TensorView& out, float* lse, void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const std::int64_t heads = selection.num_heads_total();
  const std::int64_t words = (p.seq_k + 31) / 32;
  std::vector<std::int32_t> window(static_cast<std::size_t>(heads)), counts(static_cast<std::size_t>(heads));
  std::vector<std::uint32_t> bitmap(static_cast<std::size_t>(heads * words), 0u);
  for (std::int64_t bh = 0; bh < heads; ++bh) {
    window[bh] = static_cast<std::int32_t>(std::min<std::int64_t>(selection.window[bh], p.seq_k));
    counts[bh] = static_cast<std::int32_t>(selection.offsets[bh + 1] - selection.offsets[bh]);
    for (std::int32_t j : selection.columns(bh)) bitmap[bh * words + j / 32] |= 1u << (j % 32);
  }
  const std::size_t n_idx = selection.indices.size();
  const std::size_t off_window = 0;
  const std::size_t off_counts = off_window + window.size() * 4;
  const std::size_t off_offsets = (off_counts + counts.size() * 4 + 7) / 8 * 8;
  const std::size_t off_bitmap = off_offsets + selection.offsets.size() * 8;
  const std::size_t off_indices = off_bitmap + bitmap.size() * 4;
  StreamBuffer buffer(off_indices + (n_idx > 0 ? n_idx : 1) * 4, s);
  auto* base = static_cast<unsigned char*>(buffer.get());
  upload(base + off_window, window, s);
  upload(base + off_counts, counts, s);
  upload(base + off_offsets, selection.offsets, s);
  upload(base + off_bitmap, bitmap, s);
  upload(base + off_indices, selection.indices, s);

  AttentionParams ap = attention_params(p, q, k, v, out, lse);
  ap.window = reinterpret_cast<const std::int32_t*>(base + off_window);
  ap.col_counts = reinterpret_cast<const std::int32_t*>(base + off_counts);
  ap.col_offsets = reinterpret_cast<const std::int64_t*>(base + off_offsets);
  ap.col_bitmap = reinterpret_cast<const std::uint32_t*>(base + off_bitmap);
  ap.col_indices = reinterpret_cast<const std::int32_t*>(base + off_indices);
  ap.bitmap_words = words;
  ap.dense_tail = selection.dense_tail;
  ap.window_hint = heads > 0 ? *std::max_element(window.begin(), window.end()) : 0;
  run_attention(ap, stream);
}

void attend_window(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                   std::int64_t window, const TensorView& out, float* lse, void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const std::int64_t heads = p.batch * p.q_heads;
  const std::int64_t words = (p.seq_k + 31) / 32;
  // window [heads] int32, counts [heads] int32 (0), offsets [heads + 1] int64 (0), bitmap [heads, words] (0),
  // one index (never read: no head keeps a column).
  const std::size_t off_counts = static_cast<std::size_t>(heads) * 4;
  const std::size_t off_offsets = (off_counts + static_cast<std::size_t>(heads) * 4 + 7) / 8 * 8;
  const std::size_t off_bitmap = off_offsets + static_cast<std::size_t>(heads + 1) * 8;
  const std::size_t off_indices = off_bitmap + static_cast<std::size_t>(heads * words) * 4;
  StreamBuffer buffer(off_indices + 4, s);
  auto* base = static_cast<unsigned char*>(buffer.get());
  const std::int32_t w = static_cast<std::int32_t>(std::min<std::int64_t>(window, p.seq_k));
  fill_i32(reinterpret_cast<std::int32_t*>(base), heads, w, stream);
  SA_CUDA_CHECK(cudaMemsetAsync(base + off_counts, 0, off_indices + 4 - off_counts, s));

  AttentionParams ap = attention_params(p, q, k, v, out, lse);
  ap.window = reinterpret_cast<const std::int32_t*>(base);
  ap.col_counts = reinterpret_cast<const std::int32_t*>(base + off_counts);
  ap.col_offsets = reinterpret_cast<const std::int64_t*>(base + off_offsets);
  ap.col_bitmap = reinterpret_cast<const std::uint32_t*>(base + off_bitmap);
  ap.col_indices = reinterpret_cast<const std::int32_t*>(base + off_indices);
  ap.bitmap_words = words;
  ap.dense_tail = 0;
  ap.window_hint = w;
  run_attention(ap, stream);
}

void dense(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
           float* lse, void* stream) {
  run_attention(attention_params(p, q, k, v, out, lse), stream);
}

void sample_attention(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, float* lse, const SampleConfig& config, void* stream,
                      Selection* selection_out) {
  const SelectPlan plan = make_plan(p, config);
  const WorkspaceLayout layout = workspace_layout(plan);
  StreamBuffer buffer(layout.bytes, static_cast<cudaStream_t>(stream));
  const Workspace ws = carve_workspace(buffer.get(), layout.bytes, layout);
  run_selection(plan, q, k, ws, stream);
  run_sparse_attention(plan, q, k, v, out, lse, ws, stream);
  if (selection_out != nullptr) *selection_out = download_selection(plan, ws, stream);
}

}  // namespace sampleattn::cuda
