// Building the 1-D weighted passes that resize and blur are made of.
#pragma once

#include <cstddef>
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
  // A blur at full size (n_out == n_in) also as its kernel's half from the
  // centre out, h[0] .. h[radius], for engines that fold mirrored taps:
  // output i = h[0] x[i] + sum_k h[k] (x[i - k] + x[i + k]), the input
  // mirror-reflected at the edges as in gaussian_pass. One evaluated at
  // every other sample (n_in == 2 n_out), whose centres lie between two
  // inputs, as the weights of its mirrored pairs from the centre out:
  // output i = sum_m h[m] (x[2 i - m] + x[2 i + 1 + m]). Empty otherwise.
  std::vector<float> half;

  PassView view() const { return {n_in, n_out, taps, start.data(), weights.data()}; }
};

// Antialiased resampling of n_in samples to n_out, with Pillow's geometry:
// output i is centred on input coordinate (i + 0.5) * n_in / n_out, and when
// downscaling the filter is stretched by the scale so that it also low-passes.
// Windows are clipped at the edges and renormalised.
Pass resize_pass(int n_in, int n_out, Filter filter);

// Gaussian of standard deviation `sigma`, truncated at gaussian_radius(sigma),
// with mirror-reflected edges (... c b a | a b c ...), evaluated at the centres
// of n_out samples spread over the n_in input samples (n_out == n_in: the
// plain blur; fewer: the blurred signal on a coarser grid).
Pass gaussian_pass(int n_in, int n_out, double sigma);
// The mirror reflection of sample i into 0 .. n - 1 (... c b a | a b c ...).
int reflect(int i, int n);
int gaussian_radius(double sigma);

// Cubic interpolation (Keys, a = -1/2) from n_in samples up to n_out, with
// the same geometry and mirror-reflected edges.
Pass cubic_pass(int n_in, int n_out);

// A pass rearranged for the CPU engine, which sweeps over its input once:
// input j, in order, adds its value times weights[(j - first) * slots + s]
// to running sum s. Outputs out_begin .. out_end - 1 are dealt to `groups`
// groups in turn (output i to group (i - out_begin) % groups), each group
// swept separately with its own table. Within a group, sum s belongs to the
// s-th output not yet finished; the q-th output of group g is finished once
// input group_ends(g)[q] - 1 has been added, and then sum 0 is written out
// and the others move down one. `slots` is the most windows of a group that
// overlap; more groups mean fewer slots (running sums the engine keeps in
// registers) at the price of more sweeps.
struct Sweep {
  int out_begin = 0, out_end = 0;
  int groups = 1, slots = 1;
  int first = 0, end = 0;      // inputs first .. end - 1 are swept
  int per_group = 0;           // outputs of the largest group, plus one
  std::vector<int> ends;       // groups * per_group; after a group's last: INT_MAX
  std::vector<float> weights;  // groups tables of (end - first) * slots

  const int* group_ends(int g) const { return &ends[static_cast<size_t>(g) * per_group]; }
  const float* group_weights(int g) const {
    return &weights[static_cast<size_t>(g) * (end - first) * slots];
  }
};

// The sweep of outputs out_begin .. out_end - 1 of `p` with at most
// max_slots running sums per group.
Sweep make_sweep(const PassView& p, int out_begin, int out_end, int max_slots);

// One separable stage: a horizontal and a vertical pass.
struct Stage {
  Pass horizontal, vertical;
};

// The stages of a Gaussian blur of a w x h image. A wide blur is evaluated on
// a grid coarser by a factor of about sigma / 3 and interpolated back: the
// blurred image has no detail the coarse grid cannot carry, and this is 2-6x
// less work (docs/kernels.md has the error analysis). That error, a third of
// an 8-bit level, is too much for 16-bit and float images: `coarse` false
// keeps every blur one exact stage.
std::vector<Stage> gaussian_stages(int w, int h, double sigma, bool coarse = true);

}  // namespace fi
