#include "support/row_check.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "sampleattn/error.h"

namespace sampleattn::test {

double rounding_error_ratio(const HostTensor& out, const HostTensor& ref, const std::vector<float>& lse,
                            const std::vector<float>& lse2, double unit_roundoff, double vmax) {
  const auto& sh = ref.shape();
  const std::size_t rows = static_cast<std::size_t>(sh[0] * sh[1] * sh[2]);
  if (out.shape() != sh || lse.size() != rows || lse2.size() != rows)
    throw Error("rounding_error_ratio: out, ref, lse and lse2 must describe the same rows");
  double worst = 0.0;
  for (std::int64_t b = 0; b < sh[0]; ++b) {
    for (std::int64_t h = 0; h < sh[2]; ++h) {
      for (std::int64_t s = 0; s < sh[1]; ++s) {
        const std::size_t row = static_cast<std::size_t>((b * sh[2] + h) * sh[1] + s);
        if (std::isinf(lse[row]) && lse[row] < 0) continue;
        const double spread = std::min(1.0, std::exp(0.5 * double(lse2[row]) - double(lse[row])));
        const double base = 6.0 * unit_roundoff * vmax * spread + 1e-6 * vmax;
        for (std::int64_t d = 0; d < sh[3]; ++d) {
          const double r = ref.at(b, s, h, d), x = out.at(b, s, h, d);
          const double err = std::fabs(x - r);
          if (!std::isfinite(err)) return std::numeric_limits<double>::infinity();
          worst = std::max(worst, err / (unit_roundoff * std::fabs(r) + base));
        }
      }
    }
  }
  return worst;
}

}  // namespace sampleattn::test
