// sampleattn::Error: the one exception type the library throws for bad input or a failed backend call.
// Messages name the argument and the values, e.g. "k.head_dim (96) must equal q.head_dim (128)".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sampleattn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}
}  // namespace detail

// SA_CHECK(cond, "message pieces", value, ...): throws sampleattn::Error when cond is false.
#define SA_CHECK(cond, ...)                      \
  do {                                           \
    if (!(cond)) ::sampleattn::detail::fail(__VA_ARGS__); \
  } while (0)

}  // namespace sampleattn
