// The kernel of a separable stage (docs/kernels.md): each block takes a strip
// of output columns and a run of bands of kBandRows output rows; for each
// band it computes the vertical pass over the strip's input columns into
// shared memory, then the horizontal pass from there, then writes the band's
// output rows once, in whole words. Included by the files that instantiate
// launch_stage (cuda_stage_u8.cu, cuda_stage_f32.cu) and nowhere else.
#pragma once

#include <type_traits>

#include "cuda_launch.h"
#include "cuda_stage.h"
#include "pixel.h"

namespace fi {
namespace {

// The aligned words around four consecutive elements of an 8-bit row at any
// byte address (an Image's memory is padded so that the second is in it).
// The vertical pass fetches rows two ahead of their use and converts them
// when it gets there, so that a warp has three rows' loads in flight.
struct Bytes4 {
  uint32_t lo, hi;
  unsigned shift;
};

__device__ __forceinline__ Bytes4 fetch(const uint8_t* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t{3});
  const unsigned shift = static_cast<unsigned>(a & 3) * 8;
  return {__ldg(w), shift != 0 ? __ldg(w + 1) : 0u, shift};
}

__device__ __forceinline__ float4 fetch(const float* p) {
  return __ldg(reinterpret_cast<const float4*>(p));
}

// Byte i of w as a float, exactly: one byte permutation makes the float
// 2^23 + b (b in the low mantissa bits), one subtraction leaves b; both at full
// rate, unlike an integer-to-float conversion.
__device__ __forceinline__ float byte_float(uint32_t w, int i) {
  return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | i)) - 8388608.0f;
}

// The four fetched elements as floats, 8-bit RGBA premultiplied (then the
// four are one pixel: rows and strips of RGBA start at whole pixels).
template <int C>
__device__ __forceinline__ void convert(const Bytes4& b, float v[4]) {
  const auto w = static_cast<uint32_t>((static_cast<uint64_t>(b.hi) << 32 | b.lo) >> b.shift);
  for (int i = 0; i < 4; ++i) v[i] = byte_float(w, i);
  if (C == 4)
    for (int i = 0; i < 3; ++i) v[i] = premultiply(v[i], v[3]);
}

template <int C>
__device__ __forceinline__ void convert(const float4& q, float v[4]) {
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
    auto now = fetch(p), next = length > 1 ? fetch(p + src_pitch) : now;
    for (int u = 0; u < length; ++u, p += src_pitch, wp += kBandLanes) {
      const auto ahead = u + 2 < length ? fetch(p + 2 * src_pitch) : now;
      float px[4], w[kBandLanes];
      convert<C>(now, px);
      now = next, next = ahead;
      band_weights(wp, w);
      for (int r = 0; r < kBandRows; ++r)
        for (int i = 0; i < 4; ++i) acc[r][i] += w[r] * px[i];
    }
    for (int r = 0; r < kBandRows; ++r)
      *reinterpret_cast<float4*>(rows + r * pitch + e) =
          float4{acc[r][0], acc[r][1], acc[r][2], acc[r][3]};
  }
}

// Where output pixel x of band row r goes in shared memory. 8-bit rows are
// kept at the byte offset their first byte has within a 4-byte word of the
// image, so that they go out as whole words (write_rows), in rows of
// out_pitch bytes; rows of floats are packed. `width` pixels per row.
template <int C>
__device__ __forceinline__ int out_pitch(int width) {
  return (width * C + 3 + 4) / 4 * 4;  // room for the offset, in whole words
}

template <int C>
__device__ __forceinline__ int out_offset(const uint8_t*, const StageGeometry& g, int width, int r,
                                          int y, int x0, int x) {
  const unsigned shift = (static_cast<unsigned>(y) * g.out_w + x0) * C & 3;  // mod 4 survives
  return r * out_pitch<C>(width) + static_cast<int>(shift) + (x - x0) * C;   // wrap-around
}

template <int C>
__device__ __forceinline__ int out_offset(const float*, const StageGeometry&, int width, int r, int,
                                          int x0, int x) {
  return (r * width + (x - x0)) * C;
}

// The horizontal pass from the band's rows in shared memory: a thread
// computes kBandPixels neighbouring outputs of one row, so each value it reads
// serves all of their windows. Threads next to each other take the same
// pixels of different rows, so the weights they read are shared. Outputs go
// to `out`, rounded if 8-bit.
template <int C, class Out>
__device__ void horizontal_band(const float* rows, int pitch, int e0, const Bands& h, int x0,
                                int x1, int width, int y0, int rows_left, const StageGeometry& g,
                                Out* out) {
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
      Out* o = out + out_offset<C>(out, g, width, r, y0 + r, x0, x);
      if constexpr (std::is_same_v<Out, float>)
        for (int c = 0; c < C; ++c) o[c] = acc[p][c];  // stays premultiplied, unrounded
      else
        store_u8<C>(acc[p], o);
    }
  }
}

// The band's finished rows from shared memory to the image, each written once.
// 8-bit rows go as aligned 4-byte words; of the words at either end of a row,
// only the row's own bytes are written (the others belong to a neighbouring
// strip or row, written by their block).
template <int C>
__device__ void write_rows(const uint8_t* out, int width, int x0, int x1, int y0, int rows_left,
                           const StageGeometry& g, uint8_t* dst) {
  const int row_bytes = (x1 - x0) * C;
  for (int r = 0; r < kBandRows && r < rows_left; ++r) {
    const size_t start = (static_cast<size_t>(y0 + r) * g.out_w + x0) * C;
    const int shift = static_cast<int>(start & 3), words = (shift + row_bytes + 3) / 4;
    const uint8_t* from = out + r * out_pitch<C>(width);
    uint8_t* to = dst + (start - shift);
    for (int k = threadIdx.x; k < words; k += kThreads) {
      if (4 * k >= shift && 4 * k + 4 <= shift + row_bytes) {
        *reinterpret_cast<uint32_t*>(to + 4 * k) = *reinterpret_cast<const uint32_t*>(from + 4 * k);
        continue;
      }
      for (int b = 4 * k; b < 4 * k + 4; ++b)
        if (b >= shift && b < shift + row_bytes) to[b] = from[b];
    }
  }
}

// Float rows (an intermediate between stages), one float per thread.
template <int C>
__device__ void write_rows(const float* out, int width, int x0, int x1, int y0, int rows_left,
                           const StageGeometry& g, float* dst) {
  const int row = (x1 - x0) * C;
  for (int r = 0; r < kBandRows && r < rows_left; ++r) {
    float* to = dst + static_cast<size_t>(y0 + r) * g.dst_pitch + static_cast<size_t>(x0) * C;
    for (int k = threadIdx.x; k < row; k += kThreads) to[k] = out[r * width * C + k];
  }
}

// The vertical pass of a run of bands as a ring (Ring): the block reads the
// input rows of its bands in order, each once; each thread adds its 4
// elements of a row to the kRingSlots outputs whose windows hold the row, and
// puts every output it completes into its band's row of `rows`; when a band
// is complete, `finish` runs the rest of the stage on it (with barriers: the
// completions are the same for all threads of the block).
template <int C, class In, class Finish>
__device__ void vertical_ring(const In* src, size_t src_pitch, const Bands& v, const Ring& ring,
                              int band0, int band1, int last_row_out, int e0, int elements,
                              float* rows, int pitch, Finish finish) {
  const int e = 4 * static_cast<int>(threadIdx.x);
  const bool mine = e < elements;  // the others only keep the barriers
  const int first_out = band0 * kBandRows;
  const int end = v.first[band1 - 1] + v.length[band1 - 1];
  int y = v.first[band0];
  int base = ring.base[y];
  const In* p = src + static_cast<size_t>(y) * src_pitch + e0 + e;
  const auto none = decltype(fetch(p)){};
  auto now = mine ? fetch(p) : none;
  auto next = mine && y + 1 < end ? fetch(p + src_pitch) : none;
  float acc[kRingSlots][4] = {};
  for (; y < end; ++y, p += src_pitch) {
    const auto ahead = mine && y + 2 < end ? fetch(p + 2 * src_pitch) : none;
    if (mine) {
      float px[4], w[kRingSlots];
      convert<C>(now, px);
      band_weights(ring.weights + static_cast<size_t>(y) * kRingSlots, w);
      for (int j = 0; j < kRingSlots; ++j)
        for (int i = 0; i < 4; ++i) acc[j][i] += w[j] * px[i];
    }
    now = next, next = ahead;
    for (int done = ring.emits[y]; done > 0; --done, ++base) {
      // Output `base` is complete; outputs before the first band only shared
      // rows with it.
      if (base >= first_out && base <= last_row_out) {
        if (mine)
          *reinterpret_cast<float4*>(rows + (base % kBandRows) * pitch + e) =
              float4{acc[0][0], acc[0][1], acc[0][2], acc[0][3]};
        if (base % kBandRows == kBandRows - 1 || base == last_row_out) finish(base / kBandRows);
      }
      for (int j = 0; j + 1 < kRingSlots; ++j)
        for (int i = 0; i < 4; ++i) acc[j][i] = acc[j + 1][i];
      for (int i = 0; i < 4; ++i) acc[kRingSlots - 1][i] = 0.0f;
    }
  }
}

// One separable stage (see the top of this file). Block b takes strip
// b % strips and the bands [chunk * bands_per_block, ...) of chunk
// b / strips. Shared memory: the vertical results, then the outputs.
// Three blocks of 8 warps per multiprocessor (80 registers a thread): enough
// warps in flight to cover the latency of the rows' loads.
template <int C, class In, class Out>
__global__ void __launch_bounds__(kThreads, 3)
    stage_kernel(const In* src, Out* dst, StageGeometry g, Bands v, Bands h, Ring ring, Strips s) {
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
  const int band0 = chunk * g.bands_per_block;
  const int band1 = band0 + g.bands_per_block < v.count ? band0 + g.bands_per_block : v.count;
  // The rest of the stage for a band whose vertical results are in `rows`.
  const auto finish = [&](int band) {
    __syncthreads();  // the band's vertical results are complete
    const int y0 = band * kBandRows;
    horizontal_band<C>(rows, pitch, e0, h, x0, x1, s.width, y0, g.out_h - y0, g, out);
    __syncthreads();  // its outputs are complete, and `rows` is free again
    write_rows<C>(out, s.width, x0, x1, y0, g.out_h - y0, g, dst);
    // `out` is rewritten only after the next band's first barrier.
  };
  if (s.ring) {
    const int last_row_out = (band1 * kBandRows < g.out_h ? band1 * kBandRows : g.out_h) - 1;
    vertical_ring<C>(src, g.src_pitch, v, ring, band0, band1, last_row_out, e0, elements, rows,
                     pitch, finish);
    return;
  }
  for (int band = band0; band < band1; ++band) {
    vertical_band<C>(src, g.src_pitch, v, band, e0, elements, rows, pitch);
    finish(band);
  }
}

}  // namespace

template <int C, class In, class Out>
void launch_stage(const In* src, Out* dst, const StageGeometry& g, const DeviceStage& t,
                  int blocks) {
  const Strips& s = t.strips[C];
  launch_blocks(stage_kernel<C, In, Out>, blocks, stage_shared_bytes(s.elements, s.width, C), src,
                dst, g, t.vertical, t.horizontal, t.ring, s);
}

}  // namespace fi
