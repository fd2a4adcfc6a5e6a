// Shared CLI helpers (common.h).
#include "common.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/half.h"
#include "device.h"
#include "sampleattn/error.h"

namespace sampleattn::cli {

Backend parse_backend(const std::string& name) {
  if (name == "auto") return best_backend();
  if (name == "cpu") return Backend::cpu;
  if (name == "cpu-ref") return Backend::cpu_reference;
  if (name == "cuda") {
    SA_CHECK(cuda_present(), "--backend cuda: ",
#ifdef SAMPLEATTN_WITH_CUDA
             "no CUDA device is available"
#else
             "this build of sampleattn has no CUDA backend"
#endif
    );
    return Backend::cuda;
  }
  detail::fail("--backend ('", name, "') must be one of auto, cpu, cpu-ref, cuda");
}

Backend best_backend() { return cuda_present() ? Backend::cuda : Backend::cpu; }

DType parse_dtype(const std::string& option, const std::string& name) {
  if (name == "f32" || name == "float32") return DType::f32;
  if (name == "f16" || name == "float16") return DType::f16;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  detail::fail("--", option, " ('", name, "') must be one of f32, f16, bf16");
}

std::vector<OptionSpec> config_options() {
  return {{"alpha", true},       {"sample-ratio", true}, {"window-ratio", true},
          {"min-window", true},  {"sink-tokens", true},  {"dense-tail", true},
          {"dense-head-density", true}};
}

SampleConfig config_from(const Args& args) {
  SampleConfig c;
  constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max();
  c.alpha = args.real("alpha", c.alpha, 0.0, 1.0, /*lo_open=*/true);
  c.sample_ratio = args.real("sample-ratio", c.sample_ratio, 0.0, 1.0, /*lo_open=*/true);
  c.window_ratio = args.real("window-ratio", c.window_ratio, 0.0, 1.0);
  c.min_window = args.integer("min-window", c.min_window, 0, kMax);
  c.sink_tokens = args.integer("sink-tokens", c.sink_tokens, 0, kMax);
  c.dense_tail = args.integer("dense-tail", c.dense_tail, 0, kMax);
  c.dense_head_density = args.real("dense-head-density", c.dense_head_density, 0.0, 1.0, /*lo_open=*/true);
  return c;
}

std::string describe(const SampleConfig& c) {
  std::ostringstream os;
  os << "alpha " << c.alpha << ", sample_ratio " << c.sample_ratio << ", window_ratio " << c.window_ratio
     << ", min_window " << c.min_window << ", sink_tokens " << c.sink_tokens << ", dense_tail " << c.dense_tail
     << ", dense_head_density " << c.dense_head_density;
  return os.str();
}

HostArray::HostArray(DType dtype, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim)
    : dtype_(dtype), shape_{batch, seq, heads, head_dim} {
  data_.assign(static_cast<std::size_t>(batch * seq * heads * head_dim) * dtype_size(dtype), 0);
}

TensorView HostArray::view() const {
  return TensorView::contiguous(const_cast<std::uint8_t*>(data_.data()), dtype_, shape_[0], shape_[1], shape_[2],
                                shape_[3]);
}

void HostArray::fill_nan() {
  const std::int64_t n = static_cast<std::int64_t>(data_.size() / dtype_size(dtype_));
  for (std::int64_t i = 0; i < n; ++i) core::store_element(data_.data(), dtype_, i, std::nanf(""));
}

double relative_error(const TensorView& a, const TensorView& b, std::int64_t batch, std::int64_t head) {
  double diff = 0.0, norm = 0.0;
  for (std::int64_t s = 0; s < b.seq(); ++s) {
    for (std::int64_t d = 0; d < b.head_dim(); ++d) {
      const double x = core::load_element(a.data, a.dtype, a.offset(batch, s, head, d));
      const double y = core::load_element(b.data, b.dtype, b.offset(batch, s, head, d));
      diff += (x - y) * (x - y);
      norm += y * y;
    }
  }
  if (!std::isfinite(diff)) return std::numeric_limits<double>::infinity();
  return norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

std::string utc_timestamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {

// First line of a shell command's output ("" on failure).
std::string command_line_output(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::array<char, 256> buf{};
  std::string out;
  if (fgets(buf.data(), static_cast<int>(buf.size()), pipe) != nullptr) out = buf.data();
  const int rc = pclose(pipe);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return rc == 0 ? out : "";
}

}  // namespace

std::string git_commit(bool* dirty) {
  const std::string dir = SAMPLEATTN_SOURCE_DIR;
  const std::string head = command_line_output("git -C '" + dir + "' rev-parse HEAD 2>/dev/null");
  if (head.size() == 40) {
    *dirty = !command_line_output("git -C '" + dir + "' status --porcelain --untracked-files=no 2>/dev/null").empty();
    return head;
  }
  *dirty = false;
  return SAMPLEATTN_CONFIGURE_COMMIT;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, 10, "model name") == 0) {
      const std::size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

std::string os_description() {
  utsname u{};
  if (uname(&u) != 0) return "unknown";
  std::ostringstream os;
  os << u.sysname << " " << u.release << " " << u.machine;
  return os.str();
}

std::string host_name() {
  char buf[256] = {};
  return gethostname(buf, sizeof(buf) - 1) == 0 ? buf : "unknown";
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

}  // namespace sampleattn::cli
