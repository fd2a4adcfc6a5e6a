// Downstream use of the installed library: dense and sample attention on a small causal problem; the
// program fails unless alpha = 1 with a full window reproduces dense attention.
#include <sampleattn/api.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const int s = 64, h = 2, d = 16;
  std::vector<float> q(s * h * d), k(s * h * d), v(s * h * d), o1(s * h * d), o2(s * h * d);
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.37f * i);
    k[i] = std::cos(0.11f * i);
    v[i] = std::sin(0.05f * i + 1.0f);
  }
  using sampleattn::TensorView;
  using sampleattn::DType;
  auto view = [&](std::vector<float>& x) { return TensorView::contiguous(x.data(), DType::f32, 1, s, h, d); };
  sampleattn::SampleConfig cfg;
  cfg.alpha = 1.0;
  cfg.window_ratio = 1.0;
  sampleattn::dense_attention(view(q), view(k), view(v), view(o1));
  const auto sel = sampleattn::sample_attention(view(q), view(k), view(v), view(o2), nullptr, {}, cfg);
  double err = 0;
  for (std::size_t i = 0; i < o1.size(); ++i) err = std::fmax(err, std::fabs(o1[i] - o2[i]));
  std::printf("density %.3f max diff %.2e\n", sel.density(), err);
  return err < 1e-5 && sel.density() == 1.0 ? 0 : 1;
}
