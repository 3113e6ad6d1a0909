#include <algorithm>
#include <stdexcept>
#include <vector>

#include "kernels.h"

namespace fi {
namespace {

template <int C>
struct F32Pixels {
  const float* p;
  void load(int i, float px[C]) const { load_f32<C>(p + static_cast<size_t>(i) * C, px); }
};

template <int C>
void separable(const uint8_t* src, Dims in, uint8_t* dst, PassView hp, PassView vp) {
  const size_t tmp_row = static_cast<size_t>(hp.n_out) * C;
  std::vector<float> tmp(tmp_row * in.h);
  std::vector<float> row(static_cast<size_t>(in.w) * C);

  // Horizontal: each input row is converted (and premultiplied) once, then
  // every output pixel reads its window from that float row.
  for (int y = 0; y < in.h; ++y) {
    const uint8_t* s = src + static_cast<size_t>(y) * in.w * C;
    for (int x = 0; x < in.w; ++x) load_u8<C>(s + static_cast<size_t>(x) * C, &row[static_cast<size_t>(x) * C]);
    const F32Pixels<C> pixels{row.data()};
    float* t = &tmp[y * tmp_row];
    for (int x = 0; x < hp.n_out; ++x)
      weighted_sum<C>(pixels, hp.start[x], hp.weights + static_cast<size_t>(x) * hp.taps, hp.taps,
                      t + static_cast<size_t>(x) * C);
  }

  // Vertical: the same weighted sum, with the loops swapped (taps outside,
  // pixels inside) so that the inner loop runs along contiguous memory and
  // vectorises.
  std::vector<float> acc(tmp_row);
  for (int y = 0; y < vp.n_out; ++y) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const float* w = vp.weights + static_cast<size_t>(y) * vp.taps;
    for (int k = 0; k < vp.taps; ++k) {
      const float* t = &tmp[(vp.start[y] + k) * tmp_row];
      const float wk = w[k];
      for (size_t i = 0; i < tmp_row; ++i) acc[i] += wk * t[i];
    }
    uint8_t* d = dst + y * tmp_row;
    for (int x = 0; x < hp.n_out; ++x) store_u8<C>(&acc[static_cast<size_t>(x) * C], d + static_cast<size_t>(x) * C);
  }
}

}  // namespace

void cpu_separable(const uint8_t* src, Dims in, uint8_t* dst, const Pass& horizontal,
                   const Pass& vertical) {
  switch (in.c) {
    case 1: return separable<1>(src, in, dst, horizontal.view(), vertical.view());
    case 3: return separable<3>(src, in, dst, horizontal.view(), vertical.view());
    case 4: return separable<4>(src, in, dst, horizontal.view(), vertical.view());
  }
  throw std::invalid_argument("channels must be 1, 3 or 4");
}

void cpu_quantize(const uint8_t* src, Dims d, uint8_t* dst, int levels, bool dither) {
  for (int y = 0; y < d.h; ++y)
    for (int x = 0; x < d.w; ++x) {
      const size_t i = (static_cast<size_t>(y) * d.w + x) * d.c;
      quantize_pixel(src + i, dst + i, d.c, levels, x, y, dither);
    }
}

}  // namespace fi
