// The drivers: loops (CPU) and grid-stride kernels (CUDA) that apply the
// formulas of pixel.h to whole images. Pointers are host memory for cpu_*
// and device memory for cuda_*; images are packed rows of h x w x c bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "passes.h"
#include "plan.h"

namespace fi {

struct Dims {
  int h = 0;
  int w = 0;
  int c = 0;
  size_t bytes() const { return static_cast<size_t>(h) * w * c; }
  bool operator==(const Dims& o) const { return h == o.h && w == o.w && c == o.c; }
};

// Separable stages applied in turn; dst has the last stage's
// horizontal.n_out columns and vertical.n_out rows.
void cpu_separable(const uint8_t* src, Dims in, uint8_t* dst, const std::vector<Stage>& stages);
void cpu_quantize(const uint8_t* src, Dims d, uint8_t* dst, int levels, bool dither);
// The instruction set the CPU kernels run on: "x86-64-v4" (AVX-512, 16-float
// vectors), "x86-64-v3" (AVX2, 8) or "baseline" (4).
const char* cpu_target();
// While one exists, the CPU kernels called on this thread may use up to n
// threads, the caller's included (0: one per CPU this process may run on);
// otherwise one.
class CpuThreads {
 public:
  explicit CpuThreads(int n);
  ~CpuThreads();
  CpuThreads(const CpuThreads&) = delete;
  CpuThreads& operator=(const CpuThreads&) = delete;

 private:
  int saved_;
};

// The CUDA backend's errors; bindings.cpp gives each its Python type.
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

#ifdef FASTIMG_WITH_CUDA
// Records a sticky error: from then on cuda_status() reports CUDA unavailable.
void cuda_mark_lost(const std::string& what);
// Device memory from the stream-ordered allocator of the calling thread's
// default stream (kernels are compiled with per-thread default streams, so
// threads never serialise on one stream).
std::shared_ptr<uint8_t> cuda_alloc(size_t bytes);
// The operations take the memory cuda_alloc returned, which carries what
// orders them after its last write on any thread's stream (docs/kernels.md).
void cuda_upload(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes);
void cuda_download(uint8_t* dst, const std::shared_ptr<uint8_t>& src, size_t bytes);
void cuda_separable(const std::shared_ptr<uint8_t>& src, Dims in,
                    const std::shared_ptr<uint8_t>& dst, const PlanPtr& plan);
void cuda_quantize(const std::shared_ptr<uint8_t>& src, Dims d, const std::shared_ptr<uint8_t>& dst,
                   int levels, bool dither);
#endif

}  // namespace fi
