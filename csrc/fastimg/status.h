// Whether the CUDA backend is in use, and why not.
#pragma once

#include <string>

namespace fi {

struct CudaStatus {
  bool compiled = false;
  bool emulated = false;  // the host emulation (FASTIMG_CUDA=EMU)
  bool available = false;
  bool lost = false;   // CUDA was usable but failed with a sticky error
  std::string device;  // name of device 0 when one was found
  std::string reason;  // why CUDA is not available, else empty
};
// Probes once (a device, then a launch of a kernel checked against the host),
// then only adds whether a sticky error has been seen since.
CudaStatus cuda_status();

}  // namespace fi
