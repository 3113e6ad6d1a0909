// The kernels' own errors; bindings.cpp gives each its Python type.
#pragma once

#include <stdexcept>

namespace fi {

// A failure of the CUDA backend (a CUDA error), naming the call and line.
struct KernelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The device is out of memory: the next call may succeed.
struct DeviceOutOfMemory : KernelError {
  using KernelError::KernelError;
};
// A sticky error (illegal address, ECC, lost device): the CUDA context is
// unusable for the rest of the process, and cuda_status() says so from then on.
struct DeviceLost : KernelError {
  using KernelError::KernelError;
};

}  // namespace fi
