// Where and how the kernels run: each host thread's default stream, on a grid
// sized to the device. The host emulation (FASTIMG_CUDA=EMU) runs the same
// launches on the host instead.
#pragma once

#include <algorithm>
#include <cstddef>

#include "cuda_check.h"

namespace fi {

// All work of a host thread goes to its own default stream, so worker threads
// overlap on the GPU instead of queueing behind one another.
inline const cudaStream_t kStream = cudaStreamPerThread;

constexpr int kThreads = 256;

inline int multiprocessors() {
  static const int sms = [] {
    int dev = 0, n = 0;
    FI_CUDA_CHECK(cudaGetDevice(&dev));
    FI_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  return sms;
}

// Blocks for `items` grid-stride items: as many as the device keeps resident,
// fewer for a small image.
inline int grid_for(size_t items) {
  const size_t blocks = (items + kThreads - 1) / kThreads;
  const size_t resident = static_cast<size_t>(multiprocessors()) * (2048 / kThreads);
  return static_cast<int>(std::max<size_t>(1, std::min(blocks, resident)));
}

// A kernel without shared memory or barriers, on a grid sized for `items`.
// The host emulation runs every (block, thread) of the grid in turn instead.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), size_t items, Args... args) {
  const int grid = grid_for(items);
#ifdef FASTIMG_CUDA_EMU
  emu::launch(kernel, grid, kThreads, kStream, args...);
#else
  kernel<<<grid, kThreads, 0, kStream>>>(args...);
#endif
  FI_CUDA_CHECK_LAUNCH();
}

// A kernel whose threads share `shared_bytes` of dynamic shared memory and
// wait for each other (__syncthreads), on `grid` blocks. Beyond 48 KB a
// kernel must opt in first. The host emulation runs each block's threads as
// fibers that switch at the barriers (csrc/emu/cuda_emu.h).
template <class... Params, class... Args>
void launch_blocks(void (*kernel)(Params...), int grid, size_t shared_bytes, Args... args) {
  if (shared_bytes > (48 << 10))
    FI_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared_bytes)));
#ifdef FASTIMG_CUDA_EMU
  emu::launch_blocks(kernel, grid, kThreads, shared_bytes, kStream, args...);
#else
  kernel<<<grid, kThreads, shared_bytes, kStream>>>(args...);
#endif
  FI_CUDA_CHECK_LAUNCH();
}

// The calling block's dynamic shared memory (launch_blocks).
template <class T>
__device__ T* shared_memory() {
#ifdef FASTIMG_CUDA_EMU
  return static_cast<T*>(emu::block_shared_memory());
#else
  extern __shared__ float4 fi_shared_memory[];
  return reinterpret_cast<T*>(fi_shared_memory);
#endif
}

}  // namespace fi
