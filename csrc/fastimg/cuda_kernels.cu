// The kernels other than a stage's (cuda_stage_kernel.h), and the host code
// that runs a plan's stages.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cuda_kernels.h"
#include "cuda_memory.h"
#include "cuda_stage.h"
#include "pixel.h"

namespace fi {
namespace {

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

// 16-bit and float pixels as premultiplied floats in rows `pitch` floats
// apart, the form the stages take between them (load_px).
template <int C, class Px>
__global__ void to_floats_kernel(const Px* src, int w, int h, float* dst, size_t pitch) {
  const size_t n = static_cast<size_t>(h) * w;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t y = i / w, x = i % w;
    load_px<C, Px>(src + i * C, dst + y * pitch + x * C);
  }
}

// And back, finished (store_px).
template <int C, class Px>
__global__ void from_floats_kernel(const float* src, size_t pitch, int w, int h, Px* dst) {
  const size_t n = static_cast<size_t>(h) * w;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t y = i / w, x = i % w;
    store_px<C, Px>(src + y * pitch + x * C, dst + i * C);
  }
}

// Quantisation of 16-bit and float pixels, one per thread (quantize_pixel).
template <class Px>
__global__ void quantize_pixels_kernel(const Px* src, Dims d, Px* dst, int levels, bool dither) {
  const size_t n = static_cast<size_t>(d.h) * d.w;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / d.w), x = static_cast<int>(i % d.w);
    quantize_pixel<Px>(src + i * d.c, dst + i * d.c, d.c, levels, x, y, dither);
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
  int per_block = static_cast<int>(std::max<size_t>(1, (units + target - 1) / target));
  if (s.ring) {
    // A ring first reads the rows its first band shares with the band
    // before it (a window less a step): at least twice as many new rows.
    const double step = static_cast<double>(st.vertical.n_in) / out_h;
    const double shared = st.vertical.taps - step, per_band = kBandRows * step;
    per_block = std::max(per_block, static_cast<int>(std::ceil(2 * shared / per_band)));
  }
  const int chunks = (t.vertical.count + per_block - 1) / per_block;
  const StageGeometry g{out_w, out_h, src_pitch, dst_pitch, per_block};
  launch_stage<C>(src, dst, g, t, s.count * chunks);
}

// From T to T: 8-bit pixels in packed rows, or premultiplied floats in rows
// src_pitch and dst_pitch floats apart.
template <int C, class T>
void run_stages(const T* src, size_t src_pitch, Dims in, T* dst, size_t dst_pitch, const Plan& plan,
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
    if (first && last)
      stage<C>(src, src_pitch, in, dst, dst_pitch, s, t);
    else if (first)
      stage<C>(src, src_pitch, in, next.get(), next_pitch, s, t);
    else if (last)
      stage<C>(cur.get(), cur_pitch, in, dst, dst_pitch, s, t);
    else
      stage<C>(cur.get(), cur_pitch, in, next.get(), next_pitch, s, t);
    in = {s.vertical.n_out, s.horizontal.n_out, C};
    cur.swap(next);
    cur_pitch = next_pitch;
  }
}

template <int C, class Px>
void run_pixels(const Px* src, Dims in, Px* dst, const Plan& plan, const DevicePlan& tables) {
  const int out_w = plan.stages.back().horizontal.n_out, out_h = plan.stages.back().vertical.n_out;
  if constexpr (std::is_same_v<Px, uint8_t>) {
    run_stages<C>(src, static_cast<size_t>(in.w) * C, in, dst, static_cast<size_t>(out_w) * C, plan,
                  tables);
  } else {
    // 16-bit and float images: through premultiplied floats, as the stages
    // between the first and the last of a chain take them.
    const size_t in_pitch = float_pitch(in.w, C), out_pitch = float_pitch(out_w, C);
    const auto a = device_array<float>(in.h * in_pitch);
    const auto b = device_array<float>(out_h * out_pitch);
    launch(to_floats_kernel<C, Px>, static_cast<size_t>(in.h) * in.w, src, in.w, in.h, a.get(),
           in_pitch);
    run_stages<C>(static_cast<const float*>(a.get()), in_pitch, in, b.get(), out_pitch, plan,
                  tables);
    launch(from_floats_kernel<C, Px>, static_cast<size_t>(out_h) * out_w,
           static_cast<const float*>(b.get()), out_pitch, out_w, out_h, dst);
  }
}

}  // namespace

void run_separable(const void* src, Dims in, void* dst, const Plan& plan,
                   const DevicePlan& tables) {
  with_pixel_type(in.type, [&](auto px) {
    typedef decltype(px) Px;
    const Px* s = static_cast<const Px*>(src);
    Px* d = static_cast<Px*>(dst);
    if (in.c == 1) run_pixels<1>(s, in, d, plan, tables);
    if (in.c == 3) run_pixels<3>(s, in, d, plan, tables);
    if (in.c == 4) run_pixels<4>(s, in, d, plan, tables);
  });
}

void run_quantize(const void* src, Dims d, void* dst, int levels, bool dither) {
  if (d.type != PixelType::U8)
    return with_pixel_type(d.type, [&](auto px) {
      typedef decltype(px) Px;
      launch(quantize_pixels_kernel<Px>, static_cast<size_t>(d.h) * d.w,
             static_cast<const Px*>(src), d, static_cast<Px*>(dst), levels, dither);
    });
  const auto table = quantize_table(levels, dither);  // kept by the cache for the process
  const int rows = dither ? 64 : 1;
  const size_t chunks = (d.bytes() + 15) / 16;
  launch_blocks(quantize_kernel, grid_for(chunks), static_cast<size_t>(rows) * 256,
                static_cast<const uint8_t*>(src), d, static_cast<uint8_t*>(dst), table.get(), rows);
}

void run_probe(uint8_t* out, int n) { launch(probe_kernel, n, out, n); }

uint8_t probe_value(int i) { return quantize_value(i & 255, 7, i, i >> 3, true); }

}  // namespace fi
