// Selection JSON writer and reader (selection_json.h). The reader is a small recursive-descent JSON parser
// into a generic value tree (enough JSON for this format and for hand-edited files: objects, arrays,
// numbers, strings with escapes, true / false / null), then a typed walk over that tree.
#include "core/selection_json.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>

#include "sampleattn/error.h"

namespace sampleattn::io {
namespace {

void append_double(std::string& out, double x) {
  if (!std::isfinite(x)) {
    out += "null";
    return;
  }
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), x);
  out.append(buf, r.ptr);
}

void append_int(std::string& out, std::int64_t x) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof(buf), x);
  out.append(buf, r.ptr);
}

struct Value {
  enum class Kind { null, boolean, number, string, array, object } kind = Kind::null;
  bool b = false;
  double num = 0.0;
  bool is_int = false;  // the number was written as an integer that fits int64
  std::int64_t integer = 0;
  std::string str;
  std::vector<Value> items;
  std::map<std::string, Value> fields;
};

class Parser {
 public:
  Parser(const std::string& text, const std::string& what) : text_(text), what_(what) {}

  Value parse_document() {
    Value v = value(0);
    space();
    if (pos_ != text_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    std::int64_t line = 1;
    for (std::size_t i = 0; i < pos_ && i < text_.size(); ++i) line += text_[i] == '\n';
    detail::fail(what_, ": invalid JSON at line ", line, " (byte ", pos_, "): ", args...);
  }
  void space() {
    while (pos_ < text_.size() && std::strchr(" \t\r\n", text_[pos_]) != nullptr && text_[pos_] != '\0') ++pos_;
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  // After an element of an object or array: true at ',' (another element follows), false at `close` (the
  // container ends); either is consumed. Anything else is an error.
  bool another_element(char close) {
    space();
    if (peek() == ',') {
      ++pos_;
      return true;
    }
    if (peek() != close) fail("expected ',' or '", close, "'");
    ++pos_;
    return false;
  }
  bool literal(const char* word) {
    const std::size_t n = std::strlen(word);
    if (text_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }

  Value value(int depth) {
    if (depth > 64) fail("nesting deeper than 64 levels");
    space();
    Value v;
    const char c = peek();
    if (c == '{') {
      v.kind = Value::Kind::object;
      ++pos_;
      space();
      if (peek() == '}') {
        ++pos_;
        return v;
      }
      while (true) {
        space();
        if (peek() != '"') fail("expected a quoted key");
        std::string key = string_body();
        space();
        if (peek() != ':') fail("expected ':' after key \"", key, "\"");
        ++pos_;
        v.fields[key] = value(depth + 1);
        if (!another_element('}')) return v;
      }
    }
    if (c == '[') {
      v.kind = Value::Kind::array;
      ++pos_;
      space();
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      while (true) {
        v.items.push_back(value(depth + 1));
        if (!another_element(']')) return v;
      }
    }
    if (c == '"') {
      v.kind = Value::Kind::string;
      v.str = string_body();
      return v;
    }
    if (literal("true")) {
      v.kind = Value::Kind::boolean;
      v.b = true;
      return v;
    }
    if (literal("false")) {
      v.kind = Value::Kind::boolean;
      return v;
    }
    if (literal("null")) return v;
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    fail("unexpected character '", c == '\0' ? std::string("end of input") : std::string(1, c), "'");
  }

  Value number() {
    const std::size_t start = pos_;
    if (peek() == '-') ++pos_;
    bool integral = true;
    while (pos_ < text_.size() && std::strchr("0123456789.eE+-", text_[pos_]) != nullptr && text_[pos_] != '\0') {
      if (std::strchr(".eE", text_[pos_]) != nullptr) integral = false;
      ++pos_;
    }
    Value v;
    v.kind = Value::Kind::number;
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    const auto r = std::from_chars(first, last, v.num);
    if (r.ec != std::errc() || r.ptr != last) fail("malformed number '", std::string(first, last), "'");
    if (integral) {
      const auto ri = std::from_chars(first, last, v.integer);
      v.is_int = ri.ec == std::errc() && ri.ptr == last;
    }
    return v;
  }

  std::string string_body() {
    ++pos_;  // opening quote
    std::string s;
    while (true) {
      if (pos_ >= text_.size()) fail("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return s;
      if (c != '\\') {
        s += c;
        continue;
      }
      if (pos_ >= text_.size()) fail("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': s += e; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': {
          if (pos_ + 4 > text_.size()) fail("short \\u escape");
          unsigned code = 0;
          const auto r = std::from_chars(text_.data() + pos_, text_.data() + pos_ + 4, code, 16);
          if (r.ec != std::errc() || r.ptr != text_.data() + pos_ + 4) fail("bad \\u escape");
          pos_ += 4;
          s += code < 128 ? static_cast<char>(code) : '?';  // only ASCII matters in this format
          break;
        }
        default: fail("bad escape '\\", e, "'");
      }
    }
  }

  const std::string& text_;
  const std::string& what_;
  std::size_t pos_ = 0;
};

// Typed access with messages that name the field.
class Reader {
 public:
  explicit Reader(const std::string& what) : what_(what) {}

  const Value& field(const Value& obj, const std::string& key, const std::string& where) const {
    SA_CHECK(obj.kind == Value::Kind::object, what_, ": ", where, " must be a JSON object");
    const auto it = obj.fields.find(key);
    SA_CHECK(it != obj.fields.end(), what_, ": ", where, " has no \"", key, "\"");
    return it->second;
  }
  std::int64_t integer(const Value& obj, const std::string& key, const std::string& where) const {
    const Value& v = field(obj, key, where);
    SA_CHECK(v.kind == Value::Kind::number && v.is_int, what_, ": ", where, ".", key, " must be an integer");
    return v.integer;
  }
  double real(const Value& obj, const std::string& key, const std::string& where, double fallback) const {
    const auto it = obj.fields.find(key);
    if (it == obj.fields.end() || it->second.kind == Value::Kind::null) return fallback;
    SA_CHECK(it->second.kind == Value::Kind::number, what_, ": ", where, ".", key, " must be a number");
    return it->second.num;
  }
  bool boolean(const Value& obj, const std::string& key, const std::string& where) const {
    const Value& v = field(obj, key, where);
    SA_CHECK(v.kind == Value::Kind::boolean, what_, ": ", where, ".", key, " must be true or false");
    return v.b;
  }

 private:
  const std::string& what_;
};

}  // namespace

std::string selection_to_json(const Selection& s) {
  std::string out;
  out.reserve(256 + s.indices.size() * 7 + s.window.size() * 200);
  out += "{\"format\": \"sampleattn.selection\", \"version\": 1,\n \"batch\": ";
  append_int(out, s.batch);
  out += ", \"heads\": ";
  append_int(out, s.heads);
  out += ", \"seq_q\": ";
  append_int(out, s.seq_q);
  out += ", \"seq_k\": ";
  append_int(out, s.seq_k);
  out += ", \"causal\": ";
  out += s.causal ? "true" : "false";
  out += ", \"dense_tail\": ";
  append_int(out, s.dense_tail);
  out += ",\n \"density\": ";
  append_double(out, s.density());
  out += ", \"min_sampled_coverage\": ";
  append_double(out, s.min_sampled_coverage());
  out += ",\n \"per_head\": [";
  const std::int64_t n = s.num_heads_total();
  for (std::int64_t bh = 0; bh < n; ++bh) {
    const HeadStats st = bh < static_cast<std::int64_t>(s.stats.size()) ? s.stats[bh] : HeadStats{};
    out += bh ? ",\n  {\"batch\": " : "\n  {\"batch\": ";
    append_int(out, bh / s.heads);
    out += ", \"head\": ";
    append_int(out, bh % s.heads);
    out += ", \"window\": ";
    append_int(out, s.window[bh]);
    out += ", \"kept_columns\": ";
    append_int(out, st.kept_columns);
    out += ", \"kept_entries\": ";
    append_int(out, st.kept_entries);
    out += ", \"visible_entries\": ";
    append_int(out, st.visible_entries);
    out += ", \"density\": ";
    append_double(out, st.density);
    out += ", \"sampled_coverage\": ";
    append_double(out, st.sampled_coverage);
    out += ",\n   \"indices\": [";
    for (std::int64_t i = s.offsets[bh]; i < s.offsets[bh + 1]; ++i) {
      if (i > s.offsets[bh]) out += ", ";
      append_int(out, s.indices[i]);
    }
    out += "]}";
  }
  out += "\n ]}\n";
  return out;
}

void write_selection_json(const std::string& path, const Selection& selection) {
  const std::string text = selection_to_json(selection);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  SA_CHECK(out.good(), path, ": cannot open for writing: ", std::strerror(errno));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  SA_CHECK(!out.fail(), path, ": write failed (disk full or not writable?)");
}

Selection selection_from_json(const std::string& text, const std::string& what) {
  const Value root = Parser(text, what).parse_document();
  const Reader rd(what);
  const Value& format = rd.field(root, "format", "the top level");
  SA_CHECK(format.kind == Value::Kind::string && format.str == "sampleattn.selection", what,
           ": \"format\" must be \"sampleattn.selection\"");
  const std::int64_t version = rd.integer(root, "version", "the top level");
  SA_CHECK(version == 1, what, ": unsupported selection version ", version, " (expected 1)");

  Selection s;
  s.batch = rd.integer(root, "batch", "the top level");
  s.heads = rd.integer(root, "heads", "the top level");
  s.seq_q = rd.integer(root, "seq_q", "the top level");
  s.seq_k = rd.integer(root, "seq_k", "the top level");
  s.causal = rd.boolean(root, "causal", "the top level");
  s.dense_tail = rd.integer(root, "dense_tail", "the top level");
  SA_CHECK(s.batch > 0 && s.heads > 0 && s.batch <= (std::int64_t{1} << 31) / s.heads, what, ": batch (", s.batch,
           ") and heads (", s.heads, ") must be > 0 and not absurdly large");
  SA_CHECK(s.seq_k > 0 && s.seq_k <= INT32_MAX, what, ": seq_k (", s.seq_k, ") must be in [1, 2^31)");

  const Value& heads = rd.field(root, "per_head", "the top level");
  const std::int64_t n = s.batch * s.heads;
  SA_CHECK(heads.kind == Value::Kind::array && static_cast<std::int64_t>(heads.items.size()) == n, what,
           ": \"per_head\" must be an array of batch * heads = ", n, " entries");
  s.window.assign(static_cast<std::size_t>(n), 0);
  s.offsets.assign(static_cast<std::size_t>(n + 1), 0);
  s.stats.assign(static_cast<std::size_t>(n), HeadStats{});
  for (std::int64_t bh = 0; bh < n; ++bh) {
    const Value& e = heads.items[bh];
    const std::string where = "per_head[" + std::to_string(bh) + "]";
    const std::int64_t b = rd.integer(e, "batch", where), h = rd.integer(e, "head", where);
    SA_CHECK(b == bh / s.heads && h == bh % s.heads, what, ": ", where, " is (batch ", b, ", head ", h,
             "), expected (batch ", bh / s.heads, ", head ", bh % s.heads, "): entries go in (batch, head) order");
    s.window[bh] = rd.integer(e, "window", where);
    // null (how a NaN is written) or absent: not known, NaN.
    const double coverage = rd.real(e, "sampled_coverage", where, std::numeric_limits<double>::quiet_NaN());
    SA_CHECK(std::isnan(coverage) || (coverage >= 0.0 && coverage <= 1.0 + 1e-9), what, ": ", where,
             ".sampled_coverage (", coverage, ") must be in [0, 1] or null");
    s.stats[bh].sampled_coverage = coverage;
    const Value& idx = rd.field(e, "indices", where);
    SA_CHECK(idx.kind == Value::Kind::array, what, ": ", where, ".indices must be an array");
    for (const Value& x : idx.items) {
      SA_CHECK(x.kind == Value::Kind::number && x.is_int && x.integer >= 0 && x.integer < s.seq_k, what, ": ",
               where, ".indices must hold integers in [0, seq_k = ", s.seq_k, ")");
      s.indices.push_back(static_cast<std::int32_t>(x.integer));
    }
    s.offsets[bh + 1] = static_cast<std::int64_t>(s.indices.size());
  }
  try {
    s.validate();
  } catch (const Error& e) {
    detail::fail(what, ": ", e.what());
  }
  s.recompute_counts();
  return s;
}

Selection read_selection_json(const std::string& path) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  SA_CHECK(st.type() != std::filesystem::file_type::not_found, path, ": cannot open: no such file");
  SA_CHECK(std::filesystem::is_regular_file(st), path, ": cannot open: not a regular file");
  std::ifstream in(path, std::ios::binary);
  SA_CHECK(in.good(), path, ": cannot open: ", std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return selection_from_json(text, path);
}

}  // namespace sampleattn::io
