#include "passes.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>

namespace fi {
namespace {

constexpr double kPi = 3.14159265358979323846;

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= kPi;
  return std::sin(x) / x;
}

// Keys' cubic convolution kernel with a = -1/2 (Pillow's bicubic).
double keys_cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Filter kernels and their supports, as Pillow defines them.
double filter_support(Filter f) {
  switch (f) {
    case Filter::Box: return 0.5;
    case Filter::Bilinear: return 1.0;
    case Filter::Bicubic: return 2.0;
    case Filter::Lanczos3: return 3.0;
  }
  throw std::invalid_argument("unknown filter");
}

double filter_value(Filter f, double x) {
  switch (f) {
    case Filter::Box: return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    case Filter::Bilinear: return std::max(0.0, 1.0 - std::fabs(x));
    case Filter::Bicubic: return keys_cubic(x);
    case Filter::Lanczos3: return (x > -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
  }
  throw std::invalid_argument("unknown filter");
}

// Turns per-output windows of varying length into the fixed-width, in-range
// form of PassView: every window becomes `taps` long, shifted left where it
// would run past the end, and zero-padded.
Pass pack(int n_in, const std::vector<int>& first, const std::vector<std::vector<double>>& w) {
  Pass p;
  p.n_in = n_in;
  p.n_out = static_cast<int>(first.size());
  for (const auto& row : w) p.taps = std::max(p.taps, static_cast<int>(row.size()));
  p.start.resize(p.n_out);
  p.weights.assign(static_cast<size_t>(p.n_out) * p.taps, 0.0f);
  for (int i = 0; i < p.n_out; ++i) {
    const int s = std::min(first[i], n_in - p.taps);
    p.start[i] = s;
    double sum = 0.0;
    for (double v : w[i]) sum += v;
    for (size_t k = 0; k < w[i].size(); ++k)
      p.weights[static_cast<size_t>(i) * p.taps + (first[i] - s) + k] =
          static_cast<float>(sum != 0.0 ? w[i][k] / sum : 0.0);
  }
  return p;
}

// Output i of n_out sits at input coordinate c = (i + 1/2) * n_in / n_out - 1/2
// (in input sample indices) and takes sum_k kernel(k - c) * input[reflect(k)]
// over |k - c| <= radius, normalised.
template <class Kernel>
Pass sampled_pass(int n_in, int n_out, double radius, Kernel kernel) {
  if (n_in <= 0 || n_out <= 0) throw std::invalid_argument("sizes must be positive");
  const double scale = static_cast<double>(n_in) / n_out;
  std::vector<int> first(n_out);
  std::vector<std::vector<double>> w(n_out);
  std::vector<std::pair<int, double>> taps;
  for (int i = 0; i < n_out; ++i) {
    const double c = (i + 0.5) * scale - 0.5;
    taps.clear();
    int lo = n_in, hi = -1;
    for (int k = static_cast<int>(std::ceil(c - radius)); k <= c + radius; ++k) {
      const int j = reflect(k, n_in);
      taps.emplace_back(j, kernel(k - c));
      lo = std::min(lo, j);
      hi = std::max(hi, j);
    }
    first[i] = lo;
    w[i].assign(hi - lo + 1, 0.0);
    for (const auto& [j, v] : taps) w[i][j - lo] += v;
  }
  return pack(n_in, first, w);
}

}  // namespace

int reflect(int i, int n) {
  const int period = 2 * n;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - 1 - i;
}

Pass resize_pass(int n_in, int n_out, Filter filter) {
  if (n_in <= 0 || n_out <= 0) throw std::invalid_argument("sizes must be positive");
  const double scale = static_cast<double>(n_in) / n_out;
  const double stretch = std::max(scale, 1.0);
  const double support = filter_support(filter) * stretch;
  std::vector<int> first(n_out);
  std::vector<std::vector<double>> w(n_out);
  for (int i = 0; i < n_out; ++i) {
    const double centre = (i + 0.5) * scale;
    const int lo = std::max(static_cast<int>(centre - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(centre + support + 0.5), n_in);
    first[i] = lo;
    for (int j = lo; j < hi; ++j)
      w[i].push_back(filter_value(filter, (j - centre + 0.5) / stretch));
  }
  return pack(n_in, first, w);
}

int gaussian_radius(double sigma) { return std::max(1, static_cast<int>(std::ceil(3.0 * sigma))); }

Pass gaussian_pass(int n_in, int n_out, double sigma) {
  if (!(sigma > 0.0)) throw std::invalid_argument("sigma must be positive");
  const auto kernel = [sigma](double x) { return std::exp(-0.5 * (x / sigma) * (x / sigma)); };
  const int radius = gaussian_radius(sigma);
  Pass p = sampled_pass(n_in, n_out, radius, kernel);
  if (n_out == n_in) {
    double sum = kernel(0.0);
    for (int k = 1; k <= radius; ++k) sum += 2.0 * kernel(k);
    for (int k = 0; k <= radius; ++k) p.half.push_back(static_cast<float>(kernel(k) / sum));
  } else if (n_in == 2 * n_out) {
    // Centres at 2 i + 1/2: the inputs within the radius pair up around them.
    double sum = 0.0;
    for (int m = 0; m < radius; ++m) sum += 2.0 * kernel(m + 0.5);
    for (int m = 0; m < radius; ++m) p.half.push_back(static_cast<float>(kernel(m + 0.5) / sum));
  }
  return p;
}

Pass cubic_pass(int n_in, int n_out) { return sampled_pass(n_in, n_out, 2.0, keys_cubic); }

Sweep make_sweep(const PassView& p, int out_begin, int out_end, int max_slots) {
  Sweep s;
  s.out_begin = out_begin;
  s.out_end = out_end;
  const int n = out_end - out_begin;
  if (n <= 0) return s;
  // Each output's window without its zero weights at either end, then
  // widened (with zeros) so that starts and ends never decrease: outputs then
  // finish in order, and a slot's next output starts after its last one ends.
  std::vector<int> a(n), b(n);
  for (int i = 0; i < n; ++i) {
    const float* w = p.weights + static_cast<size_t>(out_begin + i) * p.taps;
    int lo = 0, hi = p.taps;
    while (lo < hi && w[lo] == 0.0f) ++lo;
    while (hi > lo && w[hi - 1] == 0.0f) --hi;
    if (lo == hi) hi = lo + 1;  // an all-zero output still needs a slot
    a[i] = p.start[out_begin + i] + lo;
    b[i] = p.start[out_begin + i] + hi;
  }
  for (int i = n - 2; i >= 0; --i) a[i] = std::min(a[i], a[i + 1]);
  for (int i = 1; i < n; ++i) b[i] = std::max(b[i], b[i - 1]);
  s.first = a[0];
  s.end = b[n - 1];
  // The fewest groups whose windows overlap at most max_slots deep. With
  // monotone windows, the deepest overlap is at some window's start.
  for (s.groups = 1;; ++s.groups) {
    int deepest = 1;
    for (int g = 0; g < s.groups && g < n; ++g)
      for (int i = g, oldest = g; i < n; i += s.groups) {
        while (b[oldest] <= a[i]) oldest += s.groups;
        deepest = std::max(deepest, (i - oldest) / s.groups + 1);
      }
    if (deepest <= max_slots || s.groups >= n) {
      s.slots = deepest;
      break;
    }
  }
  s.per_group = (n + s.groups - 1) / s.groups + 1;
  s.ends.assign(static_cast<size_t>(s.groups) * s.per_group, INT_MAX);
  for (int i = 0; i < n; ++i)
    s.ends[static_cast<size_t>(i % s.groups) * s.per_group + i / s.groups] = b[i];
  const int len = s.end - s.first;
  s.weights.assign(static_cast<size_t>(s.groups) * len * s.slots, 0.0f);
  std::vector<int> oldest(len);  // per input, the group's first unfinished output
  for (int g = 0; g < s.groups; ++g) {
    const int* ends = s.group_ends(g);
    for (int j = 0, q = 0; j < len; ++j) {
      while (ends[q] <= s.first + j) ++q;
      oldest[j] = q;
    }
    float* table = &s.weights[static_cast<size_t>(g) * len * s.slots];
    for (int i = g, q = 0; i < n; i += s.groups, ++q) {
      const float* w = p.weights + static_cast<size_t>(out_begin + i) * p.taps;
      const int start = p.start[out_begin + i] - s.first;
      for (int k = 0; k < p.taps; ++k)
        if (w[k] != 0.0f)
          table[static_cast<size_t>(start + k) * s.slots + (q - oldest[start + k])] = w[k];
    }
  }
  return s;
}

std::vector<Stage> gaussian_stages(int w, int h, double sigma, bool coarse) {
  // sigma / factor >= 3 coarse samples keeps the interpolation error under a
  // third of a level (measured on photos, noise and hard edges).
  const int factor = static_cast<int>(sigma / 3.0);
  if (factor < 2 || !coarse) return {{gaussian_pass(w, w, sigma), gaussian_pass(h, h, sigma)}};
  const int cw = (w + factor - 1) / factor, ch = (h + factor - 1) / factor;
  std::vector<Stage> stages;
  stages.push_back({gaussian_pass(w, cw, sigma), gaussian_pass(h, ch, sigma)});
  stages.push_back({cubic_pass(cw, w), cubic_pass(ch, h)});
  return stages;
}

}  // namespace fi
