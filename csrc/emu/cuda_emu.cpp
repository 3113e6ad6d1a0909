// The emulated CUDA runtime of cuda_emu.h: device memory is tracked host
// memory, the context's sticky error is shared by all threads, and the last
// error is per thread, as in the real runtime.
#include "emu/cuda_emu.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

namespace {

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return (*end != '\0' || x < 0) ? fallback : x;
}

// Counts events (allocations, launches) since the variable `name` last
// changed value; true for the n-th when it holds n > 0.
struct Injection {
  const char* name;
  std::string seen;
  long count = 0;

  bool fires() {
    const char* v = std::getenv(name);
    const std::string now = v != nullptr ? v : "";
    if (now != seen) {
      seen = now;
      count = 0;
    }
    ++count;
    const long n = env_long(name, 0);
    return n > 0 && count == n;
  }
};

struct Device {
  std::mutex mutex;
  std::map<uintptr_t, size_t> allocations;  // start -> bytes
  size_t live = 0;
  Injection oom{"FASTIMG_EMU_OOM_AT"};
  Injection fault{"FASTIMG_EMU_STICKY_AT"};

  // Whether [p, p + bytes) lies inside one live allocation.
  bool holds(const void* p, size_t bytes) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin()) return false;
    --it;
    return a >= it->first && a - it->first + bytes <= it->second;
  }
};

// Never destroyed: device memory may be freed by destructors that run at exit.
Device& device() {
  static Device* d = new Device;
  return *d;
}

std::atomic<int> sticky{cudaSuccess};    // the context's error, for every thread
std::atomic<bool> fault_pending{false};  // a kernel faulted; no call has seen it yet
thread_local cudaError_t last_error = cudaSuccess;

cudaError_t fail(cudaError_t err) {
  last_error = err;
  return err;
}

// Every call but cudaGetLastError starts here: a kernel fault surfaces at the
// first call after it (as a GPU reports it asynchronously), and from then on
// at every call.
cudaError_t enter() {
  if (fault_pending.exchange(false)) {
    int expected = cudaSuccess;
    sticky.compare_exchange_strong(expected, cudaErrorIllegalAddress);
  }
  const auto err = static_cast<cudaError_t>(sticky.load());
  return err == cudaSuccess ? err : fail(err);
}

int multiprocessors() { return static_cast<int>(std::max(1L, env_long("FASTIMG_EMU_SMS", 132))); }

size_t memory_bytes() { return static_cast<size_t>(env_long("FASTIMG_EMU_MEMORY", 80L << 30)); }

}  // namespace

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoKernelImageForDevice:
      return "no kernel image is available for execution on the device";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    default: return "unknown error";
  }
}

cudaError_t cudaGetLastError() {
  const auto s = static_cast<cudaError_t>(sticky.load());
  if (s != cudaSuccess) return s;
  const cudaError_t err = last_error;
  last_error = cudaSuccess;
  return err;
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (const cudaError_t err = enter()) return err;
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* dev) {
  if (const cudaError_t err = enter()) return err;
  *dev = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev) {
  if (const cudaError_t err = enter()) return err;
  if (dev != 0) return fail(cudaErrorInvalidDevice);
  if (attr != cudaDevAttrMultiProcessorCount) return fail(cudaErrorInvalidValue);
  *value = multiprocessors();
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int dev) {
  if (const cudaError_t err = enter()) return err;
  if (dev != 0) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "fastimg host emulation of CUDA (%d SMs)",
                multiprocessors());
  prop->totalGlobalMem = memory_bytes();
  prop->multiProcessorCount = multiprocessors();
  prop->major = 9;
  prop->minor = 0;
  return cudaSuccess;
}

cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  if (const cudaError_t err = enter()) return err;
  if (p == nullptr) return fail(cudaErrorInvalidValue);
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  if (d.oom.fires() || bytes > memory_bytes() - std::min(d.live, memory_bytes()))
    return fail(cudaErrorMemoryAllocation);
  void* q = std::malloc(bytes > 0 ? bytes : 1);
  if (q == nullptr) return fail(cudaErrorMemoryAllocation);
  // Fresh device memory holds whatever was there before: 0xFF bytes read as
  // NaN floats, -1 ints and 255 pixels, so a kernel that reads before it
  // writes shows in the results.
  std::memset(q, 0xFF, bytes);
  d.allocations[reinterpret_cast<uintptr_t>(q)] = bytes;
  d.live += bytes;
  *p = q;
  return cudaSuccess;
}

cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  const cudaError_t err = enter();
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  const auto it = d.allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == d.allocations.end()) {
    // A double free or a free of host memory: the caller ignores the error
    // (a deleter cannot throw), so it is reported here.
    std::fprintf(stderr, "fastimg CUDA emulation: cudaFreeAsync(%p) of no live device allocation\n",
                 p);
    std::abort();
  }
  // Released even after a sticky error, so that a long run does not leak.
  d.live -= it->second;
  d.allocations.erase(it);
  std::free(p);
  return err;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t) {
  if (const cudaError_t err = enter()) return err;
  Device& d = device();
  {
    const std::lock_guard<std::mutex> lock(d.mutex);
    const bool ok = kind == cudaMemcpyHostToDevice   ? d.holds(dst, bytes) && !d.holds(src, 1)
                    : kind == cudaMemcpyDeviceToHost ? d.holds(src, bytes) && !d.holds(dst, 1)
                                                     : false;
    if (!ok) return fail(cudaErrorInvalidValue);
  }
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return enter(); }

// One pool, whose release threshold changes nothing here: memory is freed at
// once so that ASan sees every use after free.
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int dev) {
  if (const cudaError_t err = enter()) return err;
  if (dev != 0) return fail(cudaErrorInvalidDevice);
  *pool = reinterpret_cast<cudaMemPool_t>(0x1);
  return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  if (const cudaError_t err = enter()) return err;
  if (pool != reinterpret_cast<cudaMemPool_t>(0x1) || attr != cudaMemPoolAttrReleaseThreshold ||
      value == nullptr)
    return fail(cudaErrorInvalidValue);
  return cudaSuccess;
}

namespace fi::emu {

bool begin_launch(dim3 grid, dim3 block, const void* const* pointers, size_t n_pointers) {
  if (enter() != cudaSuccess) return false;
  if (env_long("FASTIMG_EMU_NO_KERNEL_IMAGE", 0) != 0) {
    fail(cudaErrorNoKernelImageForDevice);
    return false;
  }
  if (grid.x == 0 || grid.x > INT_MAX || grid.y != 1 || grid.z != 1 || block.x == 0 ||
      block.x > 1024 || block.y != 1 || block.z != 1) {
    fail(cudaErrorInvalidConfiguration);
    return false;
  }
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  bool faults = d.fault.fires();
  // A host pointer given to a kernel faults on a GPU; here it would work.
  for (size_t i = 0; i < n_pointers; ++i)
    if (pointers[i] != nullptr && !d.holds(pointers[i], 1)) faults = true;
  if (faults) fault_pending = true;
  return !faults;
}

}  // namespace fi::emu
