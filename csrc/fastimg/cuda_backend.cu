// The CUDA backend as image.cpp sees it (kCudaOps): each operation orders its
// stream after the last writes of the images it uses, runs its kernels, and
// synchronises if it read an image. Also the start-up probe and the record of
// a sticky error.
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "cuda_kernels.h"
#include "cuda_memory.h"
#include "status.h"
#include "timing.h"

namespace fi {
namespace {

CudaStatus probe() {
  CudaStatus s;
  s.compiled = true;
#ifdef FASTIMG_CUDA_EMU
  s.emulated = true;
#endif
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    s.reason = std::string("the CUDA runtime could not start (") + cudaGetErrorName(err) + ": " +
               cudaGetErrorString(err) + ")";
    cudaGetLastError();  // so that no later, unrelated check reports it again
    return s;
  }
  if (count == 0) {
    s.reason = "no CUDA device found";
    return s;
  }
  cudaDeviceProp prop{};
  try {
    FI_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    s.device = prop.name;
    // A device is not enough: without a kernel image for its architecture
    // every launch fails. One launch, checked element by element, proves it.
    constexpr int n = 4099;
    const auto out = cuda_alloc(n);
    run_probe(out.get(), n);
    std::vector<uint8_t> got(n);
    cuda_download(got.data(), out, n);
    for (int i = 0; i < n; ++i)
      if (got[i] != probe_value(i))
        throw KernelError("the probe kernel computed a wrong value at element " +
                          std::to_string(i));
  } catch (const KernelError& e) {
    s.reason = "a probe kernel did not run on " + (s.device.empty() ? "device 0" : s.device) +
               " (compute capability " + std::to_string(prop.major) + "." +
               std::to_string(prop.minor) +
               "; this build has kernels for " FASTIMG_CUDA_ARCHITECTURES "): " + e.what();
    return s;
  }
  s.available = true;
  return s;
}

std::mutex lost_mutex;
std::string lost_reason;  // the first sticky error, once one was seen

// This thread's kernel timing (timing.h).
struct KernelTiming {
  bool on = false;
  bool recorded = false;  // the events hold an operation not yet added
  cudaEvent_t start = nullptr, end = nullptr;
  double ms = 0.0;

  // At thread exit: cannot throw.
  ~KernelTiming() {
    for (cudaEvent_t e : {start, end})
      if (e != nullptr && cudaEventDestroy(e) != cudaSuccess) cudaGetLastError();
  }
};
thread_local KernelTiming timing;

// Queues an operation's kernels (`launch`), between the two events if timing.
template <class Launch>
void timed(Launch launch) {
  if (!timing.on) return launch();
  for (cudaEvent_t* e : {&timing.start, &timing.end})
    if (*e == nullptr) FI_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDefault));
  FI_CUDA_CHECK(cudaEventRecord(timing.start, kStream));
  launch();
  FI_CUDA_CHECK(cudaEventRecord(timing.end, kStream));
  timing.recorded = true;
}

// After the stream has synchronised: the time between the events.
void add_time() {
  if (!timing.recorded) return;
  timing.recorded = false;
  float ms = 0.0f;
  FI_CUDA_CHECK(cudaEventElapsedTime(&ms, timing.start, timing.end));
  timing.ms += ms;
}

}  // namespace

void cuda_mark_lost(const std::string& what) {
  const std::lock_guard<std::mutex> lock(lost_mutex);
  if (lost_reason.empty()) lost_reason = what;
}

CudaStatus cuda_status() {
  static const CudaStatus probed = probe();
  CudaStatus s = probed;
  const std::lock_guard<std::mutex> lock(lost_mutex);
  if (!lost_reason.empty()) {
    s.available = false;
    s.lost = true;
    s.reason = "the GPU failed with a sticky error, so this process no longer uses it (" +
               lost_reason + ")";
  }
  return s;
}

// Device to device, never through the host: the kernels read an Image's
// memory (aligned, padded: cuda_alloc), which another library's array need not be.
void cuda_copy_in(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes,
                  uintptr_t producer) {
  // The producer's stream may still be writing the pixels.
  if (producer != 0) FI_CUDA_CHECK(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(producer)));
  uint8_t* d = ordered(dst);
  // Synchronised: the caller may free its array as soon as this returns.
  synchronised([&] {
    FI_CUDA_CHECK(cudaMemcpyAsync(d, src, bytes, cudaMemcpyDeviceToDevice, kStream));
    mark_written(dst);
  });
}

void cuda_separable(const std::shared_ptr<uint8_t>& src, Dims in,
                    const std::shared_ptr<uint8_t>& dst, const PlanPtr& plan) {
  if (in.c != 1 && in.c != 3 && in.c != 4)
    throw std::invalid_argument("channels must be 1, 3 or 4");
  const uint8_t* s = ordered(src);
  uint8_t* d = ordered(dst);
  // Held until the stream has synchronised: whoever drops the tables last
  // frees them on its own stream, which orders nothing after this one's reads.
  std::shared_ptr<const DevicePlan> tables;
  synchronised([&] {
    tables = device_tables(plan);
    timed([&] { run_separable(s, in, d, *plan, *tables); });
    mark_written(dst);
  });
  add_time();
}

void cuda_quantize(const std::shared_ptr<uint8_t>& src, Dims d, const std::shared_ptr<uint8_t>& dst,
                   int levels, bool dither) {
  const uint8_t* s = ordered(src);
  uint8_t* out = ordered(dst);
  synchronised([&] {
    timed([&] { run_quantize(s, d, out, levels, dither); });
    mark_written(dst);
  });
  add_time();
}

void cuda_time_kernels(bool on) { timing.on = on; }

double cuda_kernel_ms() { return std::exchange(timing.ms, 0.0); }

const BackendOps kCudaOps{cuda_alloc,   cuda_upload,    cuda_download,
                          cuda_copy_in, cuda_separable, cuda_quantize};

}  // namespace fi
