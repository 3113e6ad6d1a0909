// Each backend as a table of what an Image needs from it: image.cpp dispatches
// through the table of the image's backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "dims.h"
#include "plan.h"

namespace fi {

enum class Backend { CPU, CUDA };

// Memory is the backend's own (host or device), held by the shared pointer
// that alloc returns; the operations take such memory only.
struct BackendOps {
  std::shared_ptr<uint8_t> (*alloc)(size_t bytes);  // uninitialised
  void (*upload)(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes);
  void (*download)(uint8_t* dst, const std::shared_ptr<uint8_t>& src, size_t bytes);
  // From memory of the backend's own kind that the caller owns (another
  // library's device array), once the work queued on `producer` (a stream
  // handle; 0: none) is done.
  void (*copy_in)(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes,
                  uintptr_t producer);
  void (*separable)(const std::shared_ptr<uint8_t>& src, Dims in,
                    const std::shared_ptr<uint8_t>& dst, const PlanPtr& plan);
  void (*quantize)(const std::shared_ptr<uint8_t>& src, Dims d, const std::shared_ptr<uint8_t>& dst,
                   int levels, bool dither);
};

extern const BackendOps kCpuOps;   // cpu_backend.cpp
extern const BackendOps kCudaOps;  // cuda_backend.cu, or no_cuda.cpp in a build without CUDA

}  // namespace fi
