// sampleattn: the command-line tool. Dispatches to one subcommand (demo, run, bench, verify); every error
// becomes one line on stderr and exit code 2. verify exits with 1 when a backend disagrees with the
// reference.
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "common.h"
#include "sampleattn/error.h"

namespace {

constexpr const char* kUsage = R"(sampleattn: SampleAttention (adaptive structured sparse attention) for long-prompt prefill.

usage: sampleattn <command> [options]      (sampleattn <command> --help for its options)

commands:
  demo     the main job on a built-in synthetic workload (16K tokens, 8 query heads, 2 KV heads, d 128):
           SampleAttention vs dense attention on the best backend present, a per-head table and the speedup
  run      SampleAttention (or --dense) on your own tensors: --q Q.npy --k K.npy --v V.npy --out O.npy
  bench    timings of dense, select and sparse attention over sizes and backends; JSON with --out
  verify   the fast backends against the reference on random cases; exit 1 on any mismatch

exit codes: 0 success, 1 verify found a mismatch, 2 bad input or usage (one line on stderr)
)";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fputs("sampleattn: missing command (demo, run, bench or verify; sampleattn --help explains them)\n", stderr);
    return 2;
  }
  const std::string command = args[0];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "--version") {
    std::printf("sampleattn %s\n", SAMPLEATTN_VERSION);
    return 0;
  }
  args.erase(args.begin());
  try {
    if (command == "demo") return sampleattn::cli::demo_main(args);
    if (command == "run") return sampleattn::cli::run_main(args);
    if (command == "bench") return sampleattn::cli::bench_main(args);
    if (command == "verify") return sampleattn::cli::verify_main(args);
    std::fprintf(stderr, "sampleattn: unknown command '%s' (commands: demo, run, bench, verify; see sampleattn --help)\n",
                 command.c_str());
  } catch (const sampleattn::Error& e) {
    std::fprintf(stderr, "sampleattn %s: error: %s\n", command.c_str(), e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "sampleattn %s: error: out of memory\n", command.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sampleattn %s: error: %s\n", command.c_str(), e.what());
  }
  return 2;
}
