// Option parsing for the CLI subcommands (args.h).
#include "args.h"

#include <charconv>
#include <cmath>
#include <sstream>

#include "sampleattn/error.h"

namespace sampleattn::cli {
namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = s.find(',', start);
    parts.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return parts;
    start = comma + 1;
  }
}

std::string range_text(double lo, double hi, bool lo_open, bool hi_open) {
  std::ostringstream os;
  os << (lo_open ? "(" : "[") << lo << ", " << hi << (hi_open ? ")" : "]");
  return os.str();
}

}  // namespace

Args::Args(const std::string& command, const std::vector<std::string>& argv, const std::vector<OptionSpec>& spec)
    : command_(command) {
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    SA_CHECK(a.size() > 2 && a.compare(0, 2, "--") == 0, "unexpected argument '", a, "' (options start with --; see sampleattn ",
             command_, " --help)");
    const std::size_t eq = a.find('=');
    const std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const OptionSpec* found = nullptr;
    for (const OptionSpec& s : spec) {
      if (s.name == name) found = &s;
    }
    SA_CHECK(found != nullptr, "unknown option '--", name, "' for sampleattn ", command_, " (see sampleattn ",
             command_, " --help)");
    SA_CHECK(values_.count(name) == 0, "option --", name, " is given more than once");
    if (!found->takes_value) {
      SA_CHECK(eq == std::string::npos, "option --", name, " takes no value (got '", a.substr(eq + 1), "')");
      values_.emplace(name, std::string(1, '1'));
    } else if (eq != std::string::npos) {
      values_[name] = a.substr(eq + 1);
    } else {
      SA_CHECK(i + 1 < argv.size(), "option --", name, " needs a value");
      values_[name] = argv[++i];
    }
    SA_CHECK(!found->takes_value || !values_[name].empty(), "option --", name, " needs a non-empty value");
  }
}

std::string Args::text(const std::string& name, const std::string& fallback) const {
  const auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string Args::required(const std::string& name) const {
  const auto it = values_.find(name);
  SA_CHECK(it != values_.end(), "sampleattn ", command_, " needs --", name, " (see sampleattn ", command_, " --help)");
  return it->second;
}

double Args::real(const std::string& name, double fallback, double lo, double hi, bool lo_open, bool hi_open) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  const std::string& v = it->second;
  double x = 0.0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  SA_CHECK(r.ec == std::errc() && r.ptr == v.data() + v.size() && std::isfinite(x), "--", name, " ('", v,
           "') is not a finite number");
  const bool ok = (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  SA_CHECK(ok, "--", name, " (", v, ") must be in ", range_text(lo, hi, lo_open, hi_open));
  return x;
}

std::int64_t Args::parse_integer(const std::string& name, const std::string& v, std::int64_t lo,
                                 std::int64_t hi) const {
  std::string digits = v;
  std::int64_t unit = 1;
  if (!digits.empty() && (digits.back() == 'K' || digits.back() == 'k')) unit = 1024;
  if (!digits.empty() && (digits.back() == 'M' || digits.back() == 'm')) unit = 1024 * 1024;
  if (unit != 1) digits.pop_back();
  std::int64_t x = 0;
  const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), x);
  SA_CHECK(r.ec != std::errc::result_out_of_range && !__builtin_mul_overflow(x, unit, &x), "--", name, " (", v,
           ") is too large: it overflows int64");
  SA_CHECK(r.ec == std::errc() && r.ptr == digits.data() + digits.size() && !digits.empty(), "--", name, " ('", v,
           "') is not an integer");
  SA_CHECK(x >= lo && x <= hi, "--", name, " (", v, ") must be in [", lo, ", ", hi, "]");
  return x;
}

std::int64_t Args::integer(const std::string& name, std::int64_t fallback, std::int64_t lo, std::int64_t hi) const {
  const auto it = values_.find(name);
  return it == values_.end() ? fallback : parse_integer(name, it->second, lo, hi);
}

std::vector<std::int64_t> Args::integers(const std::string& name, const std::vector<std::int64_t>& fallback,
                                         std::int64_t lo, std::int64_t hi) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  std::vector<std::int64_t> out;
  for (const std::string& part : split(it->second)) out.push_back(parse_integer(name, part, lo, hi));
  return out;
}

std::vector<std::string> Args::words(const std::string& name, const std::vector<std::string>& fallback,
                                     const std::vector<std::string>& allowed) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  std::vector<std::string> out;
  for (const std::string& part : split(it->second)) {
    bool ok = false;
    std::string list;
    for (const std::string& a : allowed) {
      ok = ok || a == part;
      list += (list.empty() ? "" : ", ") + a;
    }
    SA_CHECK(ok, "--", name, " ('", part, "') must be one of ", list);
    out.push_back(part);
  }
  return out;
}

}  // namespace sampleattn::cli
