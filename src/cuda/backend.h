// CUDA backend entry points used by the public API (src/api.cpp). Plain C++: no CUDA types cross this line.
// Tensors are device views; `stream` is a cudaStream_t (nullptr = default stream).
#pragma once

#include "core/problem.h"
#include "sampleattn/selection.h"

namespace sampleattn::cuda {

// True when the CUDA backend can run here (a device is present and the runtime answers).
bool available();
// Throws sampleattn::Error unless the CUDA backend can run this call: a kernel for the dtype and head_dim,
// q on the current device, out of q's dtype, (with v and out) views the attention kernel accepts, and every
// pointer given (lse too) memory the current device can address. Enqueues nothing.
void check_device_inputs(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView* v,
                         const TensorView* out, const float* lse = nullptr);
// Throws unless `data` (named `name` in the message) is memory the current device can address.
void check_device_memory(const void* data, const char* name);
// Throws unless `stream` (a cudaStream_t; nullptr = the default stream) belongs to the current device: a
// launch on another device's stream fails after the checks, or its kernels would read this device's memory.
// Not checked while the stream is capturing a graph (the runtime does not permit the query then).
void check_stream(void* stream);

// Runs stages 1 and 2 on the device, then copies the selection to the host (synchronises the stream).
Selection select(const core::Problem& p, const TensorView& q, const TensorView& k, const SampleConfig& config,
                 void* stream);
// Uploads `selection`, then runs sparse attention on `stream`.
void attend(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
            const Selection& selection, const TensorView& out, float* lse, void* stream);
// Sliding-window attention: the selection of window `window` (>= 1) and no columns, built on the device (no host
// arrays, no copy from the host: graph-capturable), then sparse attention on `stream`.
void attend_window(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                   std::int64_t window, const TensorView& out, float* lse, void* stream);
void dense(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
           const TensorView& out, float* lse, void* stream);
// Select + attend with the selection kept on the device. When `selection_out` is non-null the selection
// is also copied to the host (one synchronisation); otherwise nothing waits on the host.
void sample_attention(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, float* lse, const SampleConfig& config, void* stream,
                      Selection* selection_out);

}  // namespace sampleattn::cuda
