// CPU drivers. They compute the weighted sums of pixel.h with the loops
// reordered for SIMD: both passes become "vector += weight * vector" over
// contiguous floats, which the compiler turns into the widest FMAs the
// machine has (see FI_CPU_CLONES).
//
// Vertical pass first: for the large downscales of a thumbnailer it shrinks
// the row count before the horizontal pass, whose blocks must be transposed.
#include <algorithm>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "kernels.h"

// One build runs well everywhere: the hot entry point is compiled for
// x86-64-v4 (AVX-512), v3 (AVX2+FMA) and the baseline, and the loader picks
// the best the CPU supports. Everything it calls is FI_INLINE: a helper left
// out of line is compiled for the baseline only (measured: 3x slower).
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
typedef float Vec16 __attribute__((vector_size(64)));
typedef int32_t VecI16 __attribute__((vector_size(64)));
typedef uint8_t VecU8x16 __attribute__((vector_size(16)));

// The 16-lane vector of an image element type.
template <class T>
struct Lanes16;
template <>
struct Lanes16<float> {
  typedef Vec16 V;
};
template <>
struct Lanes16<uint8_t> {
  typedef VecU8x16 V;
};

// Vectors move to and from memory only through these: buffers are not
// 64-byte aligned, and a dereferenced vector pointer lets the compiler
// assume they are (an aligned() attribute on the typedef is dropped when the
// type passes through a template).
template <class V, class T>
FI_INLINE V load16(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <class V, class T>
FI_INLINE void store16(T* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// 16 rows of 16 values (floats or bytes), transposed in registers: four
// rounds of interleaving row i with row i + 8 move every element to its
// transposed place.
template <class V>
FI_INLINE void transpose16(V m[16]) {
  for (int round = 0; round < 4; ++round) {
    V t[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = __builtin_shufflevector(m[i], m[i + 8], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21,
                                         6, 22, 7, 23);
      t[2 * i + 1] = __builtin_shufflevector(m[i], m[i + 8], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28,
                                             13, 29, 14, 30, 15, 31);
    }
    for (int i = 0; i < 16; ++i) m[i] = t[i];
  }
}

// Premultiplies four RGBA pixels in place.
FI_INLINE void premultiply4(float* q) {
  const Vec16 v = load16<Vec16>(q);
  const Vec16 a =
      __builtin_shufflevector(v, v, 3, 3, 3, 3, 7, 7, 7, 7, 11, 11, 11, 11, 15, 15, 15, 15);
  // Colour lanes from the product, alpha lanes (19, 23, ...) kept.
  store16(q, __builtin_shufflevector(premultiply(v, a), v, 0, 1, 2, 19, 4, 5, 6, 23, 8, 9, 10, 27,
                                     12, 13, 14, 31));
}

// Rows per block of the horizontal pass, which transposes a block so that one
// column of its rows is one Vec16.
constexpr int kRows = 16;
// Pixels per column strip of the vertical pass.
constexpr int kStrip = 256;
// Vec16 sums the vertical pass keeps in registers: enough independent FMA
// chains to cover the FMA latency.
constexpr int kVecs = 8;
constexpr int kLanes = 16 * kVecs;

// One separable stage. In and Out are uint8_t (8-bit pixels, straight alpha)
// or float (premultiplied sums between the stages of a chain, not rounded).
template <int C, class In, class Out>
class Separable {
 public:
  Separable(const In* src, Dims in, PassView hp, PassView vp, Out* dst)
      : src_(src), in_(in), hp_(hp), vp_(vp), dst_(dst), row_len_(static_cast<size_t>(in.w) * C),
        strips_((in.w + kStrip - 1) / kStrip),
        ring_(static_cast<size_t>(strips_) * vp.taps * kStrip * C, 0.0f),
        ring_row_(static_cast<size_t>(strips_) * vp.taps, -1), window_(vp.taps),
        rows_(row_len_ * kRows), block_(row_len_ * kRows),
        out_block_(static_cast<size_t>(hp.n_out) * C * kRows) {}

  // Block by block of kRows output rows, so that the float rows between the
  // passes stay in L2 instead of making a round trip through memory.
  FI_INLINE void run() {
    for (int y0 = 0; y0 < vp_.n_out; y0 += kRows) {
      const int nr = std::min(kRows, vp_.n_out - y0);
      for (int s = 0; s < strips_; ++s) vertical(s, y0, nr);
      horizontal(y0, nr);
    }
  }

 private:
  // The vertical pass for output rows y0 .. y0 + nr - 1 of column strip s.
  // Windows move down monotonically, so input row r can live in slot r % taps
  // of the strip's ring: each input pixel is converted to float once.
  FI_INLINE void vertical(int s, int y0, int nr) {
    constexpr int width = kStrip * C;
    static_assert(width % kLanes == 0, "strips hold whole lanes");
    const int taps = vp_.taps;
    const int x0 = s * kStrip;
    const int npx = std::min(kStrip, in_.w - x0);
    const int n = npx * C;
    float* ring = &ring_[static_cast<size_t>(s) * taps * width];
    int* ring_row = &ring_row_[static_cast<size_t>(s) * taps];
    for (int y = y0; y < y0 + nr; ++y) {
      const int start = vp_.start[y];
      for (int k = 0; k < taps; ++k) {
        const int r = start + k, slot = r % taps;
        float* q = ring + static_cast<size_t>(slot) * width;
        window_[k] = q;
        if (ring_row[slot] == r) continue;
        ring_row[slot] = r;
        const In* p = src_ + r * row_len_ + static_cast<size_t>(x0) * C;
        if constexpr (std::is_same_v<In, float>) {
          std::copy(p, p + n, q);  // already premultiplied
        } else {
          // Every channel converted alone first: that loop vectorises well.
          for (int i = 0; i < n; ++i) load_u8<1>(p + i, q + i);
          if (C == 4) {
            int i = 0;
            for (; i + 4 <= npx; i += 4) premultiply4(q + 4 * i);
            for (; i < npx; ++i) load_u8<4>(p + 4 * i, q + 4 * i);
          }
        }
      }
      const float* w = vp_.weights + static_cast<size_t>(y) * taps;
      float* out = &rows_[(y - y0) * row_len_ + static_cast<size_t>(x0) * C];
      for (int i0 = 0; i0 < n; i0 += kLanes) {
        Vec16 acc[kVecs] = {};
        for (int k = 0; k < taps; ++k) {
          const float* q = window_[k] + i0;
          for (int v = 0; v < kVecs; ++v) acc[v] += w[k] * load16<Vec16>(q + 16 * v);
        }
        // Lanes past n summed the ring's zeros; they are not stored.
        const float* sums = reinterpret_cast<const float*>(acc);
        std::copy(sums, sums + std::min(kLanes, n - i0), out + i0);
      }
    }
  }

  // block_[(x * C + c) * kRows + r] = rows[r][x * C + c], rows past nr
  // repeating row 0.
  FI_INLINE void transpose_block(const float* rows, int nr) {
    const float* row[kRows];
    for (int r = 0; r < kRows; ++r) row[r] = rows + (r < nr ? r : 0) * row_len_;
    size_t i = 0;
    for (; i + 16 <= row_len_; i += 16) {
      Vec16 m[kRows];
      for (int r = 0; r < kRows; ++r) m[r] = load16<Vec16>(row[r] + i);
      transpose16(m);
      for (int j = 0; j < 16; ++j) store16(&block_[(i + j) * kRows], m[j]);
    }
    for (; i < row_len_; ++i)
      for (int r = 0; r < kRows; ++r) block_[i * kRows + r] = row[r][i];
  }

  // Vertical-pass rows y0 .. y0 + nr - 1 through the horizontal pass.
  FI_INLINE void horizontal(int y0, int nr) {
    transpose_block(rows_.data(), nr);
    for (int x = 0; x < hp_.n_out; ++x) {
      // Even and odd taps go to separate sums: C chains alone are too few to
      // cover the FMA latency.
      Vec16 acc[C] = {}, odd[C] = {};
      const float* w = hp_.weights + static_cast<size_t>(x) * hp_.taps;
      // Tap k, channel c: 16 rows at b + (k * C + c) * kRows.
      const float* b = &block_[static_cast<size_t>(hp_.start[x]) * C * kRows];
      int k = 0;
      for (; k + 1 < hp_.taps; k += 2, b += 2 * C * kRows) {
        for (int c = 0; c < C; ++c) acc[c] += w[k] * load16<Vec16>(b + c * kRows);
        for (int c = 0; c < C; ++c) odd[c] += w[k + 1] * load16<Vec16>(b + (C + c) * kRows);
      }
      if (k < hp_.taps)
        for (int c = 0; c < C; ++c) acc[c] += w[k] * load16<Vec16>(b + c * kRows);
      // Lane r of each vector is row y0 + r: all 16 are finished at once.
      Vec16 sum[C];
      for (int c = 0; c < C; ++c) sum[c] = acc[c] + odd[c];
      Out* o = &out_block_[static_cast<size_t>(x) * C * kRows];
      if constexpr (std::is_same_v<Out, float>) {
        for (int c = 0; c < C; ++c) store16(o + c * kRows, sum[c]);
      } else {
        Vec16 out[C];
        finish<C>(sum, out);
        for (int c = 0; c < C; ++c)
          store16(o + c * kRows,
                  __builtin_convertvector(__builtin_convertvector(out[c], VecI16), VecU8x16));
      }
    }
    store_block(y0, nr);
  }

  // out_block_ transposed back into output rows y0 .. y0 + nr - 1.
  FI_INLINE void store_block(int y0, int nr) {
    typedef typename Lanes16<Out>::V V;
    const size_t len = static_cast<size_t>(hp_.n_out) * C;
    Out* d = dst_ + static_cast<size_t>(y0) * len;
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
      V m[kRows];
      for (int j = 0; j < 16; ++j) m[j] = load16<V>(&out_block_[(i + j) * kRows]);
      transpose16(m);
      for (int r = 0; r < nr; ++r) store16(d + r * len + i, m[r]);
    }
    for (; i < len; ++i)
      for (int r = 0; r < nr; ++r) d[r * len + i] = out_block_[i * kRows + r];
  }

  const In* src_;
  Dims in_;
  PassView hp_, vp_;
  Out* dst_;
  size_t row_len_;
  int strips_;
  std::vector<float> ring_;    // per strip, the input rows of a window
  std::vector<int> ring_row_;  // which input row each ring slot holds
  std::vector<const float*> window_;
  std::vector<float> rows_;     // kRows vertical-pass rows
  std::vector<float> block_;    // the same, transposed
  std::vector<Out> out_block_;  // the block's output, still transposed
};

template <int C>
FI_INLINE void run_stages(const uint8_t* src, Dims in, uint8_t* dst,
                          const std::vector<Stage>& stages) {
  if (stages.size() == 1) {
    const Stage& s = stages[0];
    return Separable<C, uint8_t, uint8_t>(src, in, s.horizontal.view(), s.vertical.view(), dst)
        .run();
  }
  // Between stages the image stays in premultiplied floats: nothing is
  // rounded until the last stage writes 8 bits.
  std::vector<float> cur, next;
  for (size_t i = 0; i < stages.size(); ++i) {
    const PassView hp = stages[i].horizontal.view(), vp = stages[i].vertical.view();
    const bool first = i == 0, last = i + 1 == stages.size();
    if (!last) next.resize(static_cast<size_t>(vp.n_out) * hp.n_out * C);
    if (first)
      Separable<C, uint8_t, float>(src, in, hp, vp, next.data()).run();
    else if (last)
      Separable<C, float, uint8_t>(cur.data(), in, hp, vp, dst).run();
    else
      Separable<C, float, float>(cur.data(), in, hp, vp, next.data()).run();
    in = {vp.n_out, hp.n_out, C};
    cur.swap(next);
  }
}

FI_CPU_CLONES void separable_any(const uint8_t* src, Dims in, uint8_t* dst,
                                 const std::vector<Stage>& stages) {
  switch (in.c) {
    case 1: return run_stages<1>(src, in, dst, stages);
    case 3: return run_stages<3>(src, in, dst, stages);
    case 4: return run_stages<4>(src, in, dst, stages);
  }
  throw std::invalid_argument("channels must be 1, 3 or 4");
}

}  // namespace

void cpu_separable(const uint8_t* src, Dims in, uint8_t* dst, const std::vector<Stage>& stages) {
  separable_any(src, in, dst, stages);
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
  if (!dither && d.c != 4) {  // one table for every byte: a flat loop
    const size_t n = d.bytes();
    for (size_t i = 0; i < n; ++i) dst[i] = table[src[i]];
    return;
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
