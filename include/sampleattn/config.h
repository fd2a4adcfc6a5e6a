// Parameters of one attention call and of SampleAttention's selection (SPEC.md, variant A).
#pragma once

#include <cstdint>
#include <optional>

namespace sampleattn {

struct AttnParams {
  // Causal prefill: query row r sits at key position p(r) = Sk - Sq + r and sees keys j <= p(r).
  // Non-causal: every row sees every key; the band is then p(r) - w < j < p(r) + w.
  bool causal = true;
  std::optional<float> scale;  // softmax scale; default 1 / sqrt(head_dim)
};

struct SampleConfig {
  double alpha = 0.95;         // (0, 1]: sampled attention mass the chosen columns must reach
  double sample_ratio = 0.05;  // (0, 1]: fraction of query rows sampled in stage 1
  double window_ratio = 0.08;  // [0, 1]: local window w = max(min_window, ceil(window_ratio * Sk)), clamped to [1, Sk]
  std::int64_t min_window = 64;
  std::int64_t sink_tokens = 0;  // the first sink_tokens keys are always kept as columns
  std::int64_t dense_tail = 0;   // the last dense_tail query rows keep all their visible keys
  // (0, 1] (ours): a head whose mask (band + chosen columns + dense tail) keeps at least this fraction of its
  // visible entries keeps every column instead, i.e. runs as plain (causal) attention (no index reads, no masks
  // but the causal edge). Such a head has little to skip (on the H200 a head keeping 95% of its entries costs
  // ~1.03x dense through the sparse path in cycles at 32K-128K, up to 1.3x in time at 8K); keeping more only
  // adds attention mass. 1 (the default) turns
  // it off: the paper's method.
  double dense_head_density = 1.0;
};

enum class Backend : std::uint8_t { automatic, cpu, cpu_reference, cuda };

const char* to_string(Backend backend);

struct ExecOptions {
  Backend backend = Backend::automatic;  // automatic: the tensors' device decides (CUDA for cuda views)
  int num_threads = 0;                   // CPU: 0 = all hardware threads
  void* cuda_stream = nullptr;           // CUDA: a cudaStream_t of the current device; nullptr = its default stream
};

}  // namespace sampleattn
