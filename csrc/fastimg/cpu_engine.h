// The separable engine for one instruction set, on vectors of FI_LANES
// floats. Each cpu_engine_*.cpp includes this file after its `#pragma GCC
// target`, with FI_ENGINE naming that target's namespace, so that everything
// here (templates and lambdas included) is compiled for it. The headers it
// needs come from cpu_engine_prelude.h, before the pragma, so that the
// standard library stays baseline code.
//
// A stage (a horizontal and a vertical pass) runs over its input once, top to
// bottom, in blocks of rows:
//
// 1. The vertical pass sweeps each block with its rows as vectors: every
//    input row is loaded and converted to float once, and added, times one
//    weight each, to the running sums of all the output rows whose windows
//    cover it (Sweep in passes.h). The sums of a column chunk stay in
//    registers while the block's rows go by; an output row whose window has
//    ended is written out and its slot starts the next one.
// 2. Finished rows of the vertical pass, R at a time, are transposed in
//    cache-sized chunks so that one vector holds one sample of R rows, and
//    the horizontal pass sweeps along them the same way.
// 3. Its outputs are rounded (or kept as float for a next stage) and
//    transposed back into rows.
//
// A blur at full size (a pass with a half kernel, passes.h) of radius up to
// kFoldMax is folded instead of swept, in both passes: each output takes the
// 2 R + 1 inputs around it, mirrored pairs added before they are multiplied
// (fold). The vertical pass reads those rows from the image again, which
// only a stage fed from a whole image in memory can; the horizontal one keeps
// each ring row from pixel x_begin - R on, with the pixels beyond the image's
// edges mirrored in. With AVX-512, a wide blur's first stage, evaluated at
// every other row, folds its vertical pass the same way (vertical_halved).
//
// Resize then touches each input byte once; a downscale does the pass that
// shrinks rows first, on all the bytes, and the horizontal one on a fraction;
// a chain of stages hands rows from one to the next without writing the
// image in between.

namespace fi {
namespace FI_ENGINE {
namespace {

constexpr int L = FI_LANES;
typedef float F __attribute__((vector_size(4 * L)));
typedef int32_t I32 __attribute__((vector_size(4 * L)));
typedef uint8_t U8 __attribute__((vector_size(L)));

// Vector registers a sweep may use (32 with AVX-512, 16 below, one kept
// spare): its running sums, the values added and a weight.
constexpr int kRegs = L == 16 ? 31 : 15;
constexpr int kMaxSlots = 8;
// The most running sums per output of n vectors that fit.
constexpr int slots_for(int n) { return std::min(kMaxSlots, (kRegs - n - 1) / n); }
// Vectors per column chunk of the vertical sweep.
constexpr int kChunk = L == 16 ? 3 : 2;
// Pixels per chunk of the horizontal pass, transposed just before it is
// swept (L1-sized).
constexpr int kCols = 4 * L;
// Input rows per block of the first stage.
constexpr int kBlock = 32;

// Vectors move to and from memory only through these: buffers are not
// aligned to the vector size, and a dereferenced vector pointer lets the
// compiler assume they are.
template <class V, class T>
V loadv(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <class V, class T>
void storev(T* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof v);
}

template <size_t... J>
F splat(float x, std::index_sequence<J...>) {
  return F{((void)J, x)...};
}

F splat(float x) { return splat(x, std::make_index_sequence<L>()); }

// The bytes of v as a To (the first sizeof(To) of them).
template <class To, class From>
To bits(const From& v) {
  static_assert(sizeof(To) <= sizeof(From), "reads within v");
  return loadv<To>(&v);
}

// Element types of images, in and out: L consecutive elements as floats,
// and L finished values (rounding points, see finish in pixel.h) as
// elements. Intrinsics where there are some: GCC converts vectors between
// bytes and wider lanes one lane at a time. (Another element type is one
// more specialisation.)
template <class T>
struct Elem;

template <>
struct Elem<uint8_t> {
  typedef U8 V;
  static F load(const uint8_t* p) {
#if FI_LANES == 16
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(loadv<__m128i>(p)));
#elif FI_LANES == 8
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
        _mm_loadl_epi64(static_cast<const __m128i*>(static_cast<const void*>(p)))));
#elif defined(__SSE2__)
    const __m128i z = _mm_setzero_si128();
    const __m128i b = _mm_cvtsi32_si128(loadv<int32_t>(p));
    return _mm_cvtepi32_ps(_mm_unpacklo_epi16(_mm_unpacklo_epi8(b, z), z));
#else
    return __builtin_convertvector(loadv<U8>(p), F);
#endif
  }

  // Truncated: the values are rounding points in 0.5 .. 255.5.
  static V pack(const F& f) {
    const I32 v = __builtin_convertvector(f, I32);
#if FI_LANES == 16
    return bits<U8>(_mm512_cvtepi32_epi8(bits<__m512i>(v)));
#elif FI_LANES == 8
    const __m256i i = bits<__m256i>(v);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    return bits<U8>(_mm_packus_epi16(w, w));
#elif defined(__SSE2__)
    const __m128i w = _mm_packs_epi32(bits<__m128i>(v), bits<__m128i>(v));
    return bits<U8>(_mm_packus_epi16(w, w));
#else
    return __builtin_convertvector(v, U8);
#endif
  }
};

// Premultiplied sums between the stages of a chain: not rounded.
template <>
struct Elem<float> {
  typedef F V;
  static F load(const float* p) { return loadv<F>(p); }
};

// The first (Hi = 0) or second half of a and b, interleaved lane by lane.
template <int Hi, class V, size_t... J>
FI_ALWAYS_INLINE V interleave(const V& a, const V& b, std::index_sequence<J...>) {
  constexpr int n = sizeof(V) / sizeof(a[0]);
  return __builtin_shufflevector(a, b, (Hi * n / 2 + J / 2 + (J % 2) * n)...);
}

// n rows of n values (floats or bytes) transposed in registers: log2(n)
// rounds of interleaving row i with row i + n/2.
template <class V>
FI_ALWAYS_INLINE void transpose(V* m) {
  constexpr int n = sizeof(V) / sizeof(m[0][0]);
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

// The L / 4 RGBA pixels of one vector, premultiplied.
template <size_t... J>
F premultiply_rgba(const F& v, std::index_sequence<J...>) {
  const F a = __builtin_shufflevector(v, v, (J / 4 * 4 + 3)...);
  // Colour lanes from the product, alpha lanes (the second operand's) kept.
  return __builtin_shufflevector(premultiply(v, a), v, (J % 4 == 3 ? L + J : J)...);
}

template <class T>
size_t round_up(T n, size_t m) {
  return (static_cast<size_t>(n) + m - 1) / m * m;
}

// One input's N vectors x added to the running sums of the Live oldest
// outputs not yet finished, times the input's weight for each: output a
// (0 the oldest) owns sums[(P + a) % K].
template <int P, int Live, int K, int N>
FI_ALWAYS_INLINE void add_to(F (&sums)[K][N], const float* w, const F (&x)[N]) {
#pragma GCC unroll 8
  for (int a = 0; a < Live; ++a) {
    const F ws = splat(w[a]);
#pragma GCC unroll 8
    for (int v = 0; v < N; ++v) sums[(P + a) % K][v] += ws * x[v];
  }
}

// add_to all K sums, or all but the newest where its window has not begun
// (its weight is 0). Windows of a few pixels more than a whole multiple of
// the output spacing wide overlap one deeper at a few inputs only:
// Lanczos-3 downscales (76 inputs every 12.6, the 4032 -> 320 resize) need
// 7 sums at 3% of the inputs and 6 at the rest, and a blur's 13-deep windows
// dealt to two groups 7 and 6 in turn.
template <int P, int K, int N>
FI_ALWAYS_INLINE void add_weighted(F (&sums)[K][N], const float* w, const F (&x)[N]) {
  if constexpr (K > 1)
    if (w[K - 1] == 0.0f) return add_to<P, K - 1>(sums, w, x);
  add_to<P, K>(sums, w, x);
}

// Returns f(std::integral_constant<int, phase>()), phase in P .. K - 1.
template <int K, int P = 0, class Fn>
FI_ALWAYS_INLINE auto with_phase(int phase, Fn&& f) {
  if constexpr (P + 1 < K)
    if (phase != P) return with_phase<K, P + 1>(phase, f);
  return f(std::integral_constant<int, P>());
}

// One group's sweep over n inputs, K running sums of N vectors: load(i, x)
// gives input i's vectors, w its K weights (oldest output first) and the
// next input's after them; input i completes every output q whose end is
// j0 + i + 1, which goes to done(q, sums) in order. ends and q: the group's
// output ends and the next output to finish. The sums come from and go back
// to `saved`, oldest first, between calls.
//
// A finished sum is zeroed where it is, and the next one becomes the oldest:
// the code that runs depends on which sum is the oldest (the phase, one
// specialisation each), so that sums stay in their registers instead of
// moving down one at every output.
template <int K, int N, class Load, class Done>
FI_ALWAYS_INLINE void sweep(float* saved, const float* w, const int* ends, int& q, int j0, int n,
                            Load load, Done done) {
  F sums[K][N];
#pragma GCC unroll 8
  for (int s = 0; s < K; ++s)
#pragma GCC unroll 8
    for (int v = 0; v < N; ++v) sums[s][v] = loadv<F>(saved + (s * N + v) * L);
  // In locals: stores through char-typed copies could change what q refers to.
  int next = q, end = ends[next], phase = 0, i = 0;
  bool more = true;
  while (more)
    more = with_phase<K>(phase, [&](auto p) {
      constexpr int P = decltype(p)::value;
      for (;; ++i, w += K) {
        if (end == j0 + i) {
          done(next, sums[P]);
#pragma GCC unroll 8
          for (int v = 0; v < N; ++v) sums[P][v] = F{};
          end = ends[++next];
          phase = (P + 1) % K;
          return true;
        }
        if (i == n) return false;
        F x[N];
        load(i, x);
        add_weighted<P>(sums, w, x);
      }
    });
  with_phase<K>(phase, [&](auto p) {
    constexpr int P = decltype(p)::value;
#pragma GCC unroll 8
    for (int a = 0; a < K; ++a)
#pragma GCC unroll 8
      for (int v = 0; v < N; ++v) storev(saved + (a * N + v) * L, sums[(P + a) % K][v]);
  });
  q = next;
}

// Calls f(std::integral_constant<int, U>()) for U = 0, 1, ... in order.
template <class Fn, size_t... U>
FI_ALWAYS_INLINE void each(Fn&& f, std::index_sequence<U...>) {
  (f(std::integral_constant<int, U>()), ...);
}

// The largest radius of a folded blur pass (sigma up to 2.66): with AVX-512
// its 2 R + 1 inputs and R + 1 weights stay in registers; with 16 registers
// the weights are read from the stack, and the fold still beats the sweep
// (x86-64-v3, blur sigma 2 of 12 MP: 46 -> 36 ms, docs/kernels.md).
constexpr int kFoldMax = 8;

// Outputs 0 .. n - 1 of a symmetric filter of radius R over the inputs
// load(0) .. load(n + 2 R - 1): output o is h[0] x(o + R) plus, for k in
// 1 .. R, h[k] (x(o + R - k) + x(o + R + k)). Adding each mirrored pair before
// it is multiplied halves the multiply-adds of the sweep's form, which adds
// every input to the sums of all its outputs; the additions go to separate
// units on cores that have them. The last 2 R + 1 inputs stay in registers:
// the loop is unrolled by 2 R + 1, each input keeping its register while the
// oldest one's changes with the phase.
template <int R, class Load, class Store>
FI_ALWAYS_INLINE void fold(const float* h, int n, Load load, Store store) {
  constexpr int W = 2 * R + 1;
  F hv[R + 1], x[W];
#pragma GCC unroll 16
  for (int k = 0; k <= R; ++k) hv[k] = splat(h[k]);
#pragma GCC unroll 16
  for (int i = 0; i + 1 < W; ++i) x[i] = load(i);
  int o = 0;
  // Inlined even where the unrolled loop is large: out of line, the window
  // would go through memory.
  const auto step = [&](auto u) FI_INLINE_LAMBDA {
    constexpr int U = decltype(u)::value;  // x(o) is in x[U]
    x[(U + W - 1) % W] = load(o + W - 1);
    F sum = hv[0] * x[(U + R) % W];
#pragma GCC unroll 16
    for (int k = 1; k <= R; ++k) sum += hv[k] * (x[(U + R - k) % W] + x[(U + R + k) % W]);
    store(o++, sum);
  };
  while (o + W <= n) each(step, std::make_index_sequence<W>());
  // The last outputs, fewer than a round: x(o) is in x[0] again, and the
  // window moves down one register per output instead of being unrolled
  // once more.
  for (; o < n; ++o) {
    x[W - 1] = load(o + W - 1);
    F sum = hv[0] * x[R];
#pragma GCC unroll 16
    for (int k = 1; k <= R; ++k) sum += hv[k] * (x[R - k] + x[R + k]);
    store(o, sum);
#pragma GCC unroll 16
    for (int i = 0; i + 1 < W; ++i) x[i] = x[i + 1];
  }
}

// The most mirrored pairs per register pass of a blur evaluated at every
// other sample (sigma up to 8): its two windows of inputs take 24 of the 32
// AVX-512 registers. With 16 registers, passes of 4 pairs were half the
// sweep's speed (x86-64-v3, blur sigma 8 of 12 MP: 131 ms against 66), so
// only the AVX-512 engine folds them.
constexpr int kPairs = 12;

// Outputs 0 .. n - 1 of M mirrored pairs from two sequences, e and d, whose
// windows both move one input per output: output o is the sum over p in
// 0 .. M - 1 of h[p] (e(o + p) + d(o + M - 1 - p)). As in fold, both windows
// stay in registers, the loop unrolled by M.
template <int M, class LoadE, class LoadD, class Store>
FI_ALWAYS_INLINE void fold_pairs(const float* h, int n, LoadE e, LoadD d, Store store) {
  F hv[M], ex[M], dx[M];
#pragma GCC unroll 16
  for (int p = 0; p < M; ++p) hv[p] = splat(h[p]);
#pragma GCC unroll 16
  for (int i = 0; i + 1 < M; ++i) {
    ex[i] = e(i);
    dx[i] = d(i);
  }
  int o = 0;
  const auto step = [&](auto u) FI_INLINE_LAMBDA {
    constexpr int U = decltype(u)::value;  // e(o) and d(o) are in ex[U] and dx[U]
    ex[(U + M - 1) % M] = e(o + M - 1);
    dx[(U + M - 1) % M] = d(o + M - 1);
    F sum = hv[0] * (ex[U] + dx[(U + M - 1) % M]);
#pragma GCC unroll 16
    for (int p = 1; p < M; ++p) sum += hv[p] * (ex[(U + p) % M] + dx[(U + M - 1 - p) % M]);
    store(o++, sum);
  };
  while (o + M <= n) each(step, std::make_index_sequence<M>());
  for (; o < n; ++o) {
    ex[M - 1] = e(o + M - 1);
    dx[M - 1] = d(o + M - 1);
    F sum = hv[0] * (ex[0] + dx[M - 1]);
#pragma GCC unroll 16
    for (int p = 1; p < M; ++p) sum += hv[p] * (ex[p] + dx[M - 1 - p]);
    store(o, sum);
#pragma GCC unroll 16
    for (int i = 0; i + 1 < M; ++i) {
      ex[i] = ex[i + 1];
      dx[i] = dx[i + 1];
    }
  }
}

// Calls f(std::integral_constant<int, slots>()), slots in 1 .. Max.
template <int Max, int K = 1, class Fn>
void with_slots(int slots, Fn&& f) {
  if constexpr (K <= Max) {
    if (slots == K) return f(std::integral_constant<int, K>());
    return with_slots<Max, K + 1>(slots, f);
  }
  throw std::logic_error("sweep with too many slots");
}

// One separable stage from In (uint8_t: straight alpha; float: premultiplied
// sums of an earlier stage) to Out, for C channels. Its rows go into `dst`,
// or with Next, to the next stage of a chain.
template <int C, class In, class Out, class Next = void>
class Separable {
  // Row vectors per sample in the horizontal pass: one channel alone would
  // be too few sums per weight loaded.
  static constexpr int P = C == 1 ? 2 : 1;
  static constexpr int R = P * L;  // rows per horizontal block
  static constexpr int CP = C * P;
  static constexpr int kVSlots = slots_for(kChunk);
  static constexpr int kHSlots = slots_for(CP);
  // Only a blur's single stage has passes to fold (passes.h), and folding is
  // compiled only where one can run.
  static constexpr bool kFolds = std::is_same_v<In, Out> && std::is_void_v<Next>;
  // A wide blur's first stage (a chain's, from bytes) evaluates it at every
  // other row, folded (vertical_halved).
  static constexpr bool kHalves = L == 16 && std::is_same_v<In, uint8_t> && !std::is_void_v<Next>;

  // One register pass of vertical_halved: output i adds w[p] (E(i + e + p) +
  // D(i + d + kPairs - 1 - p)), E(j) and D(j) the image's rows 2 j and 2 j + 1.
  struct PairChunk {
    int e, d;
    float w[kPairs];
  };
  // The farthest E(j) or D(j) either pass reads from an output i: |j - i|.
  static constexpr int kPairReach = kPairs + 1;

 public:
  // The radius of a pass this stage folds, or 0.
  static int fold_radius(const Pass& p) {
    const int r = static_cast<int>(p.half.size()) - 1;
    return kFolds && p.n_out == p.n_in && r >= 1 && r <= kFoldMax && p.n_in > r ? r : 0;
  }

  // The most rows one push into the next stage of a chain brings.
  static constexpr int kRowsOut = R;

  // Output pixels x_begin .. x_end - 1 of rows y_begin .. y_end - 1, written
  // from dst on (or pushed to `next`), from input rows of in_cols() pixels
  // from in_first() on, pushed in blocks of at most max_rows rows.
  //
  // whole: the pushed rows are blocks of one image in memory, whose earlier
  // rows stay readable (a folded vertical pass reads them again).
  Separable(Sweeps& sweeps, const Pass& hp, const Pass& vp, const Tile& t, int max_rows, Out* dst,
            size_t dst_stride, Next* next, bool whole)
      : hs_(sweeps.get(hp, t.x_begin, t.x_end, kHSlots)),
        vs_(sweeps.get(vp, t.y_begin, t.y_end, kVSlots)), vhalf_(vp.half.data()),
        vradius_(whole ? fold_radius(vp) : 0),
        vpairs_(whole && kHalves && vp.n_in == 2 * vp.n_out && vp.half.size() <= 2 * kPairs
                    ? static_cast<int>(vp.half.size())
                    : 0),
        n_rows_(vp.n_in), hhalf_(hp.half.data()),
        // Folded, the ring rows start at pixel x_begin - radius, so the
        // horizontal pass's window of every output lies in one row.
        hradius_(hs_.first >= t.x_begin - fold_radius(hp) ? fold_radius(hp) : 0),
        lead_(hradius_ > 0 ? static_cast<size_t>(hs_.first - (t.x_begin - hradius_)) * C : 0),
        n_cols_(hp.n_in), x_begin_(t.x_begin),
        in_len_(static_cast<size_t>(hs_.end - hs_.first) * C),
        out_len_(static_cast<size_t>(t.x_end - t.x_begin) * C),
        row_len_(round_up(
            std::max(lead_ + round_up(round_up(hs_.end - hs_.first, kCols) * C, kChunk * L),
                     round_up(round_up(t.x_end - t.x_begin, kCols) + 2 * hradius_, L) * C),
            kChunk * L)),
        dst_(dst), dst_stride_(dst_stride), next_(next) {
    // Ring of finished vertical rows: R for the horizontal pass, plus as
    // many as one block of input can finish.
    int most = 0;
    for (int g = 0; g < vs_.groups; ++g) {
      const int* ends = vs_.group_ends(g);
      for (int q = 0, lo = 0; q < vs_.per_group && ends[q] != INT_MAX; ++q) {
        while (ends[lo] <= ends[q] - max_rows) ++lo;
        most = std::max(most, q - lo + 1);
      }
    }
    if (vpairs_ > 0) pair_chunks(vp.half);
    // Folded, a push finishes at most its rows and, at the last, the radius;
    // halved, half as many. (A ring larger than L2 left the halved pass no
    // faster than the sweep: its rows left the cache before the horizontal
    // pass read them.)
    const int reach = vradius_ + vpairs_;
    ring_rows_ = vpairs_ > 0 ? R + (max_rows + vpairs_ + 1) / 2 + 2
                 : reach > 0 ? R + max_rows + reach
                             : R + most * vs_.groups;
    if (reach > 0) {
      // The rows one push reads: folded, its own and the radius either side;
      // halved, those of its outputs and each chunk's farthest pair.
      const int rows =
          vpairs_ > 0 ? max_rows + vpairs_ + 4 * kPairReach + 4 : max_rows + 3 * vradius_;
      folded_tail_.assign(static_cast<size_t>(rows) * L, In{});
      for (size_t i = 0; i < folded_tail_.size(); i += L) tail_rows_.push_back(&folded_tail_[i]);
    }
    ring_.assign(ring_rows_ * row_len_, 0.0f);
    if (reach == 0) {
      vsums_.assign(static_cast<size_t>(vs_.groups) * vs_.slots * row_len_, 0.0f);
      vnext_.assign(vs_.groups, 0);
      tail_.assign(static_cast<size_t>(max_rows) * kChunk * L, In{});
    }
    cols_.resize(round_up((kCols + 2 * hradius_) * C, L) * P * L);
    if (hradius_ > 0) hout_.resize(static_cast<size_t>(kCols) * CP * L);
    hsums_.resize(static_cast<size_t>(hs_.groups) * hs_.slots * CP * L);
    hnext_.resize(hs_.groups);
    out_.resize(round_up(out_len_, L) * P * L);
    if constexpr (!std::is_void_v<Next>) rows_.assign(R * next->row_stride(), 0.0f);
  }

  // Input rows first_row() .. end_row() - 1 are pushed in order, each from
  // pixel first_col() on.
  int first_row() const { return vs_.first; }
  int end_row() const { return vs_.end; }
  int first_col() const { return hs_.first; }
  int end_col() const { return hs_.end; }
  size_t row_stride() const { return row_len_; }

  void push(const In* src, size_t stride, int n) {
    if constexpr (kFolds)
      if (vradius_ > 0) {
        with_slots<kFoldMax>(vradius_,
                             [&](auto r) { vertical_folded<decltype(r)::value>(src, stride, n); });
        pushed_ += n;
        while (done_ - taken_ >= R) horizontal(R);
        return;
      }
    if constexpr (kHalves)
      if (vpairs_ > 0) {
        vertical_halved(src, stride, n);
        pushed_ += n;
        while (done_ - taken_ >= R) horizontal(R);
        return;
      }
    with_slots<kVSlots>(vs_.slots, [&](auto k) {
      constexpr int K = decltype(k)::value;
      const size_t chunk = kChunk * L, whole = in_len_ / chunk * chunk;
      if (whole < in_len_)  // the last, partial chunk from a zero-padded copy
        for (int r = 0; r < n; ++r)
          std::copy(src + r * stride + whole, src + r * stride + in_len_, &tail_[r * chunk]);
      // Chunk by chunk, and within a chunk group by group: the chunk's rows
      // are still in cache for the next group.
      for (size_t col = 0; col < in_len_; col += chunk)
        for (int g = 0; g < vs_.groups; ++g) {
          int q = vnext_[g];
          if (col < whole)
            vertical<K>(src + col, stride, n, g, col, q);
          else
            vertical<K>(tail_.data(), chunk, n, g, col, q);
          if (col + chunk >= in_len_) vnext_[g] = q;
        }
    });
    pushed_ += n;
    // Rows finish in order: every one whose window ends by now is complete.
    while (done_ < vs_.out_end - vs_.out_begin &&
           vs_.group_ends(done_ % vs_.groups)[done_ / vs_.groups] <= vs_.first + pushed_)
      ++done_;
    while (done_ - taken_ >= R) horizontal(R);
  }

  // After the last push: the rows still waiting for the horizontal pass.
  void flush() {
    if (done_ > taken_) horizontal(done_ - taken_);
    if constexpr (!std::is_void_v<Next>) next_->flush();
  }

 private:
  float* ring_row(int i) { return &ring_[static_cast<size_t>(i % ring_rows_) * row_len_]; }

  // The vertical sweep of n pushed rows over one column chunk of group g,
  // whose next output to finish is q.
  template <int K>
  void vertical(const In* src, size_t stride, int n, int g, size_t col, int& q) {
    float* saved = &vsums_[(static_cast<size_t>(g) * K * row_len_) + col * K];
    const float* w = vs_.group_weights(g) + static_cast<size_t>(pushed_) * K;
    // In locals: stores through char-typed copies could change members.
    float* const ring = ring_.data() + lead_ + col;
    const int rows = ring_rows_, groups = vs_.groups;
    const size_t row_len = row_len_;
    int at = (g + q * groups) % rows;  // the ring row of output q
    sweep<K, kChunk>(
        saved, w, vs_.group_ends(g), q, vs_.first + pushed_, n,
        [&](int r, F* x) {
          // The same columns of the next block: a column chunk's rows are
          // too far apart for the hardware to fetch them ahead.
          __builtin_prefetch(src + (r + n) * stride, 0, 1);
#pragma GCC unroll 8
          for (int v = 0; v < kChunk; ++v) {
            x[v] = Elem<In>::load(src + r * stride + v * L);
            if constexpr (C == 4 && std::is_same_v<In, uint8_t>)
              x[v] = premultiply_rgba(x[v], std::make_index_sequence<L>());
          }
        },
        [&](int, const F* f) {
          float* out = ring + static_cast<size_t>(at) * row_len;
          at = at + groups < rows ? at + groups : at + groups - rows;
#pragma GCC unroll 8
          for (int v = 0; v < kChunk; ++v) storev(out + v * L, f[v]);
        });
  }

  // For a folded vertical pass: in_rows_ gets the image's rows from `first`
  // on (mirror-reflected), `ins` of them, and out_rows_ the ring rows of the
  // next `outs` outputs. Returns the elements per row in whole vectors; the
  // rest of each input row goes to a zero-padded copy (tail_rows_).
  size_t gather_rows(const In* image, size_t stride, int first, int ins, int outs) {
    in_rows_.resize(ins);
    out_rows_.resize(outs);
    for (int i = 0; i < ins; ++i)
      in_rows_[i] = image + static_cast<ptrdiff_t>(reflect(first + i, n_rows_)) * stride;
    for (int o = 0; o < outs; ++o) out_rows_[o] = ring_row(done_ + o) + lead_;
    const size_t whole = in_len_ / L * L;
    if (whole < in_len_)
      for (int i = 0; i < ins; ++i)
        std::copy(in_rows_[i] + whole, in_rows_[i] + in_len_, tail_rows_[i]);
    return whole;
  }

  // The vertical pass folded (fold): the outputs that the rows pushed so far
  // complete, each from its 2 Rad + 1 rows of the image, mirror-reflected at
  // its edges.
  template <int Rad>
  void vertical_folded(const In* src, size_t stride, int n) {
    const int have = vs_.first + pushed_ + n;  // rows pushed, this block included
    const int y0 = vs_.out_begin + done_;
    const int y1 = have >= vs_.end ? vs_.out_end : std::min(vs_.out_end, have - Rad);
    if (y1 <= y0) return;
    const In* const image = src - static_cast<ptrdiff_t>(vs_.first + pushed_) * stride;
    const int outs = y1 - y0;
    const size_t whole = gather_rows(image, stride, y0 - Rad, outs + 2 * Rad, outs);
    for (size_t col = 0; col < in_len_; col += L) {
      const In* const* rows = col < whole ? in_rows_.data() : tail_rows_.data();
      const size_t at = col < whole ? col : 0;
      float* const* outs_at = out_rows_.data();
      const ptrdiff_t ahead = col < whole ? static_cast<ptrdiff_t>(outs) * stride : 0;
      fold<Rad>(
          vhalf_, outs,
          [&](int i) {
            // The same columns of the next push's rows: rows this far apart
            // are not fetched ahead by the hardware.
            __builtin_prefetch(rows[i] + at + ahead, 0, 1);
            F x = Elem<In>::load(rows[i] + at);
            if constexpr (C == 4 && std::is_same_v<In, uint8_t>)
              x = premultiply_rgba(x, std::make_index_sequence<L>());
            return x;
          },
          [&](int o, const F& sum) { storev(outs_at[o] + col, sum); });
    }
    done_ = y1 - vs_.out_begin;
  }

  // vertical_halved's two register passes for the pair weights h (passes.h,
  // at most 2 kPairs). Output i's pairs, rows 2 i - m and 2 i + 1 + m, are
  // E(i - t) and D(i + t) for m = 2 t, D(i - 1 - t) and E(i + 1 + t) for
  // m = 2 t + 1: in either set both rows move one step per output. Each set
  // is padded to kPairs pairs with zero weights.
  void pair_chunks(const std::vector<float>& h) {
    const int r = static_cast<int>(h.size());
    const auto weight = [&](int m) { return m < r ? h[m] : 0.0f; };
    PairChunk even{1 - kPairs, 0, {}}, odd{1, -kPairs, {}};
    for (int p = 0; p < kPairs; ++p) {
      even.w[p] = weight(2 * (kPairs - 1 - p));
      odd.w[p] = weight(2 * p + 1);
    }
    pair_chunks_ = {even, odd};
  }

  // The vertical pass of a stage evaluated at every other row (a pass with
  // pair weights, passes.h), folded: the outputs that the rows pushed so
  // far complete, in pair_chunks' two register passes, the second adding to
  // the first's sums.
  void vertical_halved(const In* src, size_t stride, int n) {
    const int have = vs_.first + pushed_ + n;  // rows pushed, this block included
    const int y0 = vs_.out_begin + done_;
    // Output i's last row is 2 i + vpairs_.
    const int y1 = have >= vs_.end
                       ? vs_.out_end
                       : std::min(vs_.out_end, have > vpairs_ ? (have - 1 - vpairs_) / 2 + 1 : 0);
    if (y1 <= y0) return;
    const In* const image = src - static_cast<ptrdiff_t>(vs_.first + pushed_) * stride;
    // Rows 2 (y0 - s) .. 2 (y1 + s) - 1: E(j) is in_rows_[2 (j - y0 + s)],
    // D(j) the one after it.
    const int s = kPairReach, outs = y1 - y0;
    const size_t whole = gather_rows(image, stride, 2 * (y0 - s), 2 * (outs + 2 * s), outs);
    for (size_t col = 0; col < in_len_; col += L) {
      const In* const* rows = col < whole ? in_rows_.data() : tail_rows_.data();
      const size_t at = col < whole ? col : 0;
      float* const* outs_at = out_rows_.data();
      const ptrdiff_t ahead = col < whole ? static_cast<ptrdiff_t>(2 * outs) * stride : 0;
      const auto load = [&](int i) {
        // The same columns of the next push's rows (as in vertical_folded).
        __builtin_prefetch(rows[i] + at + ahead, 0, 1);
        F x = Elem<In>::load(rows[i] + at);
        if constexpr (C == 4) x = premultiply_rgba(x, std::make_index_sequence<L>());
        return x;
      };
      bool first = true;
      for (const PairChunk& c : pair_chunks_) {
        const int e = 2 * (c.e + s), d = 2 * (c.d + s) + 1;
        fold_pairs<kPairs>(
            c.w, outs, [&](int k) { return load(e + 2 * k); },
            [&](int k) { return load(d + 2 * k); },
            [&](int o, const F& sum) {
              float* const out = outs_at[o] + col;
              storev(out, first ? sum : loadv<F>(out) + sum);
            });
        first = false;
      }
    }
    done_ = y1 - vs_.out_begin;
  }

  // The next nr (<= R) finished vertical rows through the horizontal pass.
  void horizontal(int nr) {
    const float* rows[R];
    for (int r = 0; r < R; ++r) rows[r] = ring_row(taken_ + (r < nr ? r : 0));
    bool folded = false;
    if constexpr (kFolds)
      if (hradius_ > 0) {
        for (int r = 0; r < nr; ++r) mirror_edges(ring_row(taken_ + r));
        with_slots<kFoldMax>(hradius_,
                             [&](auto k) { horizontal_folded<decltype(k)::value>(rows); });
        folded = true;
      }
    if (!folded) sweep_rows(rows);
    write_rows(nr);
    taken_ += nr;
  }

  // A folded horizontal pass's ring row, from pixel x_begin - radius on: the
  // pixels left of 0 and from n_cols_ on as their mirror images.
  void mirror_edges(float* row) const {
    const int v0 = x_begin_ - hradius_, v1 = x_begin_ + static_cast<int>(out_len_ / C) + hradius_;
    const auto mirror = [&](int v) {
      const float* from = row + (reflect(v, n_cols_) - v0) * C;
      std::copy(from, from + C, row + (v - v0) * C);
    };
    for (int v = v0; v < std::min(0, v1); ++v) mirror(v);
    for (int v = std::max(n_cols_, v0); v < v1; ++v) mirror(v);
  }

  // Folded (fold), chunk by chunk: each output pixel from the 2 Rad + 1
  // around it, one channel (and row vector) at a time.
  template <int Rad>
  void horizontal_folded(const float* const* rows) {
    const int width = static_cast<int>(out_len_ / C);
    float* const hout = hout_.data();
    for (int x0 = 0; x0 < width; x0 += kCols) {
      const int n = std::min(kCols, width - x0);
      transpose_cols(rows, static_cast<size_t>(x0) * C, static_cast<size_t>(n + 2 * Rad) * C);
      const float* const cols = cols_.data();
      for (int v = 0; v < CP; ++v)
        fold<Rad>(
            hhalf_, n, [&](int j) { return loadv<F>(cols + (j * CP + v) * L); },
            [&](int o, const F& sum) { storev(hout + (o * CP + v) * L, sum); });
      for (int o = 0; o < n; ++o) {
        F f[CP];
        for (int v = 0; v < CP; ++v) f[v] = loadv<F>(hout + (o * CP + v) * L);
        store_col(out_.data() + static_cast<size_t>(x0 + o) * CP * L, f);
      }
    }
  }

  // The horizontal pass swept, chunk by chunk.
  void sweep_rows(const float* const* rows) {
    std::fill(hsums_.begin(), hsums_.end(), 0.0f);
    std::fill(hnext_.begin(), hnext_.end(), 0);
    const int cols = hs_.end - hs_.first;
    for (int c0 = 0; c0 < cols; c0 += kCols) {
      transpose_cols(rows, static_cast<size_t>(c0) * C, static_cast<size_t>(kCols) * C);
      for (int g = 0; g < hs_.groups; ++g) sweep_cols(g, c0, std::min(c0 + kCols, cols), hnext_[g]);
    }
  }

  // cols_[(j * C + c) * P + p] = sample j, channel c of rows p * L .. p * L
  // + L - 1, for the n elements of the rows from element `base` on (counted
  // from the ring row's start).
  void transpose_cols(const float* const* rows, size_t base, size_t n) {
    for (int p = 0; p < P; ++p)
      for (size_t i = 0; i < n; i += L) {
        F m[L];
        for (int r = 0; r < L; ++r) m[r] = loadv<F>(rows[p * L + r] + base + i);
        transpose(m);
        for (int j = 0; j < L; ++j) storev(&cols_[((i + j) * P + p) * L], m[j]);
      }
  }

  // The horizontal sweep of group g, whose next output to finish is q, over
  // the pixels c0 .. c1 - 1 of the chunk at c0.
  void sweep_cols(int g, int c0, int c1, int& q) {
    with_slots<kHSlots>(hs_.slots, [&](auto k) {
      constexpr int K = decltype(k)::value;
      // In locals: stores through char-typed copies could change members.
      Out* const out = out_.data();
      const int groups = hs_.groups;
      const float* const cols = cols_.data();
      sweep<K, CP>(
          &hsums_[static_cast<size_t>(g) * K * CP * L],
          hs_.group_weights(g) + static_cast<size_t>(c0) * K, hs_.group_ends(g), q, hs_.first + c0,
          c1 - c0,
          [&](int j, F* x) {
#pragma GCC unroll 8
            for (int v = 0; v < CP; ++v) x[v] = loadv<F>(cols + (j * CP + v) * L);
          },
          [&](int done, const F* f) {
            store_col(out + static_cast<size_t>(g + done * groups) * CP * L, f);
          });
    });
  }

  // One output pixel (C channels of P row vectors), finished or kept as
  // float, to o[(c * P + p) * L].
  static void store_col(Out* o, const F* f) {
    for (int p = 0; p < P; ++p) {
      F px[C], v[C];
      for (int c = 0; c < C; ++c) px[c] = f[c * P + p];
      if constexpr (std::is_same_v<Out, float>) {
        for (int c = 0; c < C; ++c) storev(o + (c * P + p) * L, px[c]);
      } else {
        finish<C>(px, v);
        for (int c = 0; c < C; ++c) storev(o + (c * P + p) * L, Elem<Out>::pack(v[c]));
      }
    }
  }

  // out_ transposed back into the block's nr rows: to dst_, or to the next
  // stage.
  void write_rows(int nr) {
    typedef typename Elem<Out>::V V;
    Out* base;
    size_t stride;
    if constexpr (std::is_void_v<Next>) {
      base = dst_ + static_cast<size_t>(taken_) * dst_stride_;
      stride = dst_stride_;
    } else {
      base = rows_.data();
      stride = next_->row_stride();
    }
    for (int p = 0; p < P && p * L < nr; ++p) {
      const int rows = std::min(L, nr - p * L);
      for (size_t i = 0; i < out_len_; i += L) {
        V m[L];
        for (int j = 0; j < L; ++j) m[j] = loadv<V>(&out_[((i + j) * P + p) * L]);
        transpose(m);
        const size_t n = std::min<size_t>(L, out_len_ - i);
        for (int r = 0; r < rows; ++r) {
          Out* d = base + (p * L + r) * stride + i;
          if (n == L)
            storev(d, m[r]);
          else
            for (size_t e = 0; e < n; ++e) d[e] = m[r][e];
        }
      }
    }
    if constexpr (!std::is_void_v<Next>) next_->push(rows_.data(), stride, nr);
  }

  const Sweep &hs_, &vs_;
  const float* const vhalf_;  // the vertical pass's half kernel, when folded
  const int vradius_;         // its radius, or 0: the vertical pass is swept
  const int vpairs_;          // its pairs, evaluated at every other row, or 0
  const int n_rows_;          // the image's rows
  const float* const hhalf_;  // the same for the horizontal pass
  const int hradius_;
  const size_t lead_;  // floats in a ring row before pixel first_col()
  const int n_cols_;   // the image's columns
  const int x_begin_;
  const size_t in_len_, out_len_;  // elements per input and output row
  const size_t row_len_;           // floats per ring row, padded for whole chunks
  Out* const dst_;
  const size_t dst_stride_;
  Next* const next_;
  int ring_rows_ = 0;
  int pushed_ = 0;                      // input rows pushed so far
  int done_ = 0;                        // vertical rows finished
  int taken_ = 0;                       // of those, through the horizontal pass
  std::vector<float> ring_;             // finished vertical rows
  std::vector<float> vsums_;            // vertical running sums between pushes
  std::vector<int> vnext_;              // per group, the next output to finish
  std::vector<In> tail_;                // the pushed rows' last, partial chunk
  std::vector<In> folded_tail_;         // folded: the rows' last, partial vector
  std::vector<const In*> in_rows_;      // folded: one push's input rows
  std::vector<In*> tail_rows_;          // folded: folded_tail_'s rows
  std::vector<float*> out_rows_;        // folded: and its output rows
  std::vector<float> cols_;             // one transposed chunk of kCols pixels
  std::vector<float> hsums_;            // horizontal running sums between chunks
  std::vector<float> hout_;             // folded: one chunk's sums, before store_col
  std::vector<int> hnext_;              // per group, the next output to finish
  std::vector<PairChunk> pair_chunks_;  // halved: vertical_halved's register passes
  std::vector<Out> out_;                // the horizontal pass's output, transposed
  std::vector<float> rows_;             // the block's rows for the next stage
};

// Pushes the stage's rows, from src (its first column of row 0) with `len`
// elements per row, in blocks.
template <class S, class T>
void feed(S& stage, const T* src, size_t len, int block) {
  for (int y = stage.first_row(); y < stage.end_row(); y += block)
    stage.push(src + y * len, len, std::min(block, stage.end_row() - y));
  stage.flush();
}

// From In (8-bit pixels, or premultiplied floats) to Out (the same).
template <int C, class In, class Out>
void run(const In* src, Dims in, Out* dst, const std::vector<Stage>& stages, const Tile& t,
         Sweeps& sweeps) {
  const size_t in_len = static_cast<size_t>(in.w) * C;
  const size_t out_len = static_cast<size_t>(stages.back().horizontal.n_out) * C;
  Out* out = dst + t.y_begin * out_len + static_cast<size_t>(t.x_begin) * C;
  if (stages.size() == 1) {
    const Stage& s = stages[0];
    Separable<C, In, Out> one(sweeps, s.horizontal, s.vertical, t, kBlock, out, out_len, nullptr,
                              true);
    return feed(one, src + static_cast<size_t>(one.first_col()) * C, in_len, kBlock);
  }
  if (stages.size() == 2) {
    // The first stage's rows go straight into the second.
    typedef Separable<C, float, Out> Last;
    typedef Separable<C, In, float, Last> First;
    Last last(sweeps, stages[1].horizontal, stages[1].vertical, t, First::kRowsOut, out, out_len,
              nullptr, false);
    const Tile t1{last.first_col(), last.end_col(), last.first_row(), last.end_row()};
    First first(sweeps, stages[0].horizontal, stages[0].vertical, t1, kBlock, nullptr, 0, &last,
                true);
    return feed(first, src + static_cast<size_t>(first.first_col()) * C, in_len, kBlock);
  }
  // Longer chains (no public call makes one) go through whole float images.
  std::vector<float> cur, next;
  size_t len = in_len;
  for (size_t i = 0; i < stages.size(); ++i) {
    const Pass &hp = stages[i].horizontal, &vp = stages[i].vertical;
    const size_t n = static_cast<size_t>(hp.n_out) * C;
    const Tile whole{0, hp.n_out, 0, vp.n_out};
    if (i == 0) {
      next.assign(static_cast<size_t>(vp.n_out) * n, 0.0f);
      Separable<C, In, float> s(sweeps, hp, vp, whole, kBlock, next.data(), n, nullptr, true);
      feed(s, src + static_cast<size_t>(s.first_col()) * C, len, kBlock);
    } else if (i + 1 == stages.size()) {
      Separable<C, float, Out> s(sweeps, hp, vp, whole, kBlock, dst, n, nullptr, true);
      feed(s, cur.data() + static_cast<size_t>(s.first_col()) * C, len, kBlock);
    } else {
      next.assign(static_cast<size_t>(vp.n_out) * n, 0.0f);
      Separable<C, float, float> s(sweeps, hp, vp, whole, kBlock, next.data(), n, nullptr, true);
      feed(s, cur.data() + static_cast<size_t>(s.first_col()) * C, len, kBlock);
    }
    len = n;
    cur.swap(next);
  }
}

}  // namespace

// T: uint8_t for 8-bit images, float for premultiplied floats (16-bit and
// float images, converted by cpu.cpp).
template <class T>
void separable(const T* src, Dims in, T* dst, const std::vector<Stage>& stages, const Tile& t,
               Sweeps& sweeps) {
  switch (in.c) {
    case 1: return run<1>(src, in, dst, stages, t, sweeps);
    case 3: return run<3>(src, in, dst, stages, t, sweeps);
    case 4: return run<4>(src, in, dst, stages, t, sweeps);
  }
  throw std::invalid_argument("channels must be 1, 3 or 4");
}
template void separable(const uint8_t*, Dims, uint8_t*, const std::vector<Stage>&, const Tile&,
                        Sweeps&);
template void separable(const float*, Dims, float*, const std::vector<Stage>&, const Tile&,
                        Sweeps&);

}  // namespace FI_ENGINE
}  // namespace fi
