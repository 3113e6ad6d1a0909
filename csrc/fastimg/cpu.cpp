// CPU drivers. They compute the weighted sums of pixel.h with the loops
// reordered for SIMD: both passes become "vector += weight * vector" over
// contiguous floats, which the compiler turns into the widest FMAs the
// machine has (see FI_CPU_CLONES).
//
// Vertical pass first: for the large downscales of a thumbnailer it shrinks
// the row count before the horizontal pass, whose blocks must be transposed.
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <vector>

#include "kernels.h"

// One build runs well everywhere: the hot entry point is compiled for
// x86-64-v4 (AVX-512), v3 (AVX2+FMA) and the baseline, and the loader picks
// the best the CPU supports.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FI_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define FI_INLINE __attribute__((always_inline)) inline
#else
#define FI_CPU_CLONES
#define FI_INLINE inline
#endif

namespace fi {
namespace {

// 16 floats as one value: GCC and Clang compile its arithmetic to one
// AVX-512 instruction, two AVX2 ones or four SSE ones, as the clone allows.
// aligned(4) makes loads through a Vec16 pointer valid at any float address.
typedef float Vec16 __attribute__((vector_size(64), aligned(4)));

// Rows per block of the horizontal pass, which transposes a block so that one
// column of its rows is one Vec16.
constexpr int kRows = 16;
// Pixels per column strip of the vertical pass.
constexpr int kStrip = 256;
// Vec16 sums the vertical pass keeps in registers: enough independent FMA
// chains to cover the FMA latency.
constexpr int kVecs = 8;
constexpr int kLanes = 16 * kVecs;

// The vertical pass's float rows, kept per thread between calls: a fresh
// allocation this size comes from mmap, and first-touch page faults on it cost
// as much as the pass itself. Buffers beyond kKeepFloats are not kept, so an
// occasional huge image does not pin its memory to the thread.
constexpr size_t kKeepFloats = size_t(16) << 20;  // 64 MiB

class Scratch {
 public:
  explicit Scratch(size_t n) {
    thread_local std::unique_ptr<float[]> kept;
    thread_local size_t kept_size = 0;
    if (n > kKeepFloats) {
      own_.reset(new float[n]);
      data_ = own_.get();
      return;
    }
    if (n > kept_size) {
      kept.reset(new float[n]);
      kept_size = n;
    }
    data_ = kept.get();
  }
  float& operator[](size_t i) { return data_[i]; }

 private:
  std::unique_ptr<float[]> own_;
  float* data_ = nullptr;
};

template <int C>
class Separable {
 public:
  Separable(const uint8_t* src, Dims in, PassView hp, PassView vp, uint8_t* dst)
      : src_(src), in_(in), hp_(hp), vp_(vp), dst_(dst), row_len_(static_cast<size_t>(in.w) * C),
        // Not zero-filled: the vertical pass writes every element.
        tmp_(vp.n_out * row_len_),
        ring_(static_cast<size_t>(vp.taps) * kStrip * C, 0.0f),
        ring_row_(vp.taps),
        window_(vp.taps),
        block_(row_len_ * kRows) {}

  void run() {
    for (int x0 = 0; x0 < in_.w; x0 += kStrip) vertical_strip(x0);
    for (int y0 = 0; y0 < vp_.n_out; y0 += kRows) horizontal(y0, std::min(kRows, vp_.n_out - y0));
  }

 private:
  // The vertical pass for input columns x0 .. x0 + kStrip - 1, every output
  // row. Windows move down monotonically, so input row r can live in ring slot
  // r % taps: each input pixel is converted from 8 bits once, and the strip's
  // rows stay in L2 while they are summed.
  void vertical_strip(int x0) {
    constexpr int width = kStrip * C;
    static_assert(width % kLanes == 0, "strips hold whole lanes");
    const int taps = vp_.taps;
    const int npx = std::min(kStrip, in_.w - x0);
    const int n = npx * C;
    std::fill(ring_row_.begin(), ring_row_.end(), -1);
    for (int y = 0; y < vp_.n_out; ++y) {
      const int s = vp_.start[y];
      for (int k = 0; k < taps; ++k) {
        const int r = s + k, slot = r % taps;
        float* q = &ring_[static_cast<size_t>(slot) * width];
        window_[k] = q;
        if (ring_row_[slot] == r) continue;
        ring_row_[slot] = r;
        const uint8_t* p = src_ + r * row_len_ + static_cast<size_t>(x0) * C;
        if (C == 4) {
          for (int i = 0; i < npx; ++i) load_u8<4>(p + 4 * i, q + 4 * i);
        } else {
          for (int i = 0; i < n; ++i) load_u8<1>(p + i, q + i);  // channels are independent
        }
      }
      const float* w = vp_.weights + static_cast<size_t>(y) * taps;
      float* out = &tmp_[y * row_len_ + static_cast<size_t>(x0) * C];
      for (int i0 = 0; i0 < n; i0 += kLanes) {
        Vec16 acc[kVecs] = {};
        for (int k = 0; k < taps; ++k) {
          const Vec16* q = reinterpret_cast<const Vec16*>(window_[k] + i0);
          for (int v = 0; v < kVecs; ++v) acc[v] += w[k] * q[v];
        }
        // Lanes past n summed the ring's zeros; they are not stored.
        const float* sums = reinterpret_cast<const float*>(acc);
        std::copy(sums, sums + std::min(kLanes, n - i0), out + i0);
      }
    }
  }

  // Vertical-pass rows y0 .. y0 + nr - 1 through the horizontal pass.
  void horizontal(int y0, int nr) {
    const float* rows = &tmp_[y0 * row_len_];
    // block_[(x * C + c) * kRows + r] = rows[r][x * C + c]
    for (size_t i = 0; i < row_len_; ++i)
      for (int r = 0; r < kRows; ++r) block_[i * kRows + r] = rows[(r < nr ? r : 0) * row_len_ + i];
    for (int x = 0; x < hp_.n_out; ++x) {
      // Even and odd taps go to separate sums: C chains alone are too few to
      // cover the FMA latency.
      Vec16 acc[C] = {}, odd[C] = {};
      const float* w = hp_.weights + static_cast<size_t>(x) * hp_.taps;
      const Vec16* b = reinterpret_cast<const Vec16*>(&block_[static_cast<size_t>(hp_.start[x]) * C * kRows]);
      int k = 0;
      for (; k + 1 < hp_.taps; k += 2, b += 2 * C) {
        for (int c = 0; c < C; ++c) acc[c] += w[k] * b[c];
        for (int c = 0; c < C; ++c) odd[c] += w[k + 1] * b[C + c];
      }
      if (k < hp_.taps)
        for (int c = 0; c < C; ++c) acc[c] += w[k] * b[c];
      for (int r = 0; r < nr; ++r) {
        float px[C];
        for (int c = 0; c < C; ++c) px[c] = acc[c][r] + odd[c][r];
        store_u8<C>(px, dst_ + ((static_cast<size_t>(y0) + r) * hp_.n_out + x) * C);
      }
    }
  }

  const uint8_t* src_;
  Dims in_;
  PassView hp_, vp_;
  uint8_t* dst_;
  size_t row_len_;
  Scratch tmp_;                   // vertical-pass output: vp.n_out float rows
  std::vector<float> ring_;       // one strip of the input rows in a window
  std::vector<int> ring_row_;
  std::vector<const float*> window_;
  std::vector<float> block_;      // kRows rows of tmp_, transposed
};

FI_CPU_CLONES void separable_any(const uint8_t* src, Dims in, uint8_t* dst, PassView hp, PassView vp) {
  switch (in.c) {
    case 1: return Separable<1>(src, in, hp, vp, dst).run();
    case 3: return Separable<3>(src, in, hp, vp, dst).run();
    case 4: return Separable<4>(src, in, hp, vp, dst).run();
  }
  throw std::invalid_argument("channels must be 1, 3 or 4");
}

}  // namespace

void cpu_separable(const uint8_t* src, Dims in, uint8_t* dst, const Pass& horizontal,
                   const Pass& vertical) {
  separable_any(src, in, dst, horizontal.view(), vertical.view());
}

void cpu_quantize(const uint8_t* src, Dims d, uint8_t* dst, int levels, bool dither) {
  // quantize_pixel depends on the pixel only through its Bayer cell, so one
  // table per cell (64 with dithering, 1 without) answers every pixel.
  const int cells = dither ? 64 : 1;
  std::vector<uint8_t> table(static_cast<size_t>(cells) * 256);
  for (int cell = 0; cell < cells; ++cell)
    for (int v = 0; v < 256; ++v) {
      const uint8_t grey = static_cast<uint8_t>(v);
      quantize_pixel(&grey, &table[cell * 256 + v], 1, levels, cell % 8, cell / 8, dither);
    }
  const int colour = d.c == 4 ? 3 : d.c;
  for (int y = 0; y < d.h; ++y)
    for (int x = 0; x < d.w; ++x) {
      const uint8_t* t = &table[(dither ? (y % 8) * 8 + (x % 8) : 0) * 256];
      const size_t i = (static_cast<size_t>(y) * d.w + x) * d.c;
      for (int c = 0; c < colour; ++c) dst[i + c] = t[src[i + c]];
      if (d.c == 4) dst[i + 3] = src[i + 3];  // alpha is kept, as in quantize_pixel
    }
}

}  // namespace fi
