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

// Blocks for `items` grid-stride items: as many as the device keeps resident,
// fewer for a small image.
inline int grid_for(size_t items) {
  static const int max_blocks = [] {
    int dev = 0, sms = 0;
    FI_CUDA_CHECK(cudaGetDevice(&dev));
    FI_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return sms * 32;  // enough resident blocks to hide memory latency
  }();
  const size_t blocks = (items + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<size_t>(1, std::min<size_t>(blocks, max_blocks)));
}

// The one place kernels are launched, on a grid sized for `items`. The host
// emulation runs every (block, thread) of the grid in turn instead.
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

}  // namespace fi
