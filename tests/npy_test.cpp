// .npy reading and writing (src/core/npy.h): round trips of every dtype, hand-made files of each format
// version and byte order, and every kind of bad file (missing, not a file, bad magic or version, malformed
// or lying headers, truncated or over-long data), each of which must throw sampleattn::Error naming the file
// and the problem, without a crash or a huge allocation.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/npy.h"
#include "sampleattn/error.h"
#include "support/host_tensor.h"

namespace sampleattn {
namespace {

namespace fs = std::filesystem;

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sampleattn_npy_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A file made of magic + version + header length + header text (padded as given) + `data_bytes` zeros.
  std::string raw_file(const std::string& name, const std::string& header, int major = 1, std::size_t data_bytes = 0,
                       const std::string& magic = "\x93NUMPY") const {
    std::string bytes = magic;
    bytes += static_cast<char>(major);
    bytes += '\0';
    const std::uint32_t n = static_cast<std::uint32_t>(header.size());
    bytes += static_cast<char>(n & 0xff);
    bytes += static_cast<char>((n >> 8) & 0xff);
    if (major >= 2) {
      bytes += static_cast<char>((n >> 16) & 0xff);
      bytes += static_cast<char>(n >> 24);
    }
    bytes += header;
    bytes.append(data_bytes, '\0');
    return write_bytes(name, bytes);
  }
  std::string write_bytes(const std::string& name, const std::string& bytes) const {
    const std::string p = path(name);
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  std::string error_of(const std::string& p, bool bf16 = false) const {
    try {
      io::read_npy(p, bf16);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  fs::path dir_;
};

std::string dict(const std::string& descr, const std::string& shape, const std::string& fortran = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }\n";
}

TEST_F(NpyTest, RoundTripEveryDtypeAndRank) {
  std::mt19937_64 rng(test::test_seed());
  std::normal_distribution<float> dist;
  const std::vector<std::vector<std::int64_t>> shapes = {{2, 3, 4, 5}, {1, 17, 3, 64}, {2, 4, 7}, {5}, {}};
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    for (const auto& shape : shapes) {
      std::int64_t n = 1;
      for (std::int64_t d : shape) n *= d;
      std::vector<std::uint8_t> data(static_cast<std::size_t>(n) * dtype_size(dtype));
      for (std::int64_t i = 0; i < n; ++i) core::store_element(data.data(), dtype, i, dist(rng));
      const std::string p = path("a.npy");
      io::write_npy(p, dtype, shape, data.data());
      EXPECT_EQ(fs::file_size(p) % 64, data.size() % 64) << "the data must start at a multiple of 64 bytes";
      const io::NpyArray a = io::read_npy(p, /*uint16_is_bf16=*/true);
      EXPECT_EQ(a.dtype, dtype);
      EXPECT_EQ(a.shape, shape);
      ASSERT_GE(a.data.size(), data.size());
      EXPECT_EQ(0, std::memcmp(a.data.data(), data.data(), data.size())) << to_string(dtype);
    }
  }
}

TEST_F(NpyTest, View4dHasTheShapeAndContiguousStrides) {
  std::vector<float> v(2 * 3 * 4 * 5, 1.0f);
  io::write_npy(path("q.npy"), DType::f32, {2, 3, 4, 5}, v.data());
  const io::NpyArray a = io::read_npy(path("q.npy"), false);
  const TensorView t = a.view4d("--q q.npy");
  EXPECT_EQ(t.shape, (std::array<std::int64_t, 4>{2, 3, 4, 5}));
  EXPECT_EQ(t.stride, (std::array<std::int64_t, 4>{60, 20, 5, 1}));
  io::write_npy(path("r.npy"), DType::f32, {6, 4, 5}, v.data());
  try {
    io::read_npy(path("r.npy"), false).view4d("--q r.npy");
    FAIL() << "a rank-3 array must not make a 4-D view";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "--q r.npy: expected 4 dimensions [batch, seq, heads, head_dim], got 3 (shape (6, 4, 5))");
  }
}

TEST_F(NpyTest, ReadsHandMadeVersionsAndByteOrders) {
  // v1, v2 and v3 headers, double quotes, no trailing comma, extra spaces.
  const float values[2] = {1.5f, -2.25f};
  std::string data(reinterpret_cast<const char*>(values), 8);
  for (int major : {1, 2, 3}) {
    const std::string p = raw_file("v" + std::to_string(major) + ".npy",
                                   "{\"descr\": \"<f4\",  \"shape\": (2,), \"fortran_order\": False}      \n", major);
    std::ofstream(p, std::ios::binary | std::ios::app).write(data.data(), 8);
    const io::NpyArray a = io::read_npy(p, false);
    EXPECT_EQ(a.shape, std::vector<std::int64_t>{2});
    EXPECT_EQ(core::load_element(a.data.data(), DType::f32, 1), -2.25f) << "version " << major;
  }
  // Big-endian float32 is byte-swapped on reading.
  std::string be;
  for (float f : values) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    for (int s = 24; s >= 0; s -= 8) be += static_cast<char>((bits >> s) & 0xff);
  }
  const std::string p = raw_file("be.npy", dict(">f4", "(2,)"));
  std::ofstream(p, std::ios::binary | std::ios::app).write(be.data(), 8);
  const io::NpyArray a = io::read_npy(p, false);
  EXPECT_EQ(core::load_element(a.data.data(), DType::f32, 0), 1.5f);
  EXPECT_EQ(core::load_element(a.data.data(), DType::f32, 1), -2.25f);
}

TEST_F(NpyTest, Uint16IsBfloat16OnlyWhenAsked) {
  const std::string p = raw_file("u2.npy", dict("<u2", "(1, 2, 1, 2)"), 1, 8);
  EXPECT_EQ(io::read_npy(p, true).dtype, DType::bf16);
  EXPECT_NE(error_of(p, false).find("dtype uint16 ('<u2') is only accepted as bfloat16 bit patterns: pass --bf16"),
            std::string::npos)
      << error_of(p, false);
}

TEST_F(NpyTest, EmptyArraysStillHaveAValidDataPointer) {
  const std::string p = raw_file("empty.npy", dict("<f4", "(1, 0, 2, 64)"));
  const io::NpyArray a = io::read_npy(p, false);
  EXPECT_EQ(a.elements(), 0);
  EXPECT_NE(a.view4d("q").data, nullptr);
}

TEST_F(NpyTest, BadFilesThrowNamingTheFileAndTheProblem) {
  struct Bad {
    std::string file, expected;
  };
  const std::vector<Bad> cases = {
      {path("missing.npy"), "missing.npy: cannot open: no such file"},
      {dir_.string(), ": cannot open: not a regular file"},
      {write_bytes("empty.npy", ""), "empty.npy: not a .npy file (0 bytes: too short for the magic string)"},
      {write_bytes("text.npy", "hello world, not numpy"), "text.npy: not a .npy file (bad magic string)"},
      {raw_file("ver.npy", dict("<f4", "(2,)"), 4, 8), "ver.npy: unsupported .npy format version 4.0"},
      {write_bytes("short_len.npy", std::string("\x93NUMPY\x01\x00\x10", 9)), "short_len.npy: truncated .npy header (no header length)"},
      {write_bytes("short_hdr.npy", std::string("\x93NUMPY\x01\x00\x40\x00{'descr'", 17)), "short_hdr.npy: truncated .npy header (header length 64"},
      {raw_file("garbage.npy", "this is not a dict\n"), "garbage.npy: bad .npy header at byte 0: expected '{'"},
      {raw_file("unterminated.npy", "{'descr': '<f4\n"), "bad .npy header at byte 10: unterminated string"},
      {raw_file("nokey.npy", "{'descr': '<f4', 'shape': (2,)}\n", 1, 8), "nokey.npy: bad .npy header at byte 31: missing key 'fortran_order'"},
      {raw_file("extrakey.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}\n", 1, 8), "unexpected key 'x'"},
      {raw_file("bool.npy", dict("<f4", "(2,)", "maybe"), 1, 8), "expected True or False"},
      {raw_file("neg.npy", dict("<f4", "(2, -3)"), 1, 8), "expected a non-negative integer dimension"},
      {raw_file("shape.npy", dict("<f4", "(2; 3)"), 1, 8), "expected ',' or ')' in shape"},
      {raw_file("huge_dim.npy", dict("<f4", "(99999999999999999999,)")), "dimension does not fit int64"},
      {raw_file("f8.npy", dict("<f8", "(2,)"), 1, 16), "f8.npy: unsupported dtype '<f8': expected float32 ('<f4'), float16 ('<f2') or uint16 holding bfloat16 ('<u2')"},
      {raw_file("i4.npy", dict("<i4", "(2,)"), 1, 8), "unsupported dtype '<i4'"},
      {raw_file("fortran.npy", dict("<f4", "(2, 2)", "True"), 1, 16), "fortran.npy: Fortran-order arrays are not supported"},
      {raw_file("trunc.npy", dict("<f4", "(2, 3, 4, 5)"), 1, 100), "trunc.npy: truncated .npy data: shape (2, 3, 4, 5) of float32 needs 480 bytes, the file holds 100"},
      {raw_file("long.npy", dict("<f2", "(1, 2, 1, 2)"), 1, 9), "long.npy: corrupt .npy file: 9 bytes of data after the header, but shape (1, 2, 1, 2) of float16 needs 8"},
      // A header that promises ~16 TB: refused from the file size, nothing is allocated.
      {raw_file("lying.npy", dict("<f4", "(1, 1048576, 32, 131072)"), 1, 64), "lying.npy: truncated .npy data: shape (1, 1048576, 32, 131072) of float32 needs 17592186044416 bytes, the file holds 64"},
      {raw_file("overflow.npy", dict("<f4", "(1099511627776, 1099511627776, 1, 1)"), 1, 64), "overflow.npy: shape (1099511627776, 1099511627776, 1, 1) is too large: its byte count overflows int64"},
      {raw_file("hugehdr.npy", "", 2), "hugehdr.npy: bad .npy header at byte 0: expected '{'"},
  };
  for (const Bad& c : cases) {
    const std::string msg = error_of(c.file);
    EXPECT_NE(msg.find(c.expected), std::string::npos) << "file " << c.file << "\n  got:      " << msg
                                                       << "\n  expected: " << c.expected;
  }
  // A header length field far beyond the file.
  std::string big("\x93NUMPY\x02\x00\xff\xff\xff\x7f{}", 14);
  EXPECT_NE(error_of(write_bytes("biglen.npy", big)).find("implausibly large"), std::string::npos);
}

// Random truncations and byte flips of a valid file: every read either succeeds or throws sampleattn::Error
// (run under a sanitizer build, this is where a parser overrun would show).
TEST_F(NpyTest, MutatedFilesNeverCrash) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> v(2 * 3 * 4 * 5, 0.25f);
  io::write_npy(path("good.npy"), DType::f32, {2, 3, 4, 5}, v.data());
  std::ifstream in(path("good.npy"), std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int errors = 0;
  for (int i = 0; i < 400; ++i) {
    std::string bytes = good;
    if (i % 2 == 0) {
      bytes.resize(rng() % bytes.size());
    } else {
      for (int f = 0; f < 1 + i % 4; ++f) bytes[rng() % 128] = static_cast<char>(rng());
    }
    const std::string p = write_bytes("mutated.npy", bytes);
    try {
      const io::NpyArray a = io::read_npy(p, true);
      EXPECT_EQ(static_cast<std::int64_t>(a.data.size()) >= a.elements() * static_cast<std::int64_t>(dtype_size(a.dtype)), true);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("mutated.npy"), std::string::npos) << e.what();
      ++errors;
    }
  }
  EXPECT_GT(errors, 200);
}

TEST_F(NpyTest, WriteToAnUnwritablePathThrows) {
  const float x = 1.0f;
  try {
    io::write_npy(path("no/such/dir/out.npy"), DType::f32, {1}, &x);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out.npy: cannot open for writing"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sampleattn
