// The sampleattn CLI binary (tools/), run as a user would: every bad input of issue 2 item 6 must give
// exit code 2 and one line on stderr naming the argument and values; `run` round trips (float32, bfloat16,
// dense, reused selection) must match the reference backend within the dtype's tolerance and write a
// selection JSON that parses; `verify`, `demo` and `bench` must succeed on small settings.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/npy.h"
#include "core/selection_json.h"
#ifdef SAMPLEATTN_WITH_CUDA
#include "cuda/backend.h"
#endif
#include "sampleattn/api.h"
#include "support/host_tensor.h"
#include "core/tolerance.h"

#ifdef SAMPLEATTN_CLI_PATH

namespace sampleattn {
namespace {

namespace fs = std::filesystem;

struct Result {
  int code = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sampleattn_cli_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    rng_.seed(test::test_seed());
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  Result cli(const std::string& args) const {
    const std::string cmd = std::string("'") + SAMPLEATTN_CLI_PATH + "' " + args + " >'" + path("stdout.txt") +
                            "' 2>'" + path("stderr.txt") + "'";
    const int status = std::system(cmd.c_str());
    Result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp(path("stdout.txt"));
    r.err = slurp(path("stderr.txt"));
    return r;
  }

  // Exit code 2, exactly one line on stderr, containing `expected`.
  void expect_error(const std::string& args, const std::string& expected) const {
    const Result r = cli(args);
    EXPECT_EQ(r.code, 2) << "sampleattn " << args << "\nstderr: " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << "sampleattn " << args << "\n  stderr:   " << r.err
                                                       << "  expected: " << expected;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line on stderr: " << r.err;
  }

  // A random [b, s, h, d] tensor written as .npy (bfloat16 as uint16); returns the host tensor.
  test::HostTensor write_random(const std::string& name, DType dtype, std::int64_t b, std::int64_t s, std::int64_t h,
                                std::int64_t d) {
    test::HostTensor t(dtype, b, s, h, d);
    t.fill_random(rng_);
    io::write_npy(path(name), dtype, {b, s, h, d}, t.data());
    return t;
  }
  // Raw bytes as a file.
  std::string write_bytes(const std::string& name, const std::string& bytes) const {
    std::ofstream(path(name), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path(name);
  }
  std::string qkv(const std::string& q = "q.npy", const std::string& k = "k.npy", const std::string& v = "v.npy") const {
    return "--q '" + path(q) + "' --k '" + path(k) + "' --v '" + path(v) + "' --out '" + path("out.npy") + "'";
  }

  fs::path dir_;
  std::mt19937_64 rng_;
};

// The reference's output for (q, k, v) with `sel`, as float32.
test::HostTensor reference_attend(const test::HostTensor& q, const test::HostTensor& k, const test::HostTensor& v,
                                  const Selection& sel, std::vector<float>* lse) {
  test::HostTensor out(DType::f32, q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
  lse->assign(static_cast<std::size_t>(q.shape()[0] * q.shape()[2] * q.shape()[1]), NAN);
  attend(q.view(), k.view(), v.view(), sel, out.view(), lse->data(), {}, {Backend::cpu_reference});
  return out;
}

// max |a - b| between a .npy output and a host tensor; inf on NaN (every element must have been written).
double max_diff(const io::NpyArray& a, const test::HostTensor& b) {
  const TensorView av = a.view4d("out");
  EXPECT_EQ(av.shape, b.shape());
  double m = 0.0;
  for (std::int64_t i = 0; i < a.elements(); ++i) {
    const double x = core::load_element(a.data.data(), a.dtype, i);
    const double y = core::load_element(b.data(), b.dtype(), i);
    if (!std::isfinite(x) || !std::isfinite(y)) return INFINITY;
    m = std::max(m, std::abs(x - y));
  }
  return m;
}

double max_diff(const io::NpyArray& a, const std::vector<float>& b) {
  EXPECT_EQ(a.elements(), static_cast<std::int64_t>(b.size()));
  double m = 0.0;
  for (std::int64_t i = 0; i < a.elements(); ++i) {
    const double x = core::load_element(a.data.data(), DType::f32, i);
    if (!std::isfinite(x)) return INFINITY;
    m = std::max(m, std::abs(x - b[i]));
  }
  return m;
}

TEST_F(Cli, UsageErrorsExitTwoWithOneLine) {
  expect_error("", "sampleattn: missing command (demo, run, bench or verify; sampleattn --help explains them)");
  const Result help = cli("--help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("demo"), std::string::npos);
  for (const char* cmd : {"demo", "run", "bench", "verify"}) {
    const Result r = cli(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_NE(r.out.find(std::string("usage: sampleattn ") + cmd), std::string::npos) << cmd;
  }
  expect_error("frobnicate", "unknown command 'frobnicate'");
  expect_error("run --frob 1", "unknown option '--frob' for sampleattn run");
  expect_error("run extra", "unexpected argument 'extra'");
  expect_error("run --alpha", "option --alpha needs a value");
  expect_error("run --alpha 0.5 --alpha 0.6", "option --alpha is given more than once");
  expect_error("run --dense=1", "option --dense takes no value");
  expect_error("run --k k.npy --v v.npy --out o.npy", "sampleattn run needs --q");
  expect_error("bench --backend gpu", "--backend ('gpu') must be one of cpu, cpu-ref, cuda");
  expect_error("demo --dtype f64", "--dtype ('f64') must be one of f32, f16, bf16");
  expect_error("demo --seq 12abc", "--seq ('12abc') is not an integer");
  expect_error("bench --sizes 99999999999999999999", "--sizes (99999999999999999999) is too large: it overflows int64");
  expect_error("bench --sizes 9999999999999M", "--sizes (9999999999999M) is too large: it overflows int64");
  expect_error("bench --sizes 1024,0", "--sizes (0) must be in [1, 16777216]");
  expect_error("demo --heads 6 --kv-heads 4", "--heads (6) must be a multiple of --kv-heads (4)");
  expect_error("verify --cases 0", "--cases (0) must be in [1, 100000]");
  expect_error("bench --selection synthetic,workload", "--selection takes one of synthetic or workload, not a list");
  expect_error("demo --head-dim 300", "--head-dim (300) must be in [16, 256]");
  expect_error("bench --head-dim 300", "--head-dim (300) must be in [16, 256]");
#ifndef SAMPLEATTN_WITH_CUDA
  expect_error("bench --backend cuda", "--backend cuda: this build of sampleattn has no CUDA backend");
#else
  if (!cuda::available()) expect_error("bench --backend cuda", "--backend cuda: no CUDA device is available");
#endif
}

TEST_F(Cli, OutOfRangeSettingsNameTheOption) {
  write_random("q.npy", DType::f32, 1, 8, 2, 64);
  write_random("k.npy", DType::f32, 1, 8, 2, 64);
  write_random("v.npy", DType::f32, 1, 8, 2, 64);
  const std::string io = qkv();
  expect_error("run " + io + " --alpha 1.5", "--alpha (1.5) must be in (0, 1]");
  expect_error("run " + io + " --alpha 0", "--alpha (0) must be in (0, 1]");
  expect_error("run " + io + " --alpha -0.2", "--alpha (-0.2) must be in (0, 1]");
  expect_error("run " + io + " --alpha abc", "--alpha ('abc') is not a finite number");
  expect_error("run " + io + " --alpha nan", "--alpha ('nan') is not a finite number");
  expect_error("run " + io + " --sample-ratio 0", "--sample-ratio (0) must be in (0, 1]");
  expect_error("run " + io + " --sample-ratio 1.01", "--sample-ratio (1.01) must be in (0, 1]");
  expect_error("run " + io + " --window-ratio 2", "--window-ratio (2) must be in [0, 1]");
  expect_error("run " + io + " --window-ratio -1", "--window-ratio (-1) must be in [0, 1]");
  expect_error("run " + io + " --sink-tokens -1", "--sink-tokens (-1) must be in [0, 2147483647]");
  expect_error("run " + io + " --dense-head-density 0", "--dense-head-density (0) must be in (0, 1]");
  expect_error("run " + io + " --dense-head-density 1.5", "--dense-head-density (1.5) must be in (0, 1]");
  expect_error("run " + io + " --min-window 1.5", "--min-window ('1.5') is not an integer");
  expect_error("run " + io + " --scale 0", "--scale (0) must be in [1.17549e-38, 1e+30]");
  expect_error("run " + io + " --scale 1e-50", "--scale (1e-50) must be in [1.17549e-38, 1e+30]");
  expect_error("run " + io + " --backend tpu", "--backend ('tpu') must be one of auto, cpu, cpu-ref, cuda");
  expect_error("run " + io + " --dense --selection s.json", "--dense computes no selection");
  expect_error("run " + io + " --dense --alpha 0.9", "--alpha only applies when run selects: drop it, or drop --dense");
  expect_error("run " + io + " --use-selection s.json --window-ratio 0.1",
               "--window-ratio only applies when run selects: drop it, or drop --use-selection");
  expect_error("bench --density 0", "--density (0) must be in (0, 1]");
  expect_error("bench --density 1.5", "--density (1.5) must be in (0, 1]");
  EXPECT_FALSE(fs::exists(path("out.npy"))) << "no output is written on an error";
}

TEST_F(Cli, BadNpyFilesExitTwoNamingTheFile) {
  write_random("q.npy", DType::f32, 1, 8, 2, 64);
  write_random("k.npy", DType::f32, 1, 8, 2, 64);
  write_random("v.npy", DType::f32, 1, 8, 2, 64);
  const std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 8, 2, 64), }";
  auto npy = [&](const std::string& hdr, std::size_t data) {
    std::string h = hdr;
    h.append(117 - h.size(), ' ');  // 10-byte prefix + 118-byte header: the data starts at byte 128
    h += '\n';
    return std::string("\x93NUMPY\x01\x00\x76\x00", 10) + h + std::string(data, '\0');
  };
  write_bytes("corrupt.npy", "PK\x03\x04 this is a zip file, not a .npy");
  write_bytes("truncated.npy", npy(header, 1000));
  write_bytes("lying.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1048576, 64, 1048576), }", 64));
  write_bytes("overflow.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 1, 1), }", 64));
  write_bytes("badheader.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 8, 2, 64)", 4096));
  write_bytes("f64.npy", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 8, 2, 32), }", 4096));

  expect_error("run " + qkv("missing.npy"), "missing.npy: cannot open: no such file");
  expect_error("run " + qkv("q.npy", "corrupt.npy"), "corrupt.npy: not a .npy file (bad magic string)");
  expect_error("run " + qkv("q.npy", "k.npy", "truncated.npy"),
               "truncated.npy: truncated .npy data: shape (1, 8, 2, 64) of float32 needs 4096 bytes, the file holds 1000");
  expect_error("run " + qkv("lying.npy"), "lying.npy: truncated .npy data: shape (1, 1048576, 64, 1048576) of float32 needs 281474976710656 bytes, the file holds 64");
  expect_error("run " + qkv("overflow.npy"), "overflow.npy: shape (4294967296, 4294967296, 1, 1) is too large: its byte count overflows int64");
  expect_error("run " + qkv("badheader.npy"), "badheader.npy: bad .npy header");
  expect_error("run " + qkv("f64.npy"), "f64.npy: unsupported dtype '<f8'");
}

TEST_F(Cli, BadShapesDtypesAndValuesExitTwo) {
  write_random("q.npy", DType::f32, 1, 8, 4, 64);
  write_random("k.npy", DType::f32, 1, 16, 2, 64);
  write_random("v.npy", DType::f32, 1, 16, 2, 64);
  std::vector<float> flat(8 * 4 * 64, 0.5f);
  io::write_npy(path("q3.npy"), DType::f32, {8, 4, 64}, flat.data());
  write_random("k_f16.npy", DType::f16, 1, 16, 2, 64);
  write_random("v_short.npy", DType::f32, 1, 15, 2, 64);
  write_random("k_h3.npy", DType::f32, 1, 16, 3, 64);
  write_random("v_h3.npy", DType::f32, 1, 16, 3, 64);
  write_random("q_d300.npy", DType::f32, 1, 8, 4, 300);
  write_random("k_d300.npy", DType::f32, 1, 16, 2, 300);
  write_random("v_d300.npy", DType::f32, 1, 16, 2, 300);
  write_random("q_long.npy", DType::f32, 1, 20, 4, 64);
  io::write_npy(path("q_empty.npy"), DType::f32, {1, 0, 4, 64}, flat.data());
  io::write_npy(path("k_empty.npy"), DType::f32, {1, 0, 2, 64}, flat.data());
  test::HostTensor q_nan = write_random("q_nan.npy", DType::f32, 1, 8, 4, 64);
  q_nan.set(0, 5, 3, 7, NAN);
  io::write_npy(path("q_nan.npy"), DType::f32, {1, 8, 4, 64}, q_nan.data());
  test::HostTensor v_inf = write_random("v_inf.npy", DType::f32, 1, 16, 2, 64);
  v_inf.set(0, 2, 1, 0, -INFINITY);
  io::write_npy(path("v_inf.npy"), DType::f32, {1, 16, 2, 64}, v_inf.data());
  test::HostTensor u16(DType::bf16, 1, 8, 4, 64);
  u16.fill_random(rng_);
  io::write_npy(path("q_u16.npy"), DType::bf16, {1, 8, 4, 64}, u16.data());

  expect_error("run " + qkv("q3.npy"), "--q " + path("q3.npy") +
                                           ": expected 4 dimensions [batch, seq, heads, head_dim], got 3 (shape (8, 4, 64))");
  expect_error("run " + qkv("q.npy", "k_f16.npy"), "k.dtype (float16) must equal q.dtype (float32)");
  expect_error("run " + qkv("q.npy", "k.npy", "v_short.npy"), "v.shape (1, 15, 2, 64) must equal k.shape (1, 16, 2, 64)");
  expect_error("run " + qkv("q.npy", "k_h3.npy", "v_h3.npy"), "q.heads (4) must be a multiple of k.heads (3)");
  expect_error("run " + qkv("q_d300.npy", "k_d300.npy", "v_d300.npy"), "q.head_dim (300) must be <= 256 on the CPU backends");
  expect_error("run " + qkv("q_long.npy"), "q.seq (20) must be <= k.seq (16)");
  expect_error("run " + qkv("q_empty.npy"), "q.seq (0) must be > 0");
  expect_error("run " + qkv("q.npy", "k_empty.npy", "k_empty.npy"), "k.seq (0) must be > 0");
  expect_error("run " + qkv("q_nan.npy"), "q[0, 5, 3, 7] is nan: inputs must be finite (NaN/Inf are rejected)");
  expect_error("run " + qkv("q.npy", "k.npy", "v_inf.npy") + " --dense", "v[0, 2, 1, 0] is -inf: inputs must be finite");
  expect_error("run " + qkv("q_u16.npy"), "dtype uint16 ('<u2') is only accepted as bfloat16 bit patterns: pass --bf16");
  expect_error("run " + qkv("q_u16.npy") + " --bf16", "k.dtype (float32) must equal q.dtype (bfloat16)");
  expect_error("run --q '" + path("q.npy") + "' --k '" + path("k.npy") + "' --v '" + path("v.npy") + "' --out '" +
                   path("no/such/dir/out.npy") + "'",
               "out.npy: cannot open for writing");
  write_bytes("sel.json", "{\"format\": \"sampleattn.selection\", \"version\": 1");
  expect_error("run " + qkv() + " --use-selection '" + path("sel.json") + "'", "sel.json: invalid JSON");
  // A valid selection file made for other tensors names the file and both shapes.
  io::write_selection_json(path("sel9.json"), test::random_selection(rng_, 1, 2, 9, 16, true, 3, 2));
  expect_error("run " + qkv() + " --use-selection '" + path("sel9.json") + "'",
               "sel9.json: its shape (batch 1, heads 2, seq_q 9, seq_k 16) does not match the tensors (batch 1, "
               "heads 4, seq_q 8, seq_k 16)");
  io::write_selection_json(path("sel_nc.json"), test::random_selection(rng_, 1, 4, 8, 16, false, 3, 2));
  expect_error("run " + qkv() + " --use-selection '" + path("sel_nc.json") + "'",
               "sel_nc.json was made non-causal: run with --non-causal to use it");
}

TEST_F(Cli, DenseHeadRatioKeepsEveryColumnOfHeadsThatReachIt) {
  write_random("q.npy", DType::f32, 1, 40, 2, 16);
  write_random("k.npy", DType::f32, 1, 97, 1, 16);
  write_random("v.npy", DType::f32, 1, 97, 1, 16);
  const std::string sel_path = path("sel.json");
  // Random inputs keep most columns at alpha 0.95; a ratio of 0.01 needs one column, so every head runs dense.
  const Result r = cli("run " + qkv() + " --selection '" + sel_path + "' --dense-head-density 0.01 --backend cpu");
  ASSERT_EQ(r.code, 0) << r.err;
  const Selection sel = io::read_selection_json(sel_path);
  for (std::int64_t bh = 0; bh < 2; ++bh) {
    ASSERT_EQ(sel.columns(bh).size(), 97u);
    EXPECT_EQ(sel.stats[bh].kept_entries, sel.stats[bh].visible_entries);
  }
}

TEST_F(Cli, RunMatchesTheReferenceAndWritesAParsableSelection) {
  // Chunked prefill (Sq < Sk), GQA 4, float32.
  const test::HostTensor q = write_random("q.npy", DType::f32, 2, 40, 8, 64);
  const test::HostTensor k = write_random("k.npy", DType::f32, 2, 97, 2, 64);
  const test::HostTensor v = write_random("v.npy", DType::f32, 2, 97, 2, 64);
  const std::string sel_path = path("sel.json"), lse_path = path("lse.npy");
  const Result r = cli("run " + qkv() + " --selection '" + sel_path + "' --lse '" + lse_path +
                       "' --alpha 0.9 --sample-ratio 0.2 --window-ratio 0.05 --min-window 8 --sink-tokens 2 --backend cpu");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("density"), std::string::npos);
  const Selection sel = io::read_selection_json(sel_path);
  EXPECT_EQ(sel.batch, 2);
  EXPECT_EQ(sel.heads, 8);
  EXPECT_EQ(sel.seq_q, 40);
  EXPECT_EQ(sel.seq_k, 97);
  for (std::int64_t bh = 0; bh < 16; ++bh) {
    EXPECT_GE(sel.stats[bh].sampled_coverage, 0.9 - 1e-6);
    EXPECT_TRUE(sel.columns(bh).size() >= 2 && sel.columns(bh)[0] == 0 && sel.columns(bh)[1] == 1) << "sinks kept";
  }
  std::vector<float> ref_lse;
  const test::HostTensor ref = reference_attend(q, k, v, sel, &ref_lse);
  const core::Tolerance tol = core::tolerance(DType::f32);
  const double vmax = std::max(1.0, test::max_abs(v));
  const io::NpyArray out = io::read_npy(path("out.npy"), false);
  EXPECT_EQ(out.dtype, DType::f32);
  EXPECT_LE(max_diff(out, ref), tol.out * vmax);
  const io::NpyArray lse = io::read_npy(lse_path, false);
  EXPECT_EQ(lse.shape, (std::vector<std::int64_t>{2, 8, 40}));
  EXPECT_LE(max_diff(lse, ref_lse), tol.lse);

  // The reference backend through the CLI chooses exactly what the API's reference select() chooses.
  ASSERT_EQ(cli("run " + qkv() + " --selection '" + path("sel_ref.json") +
                "' --alpha 0.9 --sample-ratio 0.2 --window-ratio 0.05 --min-window 8 --sink-tokens 2 --backend cpu-ref")
                .code,
            0);
  SampleConfig config;
  config.alpha = 0.9;
  config.sample_ratio = 0.2;
  config.window_ratio = 0.05;
  config.min_window = 8;
  config.sink_tokens = 2;
  const Selection api = select(q.view(), k.view(), {}, config, {Backend::cpu_reference});
  const Selection cli_ref = io::read_selection_json(path("sel_ref.json"));
  EXPECT_EQ(cli_ref.indices, api.indices);
  EXPECT_EQ(cli_ref.offsets, api.offsets);
  EXPECT_EQ(cli_ref.window, api.window);

  // Reusing the saved selection gives the same output.
  ASSERT_EQ(cli("run " + qkv("q.npy", "k.npy", "v.npy") + " --use-selection '" + sel_path + "' --backend cpu").code, 0);
  EXPECT_LE(max_diff(io::read_npy(path("out.npy"), false), ref), tol.out * vmax);
}

TEST_F(Cli, RunBfloat16AndDense) {
  const test::HostTensor q = write_random("q.npy", DType::bf16, 1, 64, 4, 128);
  const test::HostTensor k = write_random("k.npy", DType::bf16, 1, 64, 1, 128);
  const test::HostTensor v = write_random("v.npy", DType::bf16, 1, 64, 1, 128);
  const core::Tolerance tol = core::tolerance(DType::bf16);
  const double vmax = std::max(1.0, test::max_abs(v));

  const Result r = cli("run " + qkv() + " --bf16 --selection '" + path("sel.json") + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  const io::NpyArray out = io::read_npy(path("out.npy"), true);
  EXPECT_EQ(out.dtype, DType::bf16);
  EXPECT_EQ(slurp(path("out.npy")).find("'descr': '<u2'"), 11u) << "bfloat16 is written as uint16";
  std::vector<float> ref_lse;
  const Selection sel = io::read_selection_json(path("sel.json"));
  EXPECT_LE(max_diff(out, reference_attend(q, k, v, sel, &ref_lse)), tol.out * vmax);

  const Result d = cli("run " + qkv() + " --bf16 --dense --lse '" + path("lse.npy") + "'");
  ASSERT_EQ(d.code, 0) << d.err;
  test::HostTensor ref(DType::f32, 1, 64, 4, 128);
  std::vector<float> lse(4 * 64, NAN);
  dense_attention(q.view(), k.view(), v.view(), ref.view(), lse.data(), {}, {Backend::cpu_reference});
  EXPECT_LE(max_diff(io::read_npy(path("out.npy"), true), ref), tol.out * vmax);
  EXPECT_LE(max_diff(io::read_npy(path("lse.npy"), false), lse), tol.lse);
}

TEST_F(Cli, VerifyDemoAndBenchSucceed) {
  const Result v = cli("verify --cases 4 --seed " + std::to_string(test::test_seed() >> 1));
  EXPECT_EQ(v.code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("0 case(s) with mismatches"), std::string::npos) << v.out;

  const Result d = cli("demo --seq 1024 --heads 4 --kv-heads 1 --head-dim 64 --metric-rows 8");
  EXPECT_EQ(d.code, 0) << d.err;
  for (const char* s : {"SYNTHETIC", "stripes", "dense", "CRA", "summary:", "speedup"}) {
    EXPECT_NE(d.out.find(s), std::string::npos) << s << "\n" << d.out;
  }

  // Shorter than the generator's 4 sink tokens: they are clipped, not an error about a setting nobody gave.
  for (const char* seq : {"1", "3"}) {
    const Result tiny = cli(std::string("demo --seq ") + seq + " --heads 2 --kv-heads 1 --head-dim 16 --backend cpu");
    EXPECT_EQ(tiny.code, 0) << seq << ": " << tiny.err;
  }
  const Result tiny_bench = cli("bench --sizes 2 --selection workload --heads 2 --kv-heads 1 --head-dim 16 --reps 1 "
                                "--warmup 0 --backend cpu");
  EXPECT_EQ(tiny_bench.code, 0) << tiny_bench.err;

  const std::string json = path("bench.json");
  const Result b = cli("bench --sizes 256,300 --heads 2 --kv-heads 1 --head-dim 64 --reps 1 --warmup 0 --out '" + json + "'");
  EXPECT_EQ(b.code, 0) << b.err;
  const std::string text = slurp(json);
  for (const char* s : {"\"git_commit\"", "\"date\"", "\"machine\"", "\"cpu\"", "\"speedup_total\"",
                        "\"attend_gflops_kept\"", "\"seq_k\": 300"}) {
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
  }
}

}  // namespace
}  // namespace sampleattn

#else  // a build without the CLI (SAMPLEATTN_BUILD_TOOLS=OFF): say so instead of showing no test at all

TEST(Cli, NotBuilt) { GTEST_SKIP() << "the sampleattn CLI is not built (SAMPLEATTN_BUILD_TOOLS=OFF)"; }

#endif  // SAMPLEATTN_CLI_PATH
