// The kernels. A separable stage is one kernel: each block takes a strip of
// output columns and a run of bands of kBandRows output rows; for each band it
// computes the vertical pass over the strip's input columns into shared
// memory, then the horizontal pass from there, then writes the band's output
// rows once, in whole words (docs/kernels.md has the design and its figures).
#include <type_traits>

#include "cuda_kernels.h"
#include "cuda_memory.h"
#include "pixel.h"

namespace fi {
namespace {

// Where a stage reads and writes: 8-bit images are packed rows, float
// intermediates have rows `pitch` floats apart (a multiple of 4, for float4).
struct StageGeometry {
  int out_w, out_h;
  size_t src_pitch, dst_pitch;  // elements per row
  int bands_per_block;          // of the vertical pass
};

// Four consecutive elements of an 8-bit row from any byte address: the aligned
// words around them (an Image's memory is padded so that the second is in it).
__device__ __forceinline__ uint32_t load_bytes(const uint8_t* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t{3});
  const unsigned shift = static_cast<unsigned>(a & 3) * 8;
  const uint32_t lo = __ldg(w);
  if (shift == 0) return lo;
  const uint64_t both = static_cast<uint64_t>(__ldg(w + 1)) << 32 | lo;
  return static_cast<uint32_t>(both >> shift);
}

// Byte i of w as a float, exactly: one byte permutation makes the float
// 2^23 + b (b in the low mantissa bits), one subtraction leaves b; both at full
// rate, unlike an integer-to-float conversion.
__device__ __forceinline__ float byte_float(uint32_t w, int i) {
  return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | i)) - 8388608.0f;
}

// The four elements at p as floats, 8-bit RGBA premultiplied (then the four
// are one pixel: rows and strips of RGBA start at whole pixels).
template <int C>
__device__ __forceinline__ void load4(const uint8_t* p, float v[4]) {
  const uint32_t w = load_bytes(p);
  for (int i = 0; i < 4; ++i) v[i] = byte_float(w, i);
  if (C == 4)
    for (int i = 0; i < 3; ++i) v[i] = premultiply(v[i], v[3]);
}

template <int C>
__device__ __forceinline__ void load4(const float* p, float v[4]) {
  const float4 q = __ldg(reinterpret_cast<const float4*>(p));
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}

// The kBandLanes weights at p (two float4 reads; in the vertical pass the
// same address for every thread of the block).
__device__ __forceinline__ void band_weights(const float* p, float w[kBandLanes]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 c = __ldg(reinterpret_cast<const float4*>(p) + 1);
  w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = c.x, w[5] = c.y, w[6] = c.z, w[7] = c.w;
}

__device__ __forceinline__ const float* band_row(const Bands& b, int band) {
  return b.weights + static_cast<size_t>(band) * b.height * kBandLanes;
}

// The vertical pass of band `band` over the strip's elements [e0, e0 +
// elements): kBandRows sums per element, 4 elements per thread, each input
// row read once per band (the rows of neighbouring bands overlap and come
// from the cache). Writes kBandRows rows of `pitch` floats.
template <int C, class In>
__device__ void vertical_band(const In* src, size_t src_pitch, const Bands& v, int band, int e0,
                              int elements, float* rows, int pitch) {
  const int first = v.first[band], length = v.length[band];
  for (int e = 4 * static_cast<int>(threadIdx.x); e < elements; e += 4 * kThreads) {
    float acc[kBandRows][4] = {};
    const In* p = src + static_cast<size_t>(first) * src_pitch + e0 + e;
    const float* wp = band_row(v, band);
#pragma unroll 2
    for (int u = 0; u < length; ++u, p += src_pitch, wp += kBandLanes) {
      float px[4], w[kBandLanes];
      load4<C>(p, px);
      band_weights(wp, w);
      for (int r = 0; r < kBandRows; ++r)
        for (int i = 0; i < 4; ++i) acc[r][i] += w[r] * px[i];
    }
    for (int r = 0; r < kBandRows; ++r)
      *reinterpret_cast<float4*>(rows + r * pitch + e) =
          float4{acc[r][0], acc[r][1], acc[r][2], acc[r][3]};
  }
}

// The horizontal pass from the band's rows in shared memory: a thread
// computes kBandPixels neighbouring outputs of one row, so each value it reads
// serves all of their windows. Threads next to each other take the same
// pixels of different rows, so the weights they read are shared. Outputs go
// to `out` (kBandRows rows of `width` pixels), rounded if 8-bit.
template <int C, class Out>
__device__ void horizontal_band(const float* rows, int pitch, int e0, const Bands& h, int x0,
                                int x1, int width, int rows_left, Out* out) {
  const int band0 = x0 / kBandPixels, bands = (x1 - x0 + kBandPixels - 1) / kBandPixels;
  for (int item = threadIdx.x; item < kBandRows * bands; item += kThreads) {
    const int r = item % kBandRows, band = band0 + item / kBandRows;
    if (r >= rows_left) continue;
    const int first = h.first[band], length = h.length[band];
    const float* in = rows + r * pitch + first * C - e0;
    const float* wp = band_row(h, band);
    float acc[kBandPixels][C] = {};
    for (int u = 0; u < length; ++u, in += C, wp += kBandLanes) {
      float px[C], w[kBandLanes];
      if constexpr (C == 4) {
        const float4 q = *reinterpret_cast<const float4*>(in);
        px[0] = q.x, px[1] = q.y, px[2] = q.z, px[3] = q.w;
      } else {
        for (int c = 0; c < C; ++c) px[c] = in[c];
      }
      band_weights(wp, w);
      for (int p = 0; p < kBandPixels; ++p)
        for (int c = 0; c < C; ++c) acc[p][c] += w[p] * px[c];
    }
    for (int p = 0; p < kBandPixels; ++p) {
      const int x = band * kBandPixels + p;
      if (x >= x1) break;
      Out* o = out + (static_cast<size_t>(r) * width + (x - x0)) * C;
      if constexpr (std::is_same_v<Out, float>)
        for (int c = 0; c < C; ++c) o[c] = acc[p][c];  // stays premultiplied, unrounded
      else
        store_u8<C>(acc[p], o);
    }
  }
}

// The band's finished rows from shared memory to the image, each written once.
// 8-bit rows go as aligned 4-byte words; the bytes of a word at either end of
// a row that belong to a neighbouring strip or row are left to their block.
template <int C>
__device__ void write_rows(const uint8_t* out, int width, int x0, int x1, int y0, int rows_left,
                           const StageGeometry& g, uint8_t* dst) {
  const int row_bytes = (x1 - x0) * C;
  const int words = row_bytes / 4 + 2;  // a row's bytes touch at most this many words
  for (int item = threadIdx.x; item < kBandRows * words; item += kThreads) {
    const int r = item / words, k = item % words;
    if (r >= rows_left) continue;
    const size_t start = (static_cast<size_t>(y0 + r) * g.out_w + x0) * C;
    const size_t word = start / 4 + k;
    if (word * 4 >= start + row_bytes) continue;
    const uint8_t* from = out + static_cast<size_t>(r) * width * C;
    uint32_t value = 0;
    bool whole = true;
    for (int b = 0; b < 4; ++b) {
      const size_t at = word * 4 + b;
      if (at < start || at >= start + row_bytes)
        whole = false;
      else
        value |= static_cast<uint32_t>(from[at - start]) << (8 * b);
    }
    if (whole) {
      *reinterpret_cast<uint32_t*>(dst + word * 4) = value;
      continue;
    }
    for (int b = 0; b < 4; ++b) {
      const size_t at = word * 4 + b;
      if (at >= start && at < start + row_bytes) dst[at] = static_cast<uint8_t>(value >> (8 * b));
    }
  }
}

// Float rows (an intermediate between stages): one float per thread.
template <int C>
__device__ void write_rows(const float* out, int width, int x0, int x1, int y0, int rows_left,
                           const StageGeometry& g, float* dst) {
  const int row = (x1 - x0) * C;
  for (int item = threadIdx.x; item < kBandRows * row; item += kThreads) {
    const int r = item / row, k = item % row;
    if (r >= rows_left) continue;
    dst[static_cast<size_t>(y0 + r) * g.dst_pitch + static_cast<size_t>(x0) * C + k] =
        out[static_cast<size_t>(r) * width * C + k];
  }
}

// One separable stage (see the top of this file). Block b takes strip
// b % strips and the bands [chunk * bands_per_block, ...) of chunk
// b / strips. Shared memory: the vertical results, then the outputs.
template <int C, class In, class Out>
__global__ void __launch_bounds__(kThreads)
    stage_kernel(const In* src, Out* dst, StageGeometry g, Bands v, Bands h, Strips s) {
  const int strip = static_cast<int>(blockIdx.x) % s.count;
  const int chunk = static_cast<int>(blockIdx.x) / s.count;
  const int x0 = strip * s.width, x1 = x0 + s.width < g.out_w ? x0 + s.width : g.out_w;
  // The strip's input elements, from a multiple of 4 (whole float4s; whole
  // pixels for RGBA).
  const int e0 = s.px0[strip] * C / 4 * 4;
  const int elements = (s.px1[strip] * C - e0 + 3) / 4 * 4;
  const int pitch = vertical_pitch(s.elements);
  float* rows = shared_memory<float>();
  Out* out = reinterpret_cast<Out*>(rows + kBandRows * pitch);
  const int band_end =
      (chunk + 1) * g.bands_per_block < v.count ? (chunk + 1) * g.bands_per_block : v.count;
  for (int band = chunk * g.bands_per_block; band < band_end; ++band) {
    const int y0 = band * kBandRows, rows_left = g.out_h - y0;
    vertical_band<C>(src, g.src_pitch, v, band, e0, elements, rows, pitch);
    __syncthreads();  // the band's vertical results are complete
    horizontal_band<C>(rows, pitch, e0, h, x0, x1, s.width, rows_left, out);
    __syncthreads();  // its outputs are complete, and `rows` is free again
    write_rows<C>(out, s.width, x0, x1, y0, rows_left, g, dst);
    // `out` is rewritten only after the next band's first barrier.
  }
}

// The two-pass form of a stage, for strips too wide for shared memory (an
// extreme shrink): grid-stride loops through a float intermediate.
template <int C, class In>
struct Row {
  const In* p;
  __device__ void load(int i, float px[C]) const {
    if constexpr (std::is_same_v<In, float>)
      load_f32<C>(p + static_cast<size_t>(i) * C, px);
    else
      load_u8<C>(p + static_cast<size_t>(i) * C, px);
  }
};

template <int C>
struct F32Column {
  const float* p;
  size_t pitch;  // floats between consecutive rows
  __device__ void load(int i, float px[C]) const { load_f32<C>(p + i * pitch, px); }
};

// The horizontal pass's weights, tap-major: neighbouring threads compute
// neighbouring outputs, so their reads of one tap are contiguous.
struct TapMajor {
  const float* p;  // tap 0 of this output
  int n_out;
  __device__ float operator[](int k) const { return p[static_cast<size_t>(k) * n_out]; }
};

template <int C, class In>
__global__ void horizontal_kernel(const In* src, size_t src_pitch, int rows, PassView hp,
                                  float* tmp) {
  const size_t n = static_cast<size_t>(rows) * hp.n_out;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / hp.n_out), x = static_cast<int>(i % hp.n_out);
    const Row<C, In> row{src + static_cast<size_t>(y) * src_pitch};
    weighted_sum<C>(row, hp.start[x], TapMajor{hp.weights + x, hp.n_out}, hp.taps, tmp + i * C);
  }
}

template <int C, class Out>
__global__ void vertical_kernel(const float* tmp, int w, PassView vp, Out* dst, size_t dst_pitch) {
  const size_t n = static_cast<size_t>(vp.n_out) * w;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / w), x = static_cast<int>(i % w);
    const F32Column<C> column{tmp + static_cast<size_t>(x) * C, static_cast<size_t>(w) * C};
    float acc[C];
    weighted_sum<C>(column, vp.start[y], vp.weights + static_cast<size_t>(y) * vp.taps, vp.taps,
                    acc);
    Out* o = dst + y * dst_pitch + static_cast<size_t>(x) * C;
    if constexpr (std::is_same_v<Out, float>)
      for (int c = 0; c < C; ++c) o[c] = acc[c];
    else
      store_u8<C>(acc, o);
  }
}

// Quantisation through its byte table (quantize_table), copied into shared
// memory by each block: 16 bytes of the image per thread and step.
__global__ void __launch_bounds__(kThreads)
    quantize_kernel(const uint8_t* src, Dims d, uint8_t* dst, const uint8_t* table, int rows) {
  uint8_t* t = shared_memory<uint8_t>();
  for (int i = threadIdx.x; i < rows * 16; i += kThreads)
    reinterpret_cast<float4*>(t)[i] = __ldg(reinterpret_cast<const float4*>(table) + i);
  __syncthreads();
  const size_t row_bytes = static_cast<size_t>(d.w) * d.c, n = row_bytes * d.h;
  for (size_t chunk = blockIdx.x * static_cast<size_t>(kThreads) + threadIdx.x; chunk * 16 < n;
       chunk += static_cast<size_t>(gridDim.x) * kThreads) {
    const size_t i0 = chunk * 16;
    // Where the chunk starts: row y, pixel x, channel c; stepped per byte.
    int y = static_cast<int>(i0 / row_bytes);
    const int in_row = static_cast<int>(i0 - y * row_bytes);
    int x = in_row / d.c, c = in_row - x * d.c;
    uint8_t b[16];
    *reinterpret_cast<float4*>(b) = __ldg(reinterpret_cast<const float4*>(src + i0));
#pragma unroll
    for (int k = 0; k < 16; ++k) {
      // Alpha is left as it is (quantize_pixel).
      const int row = rows == 1 ? 0 : (y & 7) * 8 + (x & 7);
      if (!(d.c == 4 && c == 3)) b[k] = t[row * 256 + b[k]];
      if (++c == d.c) {
        c = 0;
        if (++x == d.w) x = 0, ++y;
      }
    }
    if (i0 + 16 <= n)
      *reinterpret_cast<float4*>(dst + i0) = *reinterpret_cast<const float4*>(b);
    else
      for (size_t k = 0; i0 + k < n; ++k) dst[i0 + k] = b[k];
  }
}

// The start-up probe: a formula of pixel.h per element, which the host checks.
__global__ void probe_kernel(uint8_t* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    out[i] = quantize_value(i & 255, 7, i, i >> 3, true);
}

// Rows of a float intermediate, in floats: whole float4s.
size_t float_pitch(int w, int c) { return (static_cast<size_t>(w) * c + 3) / 4 * 4; }

template <int C, class In, class Out>
void stage(const In* src, size_t src_pitch, Dims in, Out* dst, size_t dst_pitch, const Stage& st,
           const DeviceStage& t) {
  const int out_w = st.horizontal.n_out, out_h = st.vertical.n_out;
  const Strips& s = t.strips[C];
  if (s.width == 0) {
    const size_t tmp_items = static_cast<size_t>(in.h) * out_w;
    auto tmp = device_array<float>(tmp_items * C);
    launch(horizontal_kernel<C, In>, tmp_items, src, src_pitch, in.h, t.horizontal_pass, tmp.get());
    launch(vertical_kernel<C, Out>, static_cast<size_t>(out_h) * out_w, tmp.get(), out_w,
           t.vertical_pass, dst, dst_pitch);
    return;
  }
  // Enough blocks to fill the device a few times over; each takes as many
  // bands as that leaves it, so that one band's rows are the next one's cache.
  const size_t units = static_cast<size_t>(s.count) * t.vertical.count;
  const size_t target = static_cast<size_t>(multiprocessors()) * 4;
  const int per_block = static_cast<int>(std::max<size_t>(1, (units + target - 1) / target));
  const int chunks = (t.vertical.count + per_block - 1) / per_block;
  const StageGeometry g{out_w, out_h, src_pitch, dst_pitch, per_block};
  launch_blocks(stage_kernel<C, In, Out>, s.count * chunks,
                stage_shared_bytes(s.elements, s.width, C), src, dst, g, t.vertical, t.horizontal,
                s);
}

template <int C>
void run_stages(const uint8_t* src, Dims in, uint8_t* dst, const Plan& plan,
                const DevicePlan& tables) {
  // Between stages the image stays in premultiplied floats, as on the CPU.
  std::shared_ptr<float> cur, next;
  size_t cur_pitch = 0;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const Stage& s = plan.stages[i];
    const DeviceStage& t = tables.stages[i];
    const bool first = i == 0, last = i + 1 == plan.stages.size();
    const size_t next_pitch = float_pitch(s.horizontal.n_out, C);
    if (!last) next = device_array<float>(s.vertical.n_out * next_pitch);
    const size_t packed = static_cast<size_t>(in.w) * C,
                 out_packed = s.horizontal.n_out * size_t{C};
    if (first && last)
      stage<C>(src, packed, in, dst, out_packed, s, t);
    else if (first)
      stage<C>(src, packed, in, next.get(), next_pitch, s, t);
    else if (last)
      stage<C>(cur.get(), cur_pitch, in, dst, out_packed, s, t);
    else
      stage<C>(cur.get(), cur_pitch, in, next.get(), next_pitch, s, t);
    in = {s.vertical.n_out, s.horizontal.n_out, C};
    cur.swap(next);
    cur_pitch = next_pitch;
  }
}

}  // namespace

void run_separable(const uint8_t* src, Dims in, uint8_t* dst, const Plan& plan,
                   const DevicePlan& tables) {
  if (in.c == 1) run_stages<1>(src, in, dst, plan, tables);
  if (in.c == 3) run_stages<3>(src, in, dst, plan, tables);
  if (in.c == 4) run_stages<4>(src, in, dst, plan, tables);
}

void run_quantize(const uint8_t* src, Dims d, uint8_t* dst, int levels, bool dither) {
  const auto table = quantize_table(levels, dither);  // kept by the cache for the process
  const int rows = dither ? 64 : 1;
  const size_t chunks = (d.bytes() + 15) / 16;
  launch_blocks(quantize_kernel, grid_for(chunks), static_cast<size_t>(rows) * 256, src, d, dst,
                table.get(), rows);
}

void run_probe(uint8_t* out, int n) { launch(probe_kernel, n, out, n); }

uint8_t probe_value(int i) { return quantize_value(i & 255, 7, i, i >> 3, true); }

}  // namespace fi
