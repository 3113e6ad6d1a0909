// Every CUDA runtime call and kernel launch goes through FI_CUDA_CHECK, so a
// failure surfaces as a C++ exception naming the call site (a fastimg.KernelError
// in Python, bindings.cpp), never as a silent wrong result.
#pragma once

#if defined(FASTIMG_CUDA_EMU)
#include "emu/cuda_emu.h"  // the host emulation (FASTIMG_CUDA=EMU, docs/kernels.md)
#else
#include <cuda_runtime.h>
#endif

#include <string>

#include "cuda.h"
#include "errors.h"

namespace fi {

// Errors after which the CUDA context is unusable: the runtime documents that
// any further CUDA work returns the same error until the process restarts.
inline bool is_sticky(cudaError_t err) {
  switch (static_cast<int>(err)) {
    case cudaErrorECCUncorrectable:
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorMpsClientTerminated:
    case cudaErrorExternalDevice:
    case 226:  // cudaErrorContained and cudaErrorTensorMemoryLeak: named only
    case 721:  // since CUDA 12.x, and as sticky as the others
      return true;
    default: return false;
  }
}

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file,
                                          int line) {
  // The failed call also left `err` as this thread's last error: read it back
  // (which clears a non-sticky one) so that the next, valid call does not fail
  // in its launch check.
  cudaGetLastError();
  const std::string what = std::string("CUDA error ") + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ") in " + expr + " at " + file + ":" +
                           std::to_string(line);
  if (err == cudaErrorMemoryAllocation) throw DeviceOutOfMemory(what);
  if (is_sticky(err)) {
    cuda_mark_lost(what);
    throw DeviceLost(what);
  }
  throw KernelError(what);
}

}  // namespace fi

#define FI_CUDA_CHECK(expr)                                                                 \
  do {                                                                                      \
    const cudaError_t fi_err_ = (expr);                                                     \
    if (fi_err_ != cudaSuccess) ::fi::throw_cuda_error(fi_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a launch: reports bad launch configurations at once.
#define FI_CUDA_CHECK_LAUNCH() FI_CUDA_CHECK(cudaGetLastError())
