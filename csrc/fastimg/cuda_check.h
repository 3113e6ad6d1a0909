// Every CUDA runtime call and kernel launch goes through FI_CUDA_CHECK, so a
// failure surfaces as a C++ exception (a Python RuntimeError) naming the call
// site, never as a silent wrong result.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace fi {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file,
                                          int line) {
  throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ") in " + expr + " at " + file + ":" +
                           std::to_string(line));
}

}  // namespace fi

#define FI_CUDA_CHECK(expr)                                              \
  do {                                                                   \
    const cudaError_t fi_err_ = (expr);                                  \
    if (fi_err_ != cudaSuccess) ::fi::throw_cuda_error(fi_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a launch: reports bad launch configurations at once.
#define FI_CUDA_CHECK_LAUNCH() FI_CUDA_CHECK(cudaGetLastError())
