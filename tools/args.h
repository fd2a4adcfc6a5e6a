// Command-line options of one subcommand: `--name value`, `--name=value` and bare switches, checked against
// the options the subcommand declares. Every problem (unknown option, missing or non-numeric value, value out
// of range, option given twice) throws sampleattn::Error with one line naming the option and the value;
// main() prints it and exits with code 2.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sampleattn::cli {

struct OptionSpec {
  std::string name;  // without the leading "--"
  bool takes_value;
};

class Args {
 public:
  Args(const std::string& command, const std::vector<std::string>& argv, const std::vector<OptionSpec>& spec);

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  bool help() const { return help_; }

  std::string text(const std::string& name, const std::string& fallback) const;
  std::string required(const std::string& name) const;
  // Real number in [lo, hi], the ends open when lo_open / hi_open; finite.
  double real(const std::string& name, double fallback, double lo, double hi, bool lo_open = false,
              bool hi_open = false) const;
  // Integer in [lo, hi]; a K or M suffix multiplies by 1024 or 1024^2 (sizes such as 16K).
  std::int64_t integer(const std::string& name, std::int64_t fallback, std::int64_t lo, std::int64_t hi) const;
  // Comma-separated integers, each in [lo, hi].
  std::vector<std::int64_t> integers(const std::string& name, const std::vector<std::int64_t>& fallback,
                                     std::int64_t lo, std::int64_t hi) const;
  // Comma-separated words, each one of `allowed`.
  std::vector<std::string> words(const std::string& name, const std::vector<std::string>& fallback,
                                 const std::vector<std::string>& allowed) const;

 private:
  std::int64_t parse_integer(const std::string& name, const std::string& value, std::int64_t lo,
                             std::int64_t hi) const;

  std::string command_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

}  // namespace sampleattn::cli
