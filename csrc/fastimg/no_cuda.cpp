// The CUDA backend of a build without CUDA (no nvcc at build time, or
// FASTIMG_CUDA=OFF): it is never available, and says why.
#include <stdexcept>

#include "backend.h"
#include "status.h"
#include "timing.h"

namespace fi {
namespace {

[[noreturn]] void no_cuda() { throw std::runtime_error("fastimg was built without CUDA support"); }

}  // namespace

CudaStatus cuda_status() {
  CudaStatus s;
  s.reason = "fastimg was built without CUDA support (no nvcc at build time, or FASTIMG_CUDA=OFF)";
  return s;
}

void cuda_time_kernels(bool) {}
double cuda_kernel_ms() { return 0.0; }

const BackendOps kCudaOps{
    [](size_t) -> std::shared_ptr<uint8_t> { no_cuda(); },
    [](const std::shared_ptr<uint8_t>&, const uint8_t*, size_t) { no_cuda(); },
    [](uint8_t*, const std::shared_ptr<uint8_t>&, size_t) { no_cuda(); },
    [](const std::shared_ptr<uint8_t>&, const uint8_t*, size_t, uintptr_t) { no_cuda(); },
    [](const std::shared_ptr<uint8_t>&, Dims, const std::shared_ptr<uint8_t>&, const PlanPtr&) {
      no_cuda();
    },
    [](const std::shared_ptr<uint8_t>&, Dims, const std::shared_ptr<uint8_t>&, int, bool) {
      no_cuda();
    },
};

}  // namespace fi
