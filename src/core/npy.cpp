// .npy reading and writing (npy.h). Format: magic "\x93NUMPY", major and minor version bytes, the header
// length (2 bytes little-endian in v1, 4 bytes in v2 and v3), then an ASCII (v3: UTF-8) Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces and ended by '\n', then
// the raw elements.
#include "core/npy.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sampleattn/error.h"

namespace sampleattn::io {
namespace {

static_assert(std::endian::native == std::endian::little, ".npy I/O assumes a little-endian host");

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;
constexpr std::uint32_t kMaxHeader = 1u << 20;  // NumPy itself refuses headers over 10 KB by default

// Recursive-descent reader of the header dict; errors name the file and the offending text.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& text) : path_(path), text_(text) {}

  void parse(std::string* descr, bool* fortran, std::vector<std::int64_t>* shape) {
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        *descr = string_literal();
        seen_descr = true;
      } else if (key == "fortran_order") {
        *fortran = boolean();
        seen_fortran = true;
      } else if (key == "shape") {
        *shape = tuple();
        seen_shape = true;
      } else {
        fail("unexpected key '", key, "'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      if (peek() != '}') fail("expected ',' or '}'");
    }
    ++pos_;
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the closing '}'");
    if (!seen_descr || !seen_fortran || !seen_shape) {
      fail("missing key '", !seen_descr ? "descr" : !seen_fortran ? "fortran_order" : "shape", "'");
    }
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    detail::fail(path_, ": bad .npy header at byte ", pos_, ": ", args..., " (header: ", printable(), ")");
  }
  std::string printable() const {
    std::string s;
    for (char c : text_.substr(0, 120)) s += (c >= 32 && c < 127) ? c : '?';
    return text_.size() > 120 ? s + "..." : s;
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) ++pos_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) fail("expected '", c, "'");
    ++pos_;
  }
  std::string string_literal() {
    skip_space();
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    const std::size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string::npos) fail("unterminated string");
    std::string s = text_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end + 1;
    return s;
  }
  bool boolean() {
    skip_space();
    if (text_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (text_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    fail("expected True or False");
  }
  std::vector<std::int64_t> tuple() {
    std::vector<std::int64_t> dims;
    expect('(');
    while (true) {
      skip_space();
      if (peek() == ')') break;
      if (peek() < '0' || peek() > '9') fail("expected a non-negative integer dimension");
      std::int64_t value = 0;
      while (peek() >= '0' && peek() <= '9') {
        if (__builtin_mul_overflow(value, std::int64_t{10}, &value) ||
            __builtin_add_overflow(value, std::int64_t{peek() - '0'}, &value)) {
          fail("dimension does not fit int64");
        }
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long suffix
      dims.push_back(value);
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      if (peek() != ')') fail("expected ',' or ')' in shape");
    }
    ++pos_;
    if (dims.size() > 32) fail("shape has ", dims.size(), " dimensions (NumPy allows at most 32)");
    return dims;
  }

  const std::string& path_;
  const std::string& text_;
  std::size_t pos_ = 0;
};

struct DescrInfo {
  DType dtype;
  bool swap;  // big-endian file data
};

DescrInfo parse_descr(const std::string& path, const std::string& descr, bool uint16_is_bf16) {
  if (descr.size() == 3 && (descr[0] == '<' || descr[0] == '>' || descr[0] == '=')) {
    const std::string t = descr.substr(1);
    const bool swap = descr[0] == '>';
    if (t == "f4") return {DType::f32, swap};
    if (t == "f2") return {DType::f16, swap};
    if (t == "u2") {
      if (uint16_is_bf16) return {DType::bf16, swap};
      detail::fail(path, ": dtype uint16 ('", descr,
                   "') is only accepted as bfloat16 bit patterns: pass --bf16 (or uint16_is_bf16) if that is what it holds");
    }
  }
  detail::fail(path, ": unsupported dtype '", descr,
               "': expected float32 ('<f4'), float16 ('<f2') or uint16 holding bfloat16 ('<u2'); convert with "
               "a.astype(numpy.float32)");
}

void byteswap(std::vector<std::uint8_t>& data, std::size_t item) {
  for (std::size_t i = 0; i + item <= data.size(); i += item) {
    for (std::size_t a = 0, b = item - 1; a < b; ++a, --b) std::swap(data[i + a], data[i + b]);
  }
}

}  // namespace

std::int64_t NpyArray::elements() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

TensorView NpyArray::view4d(const std::string& what) const {
  SA_CHECK(shape.size() == 4, what, ": expected 4 dimensions [batch, seq, heads, head_dim], got ", shape.size(),
           " (shape ", shape_string(shape), ")");
  return TensorView::contiguous(const_cast<std::uint8_t*>(data.data()), dtype, shape[0], shape[1], shape[2],
                                shape[3]);
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << (shape.size() == 1 ? ",)" : ")");
  return os.str();
}

NpyArray read_npy(const std::string& path, bool uint16_is_bf16) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  SA_CHECK(st.type() != std::filesystem::file_type::not_found, path, ": cannot open: no such file");
  SA_CHECK(!ec, path, ": cannot open: ", ec.message());
  SA_CHECK(std::filesystem::is_regular_file(st), path, ": cannot open: not a regular file");
  const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
  SA_CHECK(!ec, path, ": cannot read the file size: ", ec.message());
  std::ifstream in(path, std::ios::binary);
  SA_CHECK(in.good(), path, ": cannot open: ", std::strerror(errno));

  // Magic and version.
  unsigned char pre[kMagicLen + 2] = {};
  SA_CHECK(file_size >= sizeof(pre) && in.read(reinterpret_cast<char*>(pre), sizeof(pre)), path,
           ": not a .npy file (", file_size, " bytes: too short for the magic string)");
  SA_CHECK(std::memcmp(pre, kMagic, kMagicLen) == 0, path, ": not a .npy file (bad magic string)");
  const int major = pre[kMagicLen], minor = pre[kMagicLen + 1];
  SA_CHECK((major == 1 || major == 2 || major == 3) && minor == 0, path, ": unsupported .npy format version ",
           major, ".", minor, " (expected 1.0, 2.0 or 3.0)");

  // Header length and text.
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  unsigned char len_raw[4] = {};
  SA_CHECK(in.read(reinterpret_cast<char*>(len_raw), static_cast<std::streamsize>(len_bytes)), path,
           ": truncated .npy header (no header length)");
  std::uint32_t header_len = len_raw[0] | (len_raw[1] << 8);
  if (len_bytes == 4) header_len |= (static_cast<std::uint32_t>(len_raw[2]) << 16) | (static_cast<std::uint32_t>(len_raw[3]) << 24);
  const std::uintmax_t data_start = sizeof(pre) + len_bytes + header_len;
  SA_CHECK(header_len <= kMaxHeader, path, ": .npy header length ", header_len, " is implausibly large");
  SA_CHECK(data_start <= file_size, path, ": truncated .npy header (header length ", header_len, ", file size ",
           file_size, " bytes)");
  std::string header(header_len, '\0');
  SA_CHECK(in.read(header.data(), header_len), path, ": truncated .npy header");
  while (!header.empty() && (header.back() == '\n' || header.back() == ' ' || header.back() == '\0')) header.pop_back();

  std::string descr;
  bool fortran = false;
  NpyArray a;
  HeaderParser(path, header).parse(&descr, &fortran, &a.shape);
  const DescrInfo info = parse_descr(path, descr, uint16_is_bf16);
  a.dtype = info.dtype;
  SA_CHECK(!fortran, path, ": Fortran-order arrays are not supported (save with numpy.ascontiguousarray)");

  // Byte count from the shape, with overflow checks, compared with the file before allocating.
  std::int64_t bytes = static_cast<std::int64_t>(dtype_size(a.dtype));
  for (std::int64_t d : a.shape) {
    SA_CHECK(!__builtin_mul_overflow(bytes, d, &bytes), path, ": shape ", shape_string(a.shape),
             " is too large: its byte count overflows int64");
  }
  const std::uintmax_t have = file_size - data_start;
  SA_CHECK(have >= static_cast<std::uintmax_t>(bytes), path, ": truncated .npy data: shape ", shape_string(a.shape),
           " of ", to_string(a.dtype), " needs ", bytes, " bytes, the file holds ", have);
  SA_CHECK(have == static_cast<std::uintmax_t>(bytes), path, ": corrupt .npy file: ", have,
           " bytes of data after the header, but shape ", shape_string(a.shape), " of ", to_string(a.dtype),
           " needs ", bytes);

  // At least 8 bytes so that an empty array still has a valid data pointer (the API reports the empty axis).
  a.data.assign(static_cast<std::size_t>(std::max<std::int64_t>(bytes, 8)), 0);
  SA_CHECK(in.read(reinterpret_cast<char*>(a.data.data()), bytes), path, ": read error in the .npy data");
  if (info.swap) byteswap(a.data, dtype_size(a.dtype));
  return a;
}

void write_npy(const std::string& path, DType dtype, const std::vector<std::int64_t>& shape, const void* data) {
  const char* descr = dtype == DType::f32 ? "<f4" : dtype == DType::f16 ? "<f2" : "<u2";
  std::int64_t bytes = static_cast<std::int64_t>(dtype_size(dtype));
  for (std::int64_t d : shape) {
    SA_CHECK(d >= 0 && !__builtin_mul_overflow(bytes, d, &bytes), path, ": cannot write shape ", shape_string(shape));
  }
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " +
                       shape_string(shape) + ", }";
  // Pad with spaces so that the data starts at a multiple of 64 bytes, then end with '\n'.
  const bool v2 = header.size() + 1 + kMagicLen + 4 > 65535;
  const std::size_t prefix = kMagicLen + 2 + (v2 ? 4 : 2);
  const std::size_t total = (prefix + header.size() + 1 + 63) / 64 * 64;
  header.append(total - prefix - header.size() - 1, ' ');
  header += '\n';

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  SA_CHECK(out.good(), path, ": cannot open for writing: ", std::strerror(errno));
  const std::uint32_t n = static_cast<std::uint32_t>(header.size());
  const unsigned char ver[2] = {static_cast<unsigned char>(v2 ? 2 : 1), 0};
  const unsigned char len[4] = {static_cast<unsigned char>(n & 0xff), static_cast<unsigned char>((n >> 8) & 0xff),
                                static_cast<unsigned char>((n >> 16) & 0xff), static_cast<unsigned char>(n >> 24)};
  out.write(kMagic, kMagicLen);
  out.write(reinterpret_cast<const char*>(ver), 2);
  out.write(reinterpret_cast<const char*>(len), v2 ? 4 : 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), bytes);
  out.close();
  SA_CHECK(!out.fail(), path, ": write failed (disk full or not writable?)");
}

}  // namespace sampleattn::io
