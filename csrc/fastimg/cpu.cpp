// CPU drivers. They compute the weighted sums of pixel.h with the loops
// reordered for SIMD: both passes become "vector += weight * vector" over
// contiguous floats, which the compiler turns into the widest FMAs the
// machine has (see FI_CPU_CLONES).
//
// Vertical pass first: for the large downscales of a thumbnailer it shrinks
// the row count before the horizontal pass, whose blocks must be transposed.
#include "cpu.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// One build runs well everywhere: the engine is compiled three times, for
// x86-64-v4 (AVX-512) on 16-float vectors, x86-64-v3 (AVX2+FMA) on 8 and the
// baseline on 4, each vector one register of its target, and separable_any
// picks the best the CPU supports. (One 16-float vector type in every clone
// was 15-20x slower on AVX2: GCC keeps vectors wider than the target's
// registers in memory.) Everything the entry points call is FI_INLINE: a
// helper left out of line is compiled for the baseline only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FI_X86_TARGETS 1
#define FI_INLINE __attribute__((always_inline)) inline
#else
#define FI_INLINE inline
#endif

namespace fi {
namespace {

// The vectors of one target: L floats (one register), L int32 for rounding,
// L bytes for 8-bit pixels.
template <int L>
struct Simd {
  typedef float F __attribute__((vector_size(4 * L)));
  typedef int32_t I __attribute__((vector_size(4 * L)));
  typedef uint8_t U8 __attribute__((vector_size(L)));
};

// The L-lane vector of an image element type.
template <int L, class T>
struct LanesOf {
  typedef typename Simd<L>::F V;
};
template <int L>
struct LanesOf<L, uint8_t> {
  typedef typename Simd<L>::U8 V;
};

template <class V>
constexpr int lanes() {
  return static_cast<int>(sizeof(V) / sizeof(V{}[0]));
}

// Vectors move to and from memory only through these: buffers are not
// aligned to the vector size, and a dereferenced vector pointer lets the
// compiler assume they are (an aligned() attribute on the typedef is dropped
// when the type passes through a template).
template <class V, class T>
FI_INLINE V loadv(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <class V, class T>
FI_INLINE void storev(T* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// The first (Hi = 0) or second half of a and b, interleaved lane by lane.
template <int Hi, class V, size_t... J>
FI_INLINE V interleave(const V& a, const V& b, std::index_sequence<J...>) {
  constexpr int n = lanes<V>();
  return __builtin_shufflevector(a, b, (Hi * n / 2 + J / 2 + (J % 2) * n)...);
}

// L rows of L values (floats or bytes), transposed in registers: log2(L)
// rounds of interleaving row i with row i + L/2 move every element to its
// transposed place.
template <class V>
FI_INLINE void transpose(V* m) {
  constexpr int n = lanes<V>();
  const auto idx = std::make_index_sequence<n>();
  for (int round = 1; round < n; round *= 2) {
    V t[n];
    for (int i = 0; i < n / 2; ++i) {
      t[2 * i] = interleave<0>(m[i], m[i + n / 2], idx);
      t[2 * i + 1] = interleave<1>(m[i], m[i + n / 2], idx);
    }
    for (int i = 0; i < n; ++i) m[i] = t[i];
  }
}

// Premultiplies the L / 4 RGBA pixels of one vector in place.
template <class V, size_t... J>
FI_INLINE void premultiply_rgba(float* q, std::index_sequence<J...>) {
  constexpr int n = lanes<V>();
  const V v = loadv<V>(q);
  const V a = __builtin_shufflevector(v, v, (J / 4 * 4 + 3)...);
  // Colour lanes from the product, alpha lanes (the second operand's) kept.
  storev(q, __builtin_shufflevector(premultiply(v, a), v, (J % 4 == 3 ? n + J : J)...));
}

// Pixels per column strip of the vertical pass.
constexpr int kStrip = 256;
// Vector sums the vertical pass keeps in registers: enough independent FMA
// chains to cover the FMA latency.
constexpr int kVecs = 8;

// One separable stage on L-lane vectors. In and Out are uint8_t (8-bit
// pixels, straight alpha) or float (premultiplied sums between the stages of
// a chain, not rounded).
template <int L, int C, class In, class Out>
class Separable {
  typedef typename Simd<L>::F Vec;
  // Rows per block of the horizontal pass, which transposes a block so that
  // one column of its rows is one vector.
  static constexpr int kRows = L;
  static constexpr int kLanes = L * kVecs;

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
            for (; i + L / 4 <= npx; i += L / 4)
              premultiply_rgba<Vec>(q + 4 * i, std::make_index_sequence<L>());
            for (; i < npx; ++i) load_u8<4>(p + 4 * i, q + 4 * i);
          }
        }
      }
      const float* w = vp_.weights + static_cast<size_t>(y) * taps;
      float* out = &rows_[(y - y0) * row_len_ + static_cast<size_t>(x0) * C];
      for (int i0 = 0; i0 < n; i0 += kLanes) {
        Vec acc[kVecs] = {};
        for (int k = 0; k < taps; ++k) {
          const float* q = window_[k] + i0;
          for (int v = 0; v < kVecs; ++v) acc[v] += w[k] * loadv<Vec>(q + L * v);
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
    for (; i + L <= row_len_; i += L) {
      Vec m[kRows];
      for (int r = 0; r < kRows; ++r) m[r] = loadv<Vec>(row[r] + i);
      transpose(m);
      for (int j = 0; j < L; ++j) storev(&block_[(i + j) * kRows], m[j]);
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
      Vec acc[C] = {}, odd[C] = {};
      const float* w = hp_.weights + static_cast<size_t>(x) * hp_.taps;
      // Tap k, channel c: L rows at b + (k * C + c) * kRows.
      const float* b = &block_[static_cast<size_t>(hp_.start[x]) * C * kRows];
      int k = 0;
      for (; k + 1 < hp_.taps; k += 2, b += 2 * C * kRows) {
        for (int c = 0; c < C; ++c) acc[c] += w[k] * loadv<Vec>(b + c * kRows);
        for (int c = 0; c < C; ++c) odd[c] += w[k + 1] * loadv<Vec>(b + (C + c) * kRows);
      }
      if (k < hp_.taps)
        for (int c = 0; c < C; ++c) acc[c] += w[k] * loadv<Vec>(b + c * kRows);
      // Lane r of each vector is row y0 + r: all L are finished at once.
      Vec sum[C];
      for (int c = 0; c < C; ++c) sum[c] = acc[c] + odd[c];
      Out* o = &out_block_[static_cast<size_t>(x) * C * kRows];
      if constexpr (std::is_same_v<Out, float>) {
        for (int c = 0; c < C; ++c) storev(o + c * kRows, sum[c]);
      } else {
        Vec out[C];
        finish<C>(sum, out);
        for (int c = 0; c < C; ++c)
          storev(o + c * kRows,
                 __builtin_convertvector(__builtin_convertvector(out[c], typename Simd<L>::I),
                                         typename Simd<L>::U8));
      }
    }
    store_block(y0, nr);
  }

  // out_block_ transposed back into output rows y0 .. y0 + nr - 1.
  FI_INLINE void store_block(int y0, int nr) {
    typedef typename LanesOf<L, Out>::V V;
    const size_t len = static_cast<size_t>(hp_.n_out) * C;
    Out* d = dst_ + static_cast<size_t>(y0) * len;
    size_t i = 0;
    for (; i + L <= len; i += L) {
      V m[kRows];
      for (int j = 0; j < L; ++j) m[j] = loadv<V>(&out_block_[(i + j) * kRows]);
      transpose(m);
      for (int r = 0; r < nr; ++r) storev(d + r * len + i, m[r]);
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

template <int L, int C>
FI_INLINE void run_stages(const uint8_t* src, Dims in, uint8_t* dst,
                          const std::vector<Stage>& stages) {
  if (stages.size() == 1) {
    const Stage& s = stages[0];
    return Separable<L, C, uint8_t, uint8_t>(src, in, s.horizontal.view(), s.vertical.view(), dst)
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
      Separable<L, C, uint8_t, float>(src, in, hp, vp, next.data()).run();
    else if (last)
      Separable<L, C, float, uint8_t>(cur.data(), in, hp, vp, dst).run();
    else
      Separable<L, C, float, float>(cur.data(), in, hp, vp, next.data()).run();
    in = {vp.n_out, hp.n_out, C};
    cur.swap(next);
  }
}

template <int L>
FI_INLINE void separable_on(const uint8_t* src, Dims in, uint8_t* dst,
                            const std::vector<Stage>& stages) {
  switch (in.c) {
    case 1: return run_stages<L, 1>(src, in, dst, stages);
    case 3: return run_stages<L, 3>(src, in, dst, stages);
    case 4: return run_stages<L, 4>(src, in, dst, stages);
  }
  throw std::invalid_argument("channels must be 1, 3 or 4");
}

#ifdef FI_X86_TARGETS
__attribute__((target("arch=x86-64-v4"))) void separable_v4(const uint8_t* src, Dims in,
                                                            uint8_t* dst,
                                                            const std::vector<Stage>& stages) {
  separable_on<16>(src, in, dst, stages);
}

__attribute__((target("arch=x86-64-v3"))) void separable_v3(const uint8_t* src, Dims in,
                                                            uint8_t* dst,
                                                            const std::vector<Stage>& stages) {
  separable_on<8>(src, in, dst, stages);
}
#endif

}  // namespace

const char* cpu_target() {
  // The best the CPU supports, at most what FASTIMG_CPU_TARGET names: for a
  // CPU that lowers its clock under AVX-512, and to test every engine on one
  // machine. Read once.
  static const char* target = [] {
#ifdef FI_X86_TARGETS
    const char* cap = std::getenv("FASTIMG_CPU_TARGET");
    const std::string want = cap != nullptr ? cap : "";
    if (want != "baseline" && want != "x86-64-v3" && __builtin_cpu_supports("x86-64-v4"))
      return "x86-64-v4";
    if (want != "baseline" && __builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
#endif
    return "baseline";
  }();
  return target;
}

void cpu_separable(const uint8_t* src, Dims in, uint8_t* dst, const std::vector<Stage>& stages) {
#ifdef FI_X86_TARGETS
  static const std::string target = cpu_target();
  if (target == "x86-64-v4") return separable_v4(src, in, dst, stages);
  if (target == "x86-64-v3") return separable_v3(src, in, dst, stages);
#endif
  separable_on<4>(src, in, dst, stages);
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
