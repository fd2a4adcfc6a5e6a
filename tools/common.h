// Pieces the CLI subcommands share: backend and dtype names, the SampleConfig options, owning host tensors,
// timing, per-head error measures and machine / commit information for benchmark records.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "args.h"
#include "sampleattn/config.h"
#include "sampleattn/tensor.h"

namespace sampleattn::cli {

// Subcommand entry points (one file each); argv holds the arguments after the subcommand name.
int demo_main(const std::vector<std::string>& argv);
int run_main(const std::vector<std::string>& argv);
int bench_main(const std::vector<std::string>& argv);
int verify_main(const std::vector<std::string>& argv);

// "auto" -> cuda when this build has CUDA and a device answers, else cpu; "cpu", "cpu-ref", "cuda".
Backend parse_backend(const std::string& name);
Backend best_backend();
// "f32" / "float32", "f16" / "float16", "bf16" / "bfloat16".
DType parse_dtype(const std::string& option, const std::string& name);

// --alpha, --sample-ratio, --window-ratio, --min-window, --sink-tokens, --dense-tail, --dense-head-density: the
// options and their parsing (ranges as SPEC.md: alpha, sample ratio and dense head density in (0, 1], window
// ratio in [0, 1]).
std::vector<OptionSpec> config_options();
SampleConfig config_from(const Args& args);
std::string describe(const SampleConfig& config);

// An owning, contiguous [batch, seq, heads, head_dim] host tensor.
class HostArray {
 public:
  HostArray() = default;
  HostArray(DType dtype, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim);
  TensorView view() const;
  std::size_t bytes() const { return data_.size(); }
  void* data() { return data_.data(); }
  std::vector<std::int64_t> shape() const { return {shape_[0], shape_[1], shape_[2], shape_[3]}; }
  void fill_nan();

 private:
  DType dtype_ = DType::f32;
  std::int64_t shape_[4] = {0, 0, 0, 0};
  std::vector<std::uint8_t> data_;
};

// ||a - b||_F / ||b||_F over the rows of query head h in batch b (fp64).
double relative_error(const TensorView& a, const TensorView& b, std::int64_t batch, std::int64_t head);

// Monotonic seconds.
double now_seconds();
double median(std::vector<double> values);

// Benchmark record context.
std::string utc_timestamp();          // "2026-11-29T06:00:00Z"
std::string git_commit(bool* dirty);  // HEAD of the source tree, or the configure-time commit
std::string cpu_model();
std::string os_description();
std::string host_name();

// A JSON string literal (quotes and escapes).
std::string json_string(const std::string& s);

}  // namespace sampleattn::cli
