// Per-pixel formulas shared by the CPU loops (cpu.cpp) and the CUDA kernels
// (cuda_kernels.cu). Each formula exists once, here; the drivers only decide which
// pixel each call works on.
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define FI_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Always inlined: the CPU engine is compiled once per instruction set, and a
// formula left out of line would run with the baseline's instructions.
#define FI_HD __attribute__((always_inline)) inline
#else
#define FI_HD inline
#endif

namespace fi {

// One 1-D weighted pass (a resize axis or a blur axis), in a form a kernel can
// read: output i is sum_k weights[i * taps + k] * input[start[i] + k].
// Every window lies inside the input: edge handling (Pillow-style clipping for
// resize, mirror reflection for blur) is folded into the weights beforehand.
struct PassView {
  int n_in;
  int n_out;
  int taps;
  const int* start;
  const float* weights;
};

// The formulas below that take a `T` are written once for two kinds of
// value: a float (the CUDA kernels, one pixel per thread) and a GCC vector of
// floats (the CPU driver, 16 pixels at once). Only arithmetic, comparisons and
// `?:` are used, which both kinds support elementwise.

// The pixel types of images: a channel value of full intensity (alpha's 1)
// is 255, 65535 or 1.0. Integer results are clamped to 0..full and rounded;
// float results are neither (high dynamic range, and the undershoot of a
// filter's negative lobes, stay), except alpha, clamped to 0..1.
template <class Px>
struct Full;
template <>
struct Full<uint8_t> {
  static constexpr float value = 255.0f;
};
template <>
struct Full<uint16_t> {
  static constexpr float value = 65535.0f;
};
template <>
struct Full<float> {
  static constexpr float value = 1.0f;
};

// RGBA is resampled premultiplied, so that transparent pixels carry no colour
// into their neighbours. (A multiply, not a divide by full: a vector divide
// costs as much as the rest of the pass's loads.)
template <class T, class Px = uint8_t>
FI_HD T premultiply(T colour, T alpha) {
  return colour * alpha * (1.0f / Full<Px>::value);
}

// Reads pixel `p` of an image of Px as float, premultiplied.
template <int C, class Px>
FI_HD void load_px(const Px* p, float px[C]) {
  if (C == 4) {
    const float a = p[3];
    for (int c = 0; c < 3; ++c) px[c] = premultiply<float, Px>(p[c], a);
    px[3] = a;
  } else {
    for (int c = 0; c < C; ++c) px[c] = p[c];
  }
}

template <int C>
FI_HD void load_u8(const uint8_t* p, float px[C]) {
  load_px<C, uint8_t>(p, px);
}

template <int C>
FI_HD void load_f32(const float* p, float px[C]) {
  for (int c = 0; c < C; ++c) px[c] = p[c];
}

// The weighted sum of one output pixel. `Src` is any object with
// `load(i, px)`: 8-bit or float pixels, host or device memory. `w[k]` is the
// weight of tap k: a pointer to the output's row of the table, or a view of a
// table stored tap-major.
template <int C, class Src, class Weights>
FI_HD void weighted_sum(const Src& src, int start, const Weights& w, int taps, float acc[C]) {
  for (int c = 0; c < C; ++c) acc[c] = 0.0f;
  for (int k = 0; k < taps; ++k) {
    float px[C];
    src.load(start + k, px);
    for (int c = 0; c < C; ++c) acc[c] += w[k] * px[c];
  }
}

// `v` clamped to 0..full, plus 1/2: truncating the result rounds half up.
template <class T, class Px = uint8_t>
FI_HD T rounding_point(T v) {
  constexpr float full = Full<Px>::value;
  v = v < 0.0f ? 0.0f : v;
  v = v > full ? full : v;
  return v + 0.5f;
}

// One accumulated pixel as the values whose truncation gives its integer
// channels, undoing the premultiplication for RGBA. A pixel whose alpha rounds
// to 0 becomes transparent black. (Lanes of a vector that take that branch may
// divide by zero; the select discards what they computed.)
template <int C, class T, class Px = uint8_t>
FI_HD void finish(const T px[C], T out[C]) {
  constexpr float full = Full<Px>::value;
  if (C == 4) {
    const T a = rounding_point<T, Px>(px[3]);
    const T alpha = px[3] > full ? full : px[3];
    for (int c = 0; c < 3; ++c)
      out[c] = a < 1.0f ? 0.0f : rounding_point<T, Px>(px[c] * full / alpha);
    out[3] = a;
  } else {
    for (int c = 0; c < C; ++c) out[c] = rounding_point<T, Px>(px[c]);
  }
}

// One accumulated pixel written as Px. Float RGBA: alpha clamped to 0..1, the
// colour of a pixel with alpha 0 black.
template <int C, class Px>
FI_HD void store_px(const float px[C], Px* p) {
  if constexpr (std::is_same_v<Px, float>) {
    if (C == 4) {
      const float a = px[3] < 0.0f ? 0.0f : (px[3] > 1.0f ? 1.0f : px[3]);
      for (int c = 0; c < 3; ++c) p[c] = a > 0.0f ? px[c] / a : 0.0f;
      p[3] = a;
    } else {
      for (int c = 0; c < C; ++c) p[c] = px[c];
    }
  } else {
    float out[C];
    finish<C, float, Px>(px, out);
    for (int c = 0; c < C; ++c) p[c] = static_cast<Px>(out[c]);
  }
}

template <int C>
FI_HD void store_u8(const float px[C], uint8_t* p) {
  store_px<C, uint8_t>(px, p);
}

// Ordered dithering thresholds: the 8x8 Bayer matrix, values 0..63.
FI_HD int bayer8(int x, int y) {
  // Bit-interleave of (x ^ y, y), reversed: the classic recursive construction.
  const int a = (x ^ y) & 7, b = y & 7;
  return ((a & 1) << 5) | ((b & 1) << 4) | ((a & 2) << 2) | ((b & 2) << 1) | ((a & 4) >> 1) |
         ((b & 4) >> 2);
}

// Uniform quantisation of one value to `levels` values spread evenly over
// 0..full:
//   index = floor(v * (levels - 1) / full + t),  t = 1/2 without dithering,
//                                                t = (bayer + 1/2) / 64 with it,
//   out   = round(index * full / (levels - 1)).
// Integers in exact integer arithmetic; floats clamped to 0..1 first (NaN
// to 0), in double, where v * (levels - 1) and the sum are exact and the
// quotient is correctly rounded, fast-math or not.
template <class Px>
FI_HD Px quantize_level(Px v, int levels, int x, int y, bool dither) {
  const int n = levels - 1;
  const int t2 = dither ? 2 * bayer8(x, y) + 1 : 64;  // 128 * t
  if constexpr (std::is_same_v<Px, float>) {
    const double c = v >= 0.0f ? (v <= 1.0f ? v : 1.0f) : 0.0f;
    const int index = static_cast<int>(c * n + t2 / 128.0);  // >= 0: truncation floors
    return static_cast<float>((index < n ? index : n) / static_cast<double>(n));
  } else {
    const int64_t full = static_cast<int64_t>(Full<Px>::value);
    const int64_t index = (v * int64_t{n} * 128 + t2 * full) / (128 * full);  // <= n: v <= full
    return static_cast<Px>((index * 2 * full + n) / (2 * n));
  }
}

FI_HD uint8_t quantize_value(int v, int levels, int x, int y, bool dither) {
  return quantize_level<uint8_t>(static_cast<uint8_t>(v), levels, x, y, dither);
}

// Alpha is left as it is: quantising it would cut hard steps into soft edges.
template <class Px>
FI_HD void quantize_pixel(const Px* in, Px* out, int C, int levels, int x, int y, bool dither) {
  const int colour = C == 4 ? 3 : C;
  for (int c = 0; c < colour; ++c) out[c] = quantize_level<Px>(in[c], levels, x, y, dither);
  if (C == 4) out[3] = in[3];
}

}  // namespace fi
