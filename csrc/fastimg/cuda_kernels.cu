#include <type_traits>

#include "cuda_kernels.h"
#include "cuda_memory.h"
#include "pixel.h"

namespace fi {
namespace {

// A row of pixels: 8-bit (the input of a chain of stages) or premultiplied
// floats (between stages).
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

// The horizontal pass's weights, tap-major (Layout::TapMajor).
struct TapMajor {
  const float* p;  // tap 0 of this output
  int n_out;
  __device__ float operator[](int k) const { return p[static_cast<size_t>(k) * n_out]; }
};

// Grid-stride loops: any grid size covers any image, and the launch sizes the
// grid to the device instead of to the image.
template <int C, class In>
__global__ void horizontal_kernel(const In* src, int in_w, int rows, PassView hp, float* tmp) {
  const size_t n = static_cast<size_t>(rows) * hp.n_out;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / hp.n_out), x = static_cast<int>(i % hp.n_out);
    const Row<C, In> row{src + static_cast<size_t>(y) * in_w * C};
    weighted_sum<C>(row, hp.start[x], TapMajor{hp.weights + x, hp.n_out}, hp.taps, tmp + i * C);
  }
}

template <int C, class Out>
__global__ void vertical_kernel(const float* tmp, int w, PassView vp, Out* dst) {
  const size_t n = static_cast<size_t>(vp.n_out) * w;
  const size_t pitch = static_cast<size_t>(w) * C;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / w), x = static_cast<int>(i % w);
    const F32Column<C> column{tmp + static_cast<size_t>(x) * C, pitch};
    float acc[C];
    weighted_sum<C>(column, vp.start[y], vp.weights + static_cast<size_t>(y) * vp.taps, vp.taps,
                    acc);
    if constexpr (std::is_same_v<Out, float>)
      for (int c = 0; c < C; ++c) dst[i * C + c] = acc[c];  // stays premultiplied, unrounded
    else
      store_u8<C>(acc, dst + i * C);
  }
}

__global__ void quantize_kernel(const uint8_t* src, Dims d, uint8_t* dst, int levels, bool dither) {
  const size_t n = static_cast<size_t>(d.h) * d.w;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / d.w), x = static_cast<int>(i % d.w);
    quantize_pixel(src + i * d.c, dst + i * d.c, d.c, levels, x, y, dither);
  }
}

// The start-up probe: a formula of pixel.h per element, which the host checks.
__global__ void probe_kernel(uint8_t* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    out[i] = quantize_value(i & 255, 7, i, i >> 3, true);
}

template <int C, class In, class Out>
void stage(const In* src, Dims in, Out* dst, const DevicePass& h, const DevicePass& v) {
  const PassView hp = h.view, vp = v.view;
  const size_t tmp_items = static_cast<size_t>(in.h) * hp.n_out;
  auto tmp = device_array<float>(tmp_items * C);
  launch(horizontal_kernel<C, In>, tmp_items, src, in.w, in.h, hp, tmp.get());
  const size_t out_items = static_cast<size_t>(vp.n_out) * hp.n_out;
  launch(vertical_kernel<C, Out>, out_items, tmp.get(), hp.n_out, vp, dst);
}

template <int C>
void run_stages(const uint8_t* src, Dims in, uint8_t* dst, const Plan& plan,
                const DevicePlan& tables) {
  // Between stages the image stays in premultiplied floats, as on the CPU.
  std::shared_ptr<float> cur, next;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const Stage& s = plan.stages[i];
    const bool first = i == 0, last = i + 1 == plan.stages.size();
    if (!last)
      next = device_array<float>(static_cast<size_t>(s.vertical.n_out) * s.horizontal.n_out * C);
    const DevicePass &h = tables.passes[2 * i], &v = tables.passes[2 * i + 1];
    if (first && last)
      stage<C>(src, in, dst, h, v);
    else if (first)
      stage<C>(src, in, next.get(), h, v);
    else if (last)
      stage<C>(cur.get(), in, dst, h, v);
    else
      stage<C>(cur.get(), in, next.get(), h, v);
    in = {s.vertical.n_out, s.horizontal.n_out, C};
    cur.swap(next);
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
  launch(quantize_kernel, static_cast<size_t>(d.h) * d.w, src, d, dst, levels, dither);
}

void run_probe(uint8_t* out, int n) { launch(probe_kernel, n, out, n); }

uint8_t probe_value(int i) { return quantize_value(i & 255, 7, i, i >> 3, true); }

}  // namespace fi
