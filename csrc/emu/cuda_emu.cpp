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
#include <deque>
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

// Happens-before between streams, as vector clocks: a stream's clock counts
// its operations, and holds for each other stream how many of that stream's
// operations are ordered before its own next one (through events it waited
// for).
using Clock = std::map<int, long>;

// This thread's default stream: an id never reused, and its clock. Only its
// own thread touches the clock; events copy it under the device's mutex.
int this_stream() {
  static std::atomic<int> next{1};
  thread_local const int id = next++;
  return id;
}
thread_local Clock this_clock;

struct Allocation {
  size_t bytes;
  int writer;       // the stream that last wrote it
  long written_at;  // that stream's clock at the write
};

struct Event {
  Clock clock;  // of the stream it was last recorded on; empty before
};

// A copy with pinned host memory, queued on its stream until something waits
// for it (see cuda_emu.h).
struct Pending {
  long at;  // its stream's clock at the copy
  void* dst;
  const void* src;
  size_t bytes;
};

struct Device {
  std::mutex mutex;
  std::map<uintptr_t, Allocation> allocations;  // by start
  std::map<uintptr_t, size_t> pinned;           // host buffers by start: their sizes
  std::map<int, std::deque<Pending>> pending;   // by stream, oldest first
  size_t live = 0;
  Injection oom{"FASTIMG_EMU_OOM_AT"};
  Injection fault{"FASTIMG_EMU_STICKY_AT"};
  std::map<uintptr_t, Event> events;  // live events by handle; handles are never reused
  static constexpr uintptr_t kFirstEvent = 0x1000;
  uintptr_t next_event = kFirstEvent;
  Clock completed;  // per stream: its operations up to its last synchronisation

  // The live allocation that holds all of [p, p + bytes), or null.
  Allocation* holding(const void* p, size_t bytes) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin()) return nullptr;
    --it;
    return a >= it->first && a - it->first + bytes <= it->second.bytes ? &it->second : nullptr;
  }
  bool holds(const void* p, size_t bytes) { return holding(p, bytes) != nullptr; }

  // A use of `a` on this thread's stream: it must be ordered after the last
  // write, or on a GPU it could run before that write finished.
  void check_ordered(const Allocation& a, const char* call) {
    const int self = this_stream();
    if (a.writer == self || a.written_at <= completed[a.writer]) return;
    const auto known = this_clock.find(a.writer);
    if (known != this_clock.end() && known->second >= a.written_at) return;
    std::fprintf(stderr,
                 "fastimg CUDA emulation: %s on stream %d uses device memory that stream %d wrote "
                 "(operation %ld) with no event waited for nor synchronisation ordering it\n",
                 call, self, a.writer, a.written_at);
    std::abort();
  }

  bool is_pinned(const void* p, size_t bytes) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    auto it = pinned.upper_bound(a);
    if (it == pinned.begin()) return false;
    --it;
    return a - it->first + bytes <= it->second;
  }

  // Runs the queued copies of `stream` up to its operation `upto`.
  void run_pending(int stream, long upto) {
    auto& q = pending[stream];
    while (!q.empty() && q.front().at <= upto) {
      std::memcpy(q.front().dst, q.front().src, q.front().bytes);
      q.pop_front();
    }
  }
  // Everything an event was recorded after, on every stream it orders.
  void run_pending(const Clock& clock) {
    for (const auto& [stream, at] : clock) run_pending(stream, at);
  }
  // Before any other operation of this thread's stream: stream order.
  void run_own_pending() { run_pending(this_stream(), LONG_MAX); }

  void write(Allocation& a) {
    a.writer = this_stream();
    a.written_at = ++this_clock[a.writer];
  }

  // The live event of a handle; null for one never created (an error a GPU
  // reports). A destroyed one aborts: on a GPU its use is undefined.
  Event* event(cudaEvent_t e, const char* call) {
    const auto h = reinterpret_cast<uintptr_t>(e);
    const auto it = events.find(h);
    if (it != events.end()) return &it->second;
    if (h >= kFirstEvent && h < next_event) {
      std::fprintf(stderr, "fastimg CUDA emulation: %s of event %#lx, which was destroyed\n", call,
                   static_cast<unsigned long>(h));
      std::abort();
    }
    return nullptr;
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
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
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
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
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
  Allocation& a = d.allocations[reinterpret_cast<uintptr_t>(q)];
  a.bytes = bytes;
  d.write(a);  // stream-ordered: a use on another stream must be ordered after it
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
  d.run_own_pending();
  // After a sticky error nothing runs any more, so nothing can race.
  if (err == cudaSuccess) d.check_ordered(it->second, "cudaFreeAsync");
  // Released even after a sticky error, so that a long run does not leak.
  d.live -= it->second.bytes;
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
    Allocation* device = kind == cudaMemcpyHostToDevice   ? d.holding(dst, bytes)
                         : kind == cudaMemcpyDeviceToHost ? d.holding(src, bytes)
                                                          : nullptr;
    const void* host = kind == cudaMemcpyHostToDevice ? src : dst;
    if (device == nullptr || d.holds(host, 1)) return fail(cudaErrorInvalidValue);
    d.check_ordered(*device, "cudaMemcpyAsync");
    const int self = this_stream();
    if (kind == cudaMemcpyHostToDevice)
      d.write(*device);
    else
      ++this_clock[self];
    if (d.is_pinned(host, bytes)) {
      d.pending[self].push_back({this_clock[self], dst, src, bytes});
      return cudaSuccess;
    }
    d.run_own_pending();
  }
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  if (const cudaError_t err = enter()) return err;
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  d.run_own_pending();
  d.completed[this_stream()] = this_clock[this_stream()];
  return cudaSuccess;
}

// Pinned host memory: plain host memory that copies treat as asynchronous.
// It is not device memory, so only the injected failure applies to it.
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  if (const cudaError_t err = enter()) return err;
  if (p == nullptr) return fail(cudaErrorInvalidValue);
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  if (d.oom.fires()) return fail(cudaErrorMemoryAllocation);
  void* q = std::malloc(bytes > 0 ? bytes : 1);
  if (q == nullptr) return fail(cudaErrorMemoryAllocation);
  std::memset(q, 0xFF, bytes);
  d.pinned[reinterpret_cast<uintptr_t>(q)] = bytes;
  *p = q;
  return cudaSuccess;
}

// As on a GPU, the free waits for the whole device first: every queued copy
// runs. Allowed after a sticky error, so that nothing leaks.
cudaError_t cudaFreeHost(void* p) {
  const cudaError_t err = enter();
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  const auto it = d.pinned.find(reinterpret_cast<uintptr_t>(p));
  if (it == d.pinned.end()) {
    std::fprintf(stderr, "fastimg CUDA emulation: cudaFreeHost(%p) of no live pinned buffer\n", p);
    std::abort();
  }
  for (auto& [stream, q] : d.pending) d.run_pending(stream, LONG_MAX);
  d.pinned.erase(it);
  std::free(p);
  return err;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (const cudaError_t err = enter()) return err;
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  const Event* e = d.event(event, "cudaEventSynchronize");
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (env_long("FASTIMG_EMU_SKIP_EVENT_SYNCS", 0) != 0) return cudaSuccess;
  d.run_pending(e->clock);
  // What the event was recorded after has completed, as after a synchronisation.
  for (const auto& [stream, at] : e->clock) d.completed[stream] = std::max(d.completed[stream], at);
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  if (const cudaError_t err = enter()) return err;
  if (event == nullptr || (flags & ~0x0Fu) != 0) return fail(cudaErrorInvalidValue);
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  const uintptr_t handle = d.next_event++;
  d.events[handle] = Event{};
  *event = reinterpret_cast<cudaEvent_t>(handle);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  if (const cudaError_t err = enter()) return err;
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  Event* e = d.event(event, "cudaEventRecord");
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  e->clock = this_clock;
  return cudaSuccess;
}

// An event never recorded orders nothing, and waiting for it succeeds, as on
// a GPU.
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t event, unsigned flags) {
  if (const cudaError_t err = enter()) return err;
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  const Event* e = d.event(event, "cudaStreamWaitEvent");
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (flags != 0) return fail(cudaErrorInvalidValue);
  if (env_long("FASTIMG_EMU_SKIP_WAITS", 0) != 0) return cudaSuccess;
  d.run_pending(e->clock);  // the GPU would run them before anything queued after the wait
  for (const auto& [stream, at] : e->clock) this_clock[stream] = std::max(this_clock[stream], at);
  return cudaSuccess;
}

// Like cudaFreeAsync, allowed after a sticky error, so that nothing leaks.
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  const cudaError_t err = enter();
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  if (d.event(event, "cudaEventDestroy") == nullptr) return fail(cudaErrorInvalidResourceHandle);
  d.events.erase(reinterpret_cast<uintptr_t>(event));
  return err;
}

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

bool begin_launch(dim3 grid, dim3 block, const void* const* pointers, const bool* writes,
                  size_t n_pointers) {
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
  d.run_own_pending();
  bool faults = d.fault.fires();
  // A host pointer given to a kernel faults on a GPU; here it would work.
  for (size_t i = 0; i < n_pointers; ++i) {
    if (pointers[i] == nullptr) continue;
    Allocation* a = d.holding(pointers[i], 1);
    if (a == nullptr) {
      faults = true;
      continue;
    }
    d.check_ordered(*a, "a kernel launch");
    if (writes[i]) d.write(*a);
  }
  if (faults) fault_pending = true;
  return !faults;
}

}  // namespace fi::emu
