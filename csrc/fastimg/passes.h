// Building the 1-D weighted passes that resize and blur are made of.
#pragma once

#include <vector>

#include "pixel.h"

namespace fi {

enum class Filter { Box, Bilinear, Bicubic, Lanczos3 };

// Host-side owner of a PassView's arrays.
struct Pass {
  int n_in = 0;
  int n_out = 0;
  int taps = 0;
  std::vector<int> start;
  std::vector<float> weights;  // n_out * taps, each row sums to 1

  PassView view() const { return {n_in, n_out, taps, start.data(), weights.data()}; }
};

// Antialiased resampling of n_in samples to n_out, with Pillow's geometry:
// output i is centred on input coordinate (i + 0.5) * n_in / n_out, and when
// downscaling the filter is stretched by the scale so that it also low-passes.
// Windows are clipped at the edges and renormalised.
Pass resize_pass(int n_in, int n_out, Filter filter);

// Gaussian of standard deviation `sigma`, truncated at gaussian_radius(sigma),
// with mirror-reflected edges (... c b a | a b c ...).
Pass gaussian_pass(int n, double sigma);
int gaussian_radius(double sigma);

}  // namespace fi
