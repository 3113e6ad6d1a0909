// The emulated CUDA runtime of cuda_emu.h: device memory is tracked host
// memory, the context's sticky error is shared by all threads, and the last
// error is per thread, as in the real runtime.
#include "emu/cuda_emu.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define FI_ASAN 1
#endif

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
  Clock clock;         // of the stream it was last recorded on; empty before
  bool timing = true;  // not created with cudaEventDisableTiming
  bool recorded = false;
  std::chrono::steady_clock::time_point at;  // of the last record
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

// Shared memory per block: the default limit, and what a kernel may opt into
// (cudaFuncAttributeMaxDynamicSharedMemorySize), as on an H100 or H200.
constexpr int kSharedPerBlock = 48 << 10;
constexpr int kSharedPerBlockOptin = 227 << 10;

// Each kernel's opted-in limit of dynamic shared memory.
std::mutex attributes_mutex;
std::map<const void*, int> shared_limits;

// Fibers: the threads of a block that launch_blocks runs.
constexpr size_t kFiberStack = size_t{256} << 10;

void fiber_main();

#if defined(__x86_64__)
// A suspended context is its stack pointer; the registers the calling
// convention keeps across a call are on its stack. (swapcontext would also
// save the signal mask, a system call per switch, and ASan's interceptor of
// it clears the shadow of the whole target stack each time.)
extern "C" void fi_emu_switch(void** save_sp, void* sp);
asm(R"(
  .text
  .globl fi_emu_switch
  .type fi_emu_switch, @function
fi_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fi_emu_switch, .-fi_emu_switch
)");

struct Context {
  void* sp = nullptr;
};

// A context whose first switch-in calls fiber_main on `stack`.
void make_context(Context& c, char* stack, size_t size) {
  auto** sp =
      reinterpret_cast<void**>((reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t{15});
  *--sp = nullptr;                               // fiber_main's return address: it never returns
  *--sp = reinterpret_cast<void*>(&fiber_main);  // where fi_emu_switch returns to
  for (int i = 0; i < 6; ++i) *--sp = nullptr;   // rbp, rbx, r12-r15
  const uint32_t control[2] = {0x1F80, 0x037F};  // MXCSR and x87 control word: the defaults
  std::memcpy(--sp, control, sizeof control);
  c.sp = sp;
}

void switch_context(Context& from, const Context& to) { fi_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};

void make_context(Context& c, char* stack, size_t size) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, fiber_main, 0);
}

void switch_context(Context& from, const Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

struct Fiber {
  Context context;
  char* stack = nullptr;       // kFiberStack bytes above a guard page
  void* fake_stack = nullptr;  // ASan's, while the fiber is suspended
  enum State { kRunnable, kWaiting, kDone } state = kRunnable;
  long barriers = 0;  // __syncthreads reached so far

  Fiber() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* m = mmap(nullptr, kFiberStack + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      std::perror("fastimg CUDA emulation: mmap of a fiber stack");
      std::abort();
    }
    mprotect(m, page, PROT_NONE);  // an overflow faults instead of corrupting
    stack = static_cast<char*>(m) + page;
  }
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
};

// The block now running on this host thread, and its scheduler.
struct Block {
  Context scheduler;
  std::vector<std::unique_ptr<Fiber>>* fibers = nullptr;
  unsigned running = 0;
  const std::function<void()>* thread = nullptr;
  void* shared = nullptr;
  const void* scheduler_stack = nullptr;  // bounds of the scheduler's stack, for ASan
  size_t scheduler_stack_size = 0;
};
thread_local Block* current_block = nullptr;

// ASan must be told of every switch between stacks, or it takes a fiber's
// frames for an overflow of the thread's stack.
void start_switch(void** fake_stack, const void* bottom, size_t size) {
#ifdef FI_ASAN
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
#else
  (void)fake_stack, (void)bottom, (void)size;
#endif
}

void finish_switch(void* fake_stack, const void** bottom, size_t* size) {
#ifdef FI_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, bottom, size);
#else
  (void)fake_stack, (void)bottom, (void)size;
#endif
}

// From a fiber back to its block's scheduler; returns when resumed.
void to_scheduler(Fiber& f, bool exiting) {
  Block& b = *current_block;
  start_switch(exiting ? nullptr : &f.fake_stack, b.scheduler_stack, b.scheduler_stack_size);
  switch_context(f.context, b.scheduler);
  finish_switch(f.fake_stack, &b.scheduler_stack, &b.scheduler_stack_size);
}

void fiber_main() {
  Block& b = *current_block;
  finish_switch(nullptr, &b.scheduler_stack, &b.scheduler_stack_size);
  (*b.thread)();
  Fiber& f = *(*b.fibers)[b.running];
  f.state = Fiber::kDone;
  to_scheduler(f, true);
}

void resume(Block& b, unsigned i) {
  Fiber& f = *(*b.fibers)[i];
  b.running = i;
  threadIdx = {i, 0, 0};
  void* fake_stack = nullptr;
  start_switch(&fake_stack, f.stack, kFiberStack);
  switch_context(b.scheduler, f.context);
  finish_switch(fake_stack, nullptr, nullptr);
}

[[noreturn]] void barrier_error(const char* what) {
  std::fprintf(stderr, "fastimg CUDA emulation: block %u: %s\n", blockIdx.x, what);
  std::abort();
}

// One block: its threads as fibers, round by round (see cuda_emu.h).
void run_block(Block& b, unsigned threads) {
  auto& fibers = *b.fibers;
  for (unsigned i = 0; i < threads; ++i) {
    Fiber& f = *fibers[i];
#ifdef FI_ASAN
    // The redzones of the frames an earlier block's fiber left at the top of
    // this stack when it switched away for good (fiber_main, to_scheduler);
    // every other frame unpoisoned its own when it returned.
    constexpr size_t kTop = size_t{8} << 10;
    __asan_unpoison_memory_region(f.stack + kFiberStack - kTop, kTop);
#endif
    make_context(f.context, f.stack, kFiberStack);
    f.state = Fiber::kRunnable;
    f.barriers = 0;
  }
  for (unsigned round = 0;; ++round) {
    for (unsigned k = 0; k < threads; ++k) {
      const unsigned i = round % 2 == 0 ? k : threads - 1 - k;
      if (fibers[i]->state == Fiber::kRunnable) resume(b, i);
    }
    unsigned done = 0;
    for (unsigned i = 0; i < threads; ++i) done += fibers[i]->state == Fiber::kDone;
    if (done == threads) return;
    if (done > 0) barrier_error("__syncthreads reached by some threads while others returned");
    for (unsigned i = 0; i < threads; ++i) {
      if (fibers[i]->barriers != fibers[0]->barriers)
        barrier_error("threads waiting at different __syncthreads");
      fibers[i]->state = Fiber::kRunnable;
    }
  }
}

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
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = multiprocessors(); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = kSharedPerBlock; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = kSharedPerBlockOptin; return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue);
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
  if (kind == cudaMemcpyDeviceToDevice) {
    // Both ends must be device memory, each ordered after its last write.
    const std::lock_guard<std::mutex> lock(d.mutex);
    Allocation* to = d.holding(dst, bytes);
    const Allocation* from = d.holding(src, bytes);
    if (to == nullptr || from == nullptr) return fail(cudaErrorInvalidValue);
    d.check_ordered(*from, "cudaMemcpyAsync");
    d.check_ordered(*to, "cudaMemcpyAsync");
    d.run_own_pending();
    d.write(*to);
    std::memmove(dst, src, bytes);
    return cudaSuccess;
  }
  if (env_long("FASTIMG_EMU_NO_HOST_COPIES", 0) != 0) return fail(cudaErrorInvalidValue);
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
  d.events[handle].timing = (flags & cudaEventDisableTiming) == 0;
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
  e->recorded = true;
  e->at = std::chrono::steady_clock::now();
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

// As on a GPU, both events must have been created with timing and recorded.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (const cudaError_t err = enter()) return err;
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  const Event* a = d.event(start, "cudaEventElapsedTime");
  const Event* b = d.event(end, "cudaEventElapsedTime");
  if (ms == nullptr) return fail(cudaErrorInvalidValue);
  if (a == nullptr || b == nullptr || !a->timing || !b->timing || !a->recorded || !b->recorded)
    return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
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

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (const cudaError_t err = enter()) return err;
  if (func == nullptr || attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      value > kSharedPerBlockOptin)
    return fail(cudaErrorInvalidValue);
  const std::lock_guard<std::mutex> lock(attributes_mutex);
  shared_limits[func] = value;
  return cudaSuccess;
}

void __syncthreads() {
  if (current_block == nullptr) {
    std::fprintf(stderr,
                 "fastimg CUDA emulation: __syncthreads in a kernel not launched as blocks "
                 "(launch_blocks)\n");
    std::abort();
  }
  Fiber& f = *(*current_block->fibers)[current_block->running];
  ++f.barriers;
  f.state = Fiber::kWaiting;
  to_scheduler(f, false);
}

namespace fi::emu {

void* block_shared_memory() { return current_block != nullptr ? current_block->shared : nullptr; }

void run_blocks(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& thread) {
  // This host thread's fibers, kept for its later launches.
  thread_local std::vector<std::unique_ptr<Fiber>> fibers;
  while (fibers.size() < block.x) fibers.push_back(std::make_unique<Fiber>());
  gridDim = grid;
  blockDim = block;
  Block b;
  b.fibers = &fibers;
  b.thread = &thread;
  current_block = &b;
  for (unsigned i = 0; i < grid.x; ++i) {
    blockIdx = {i, 0, 0};
    // Shared memory holds whatever was there before, as on a GPU.
    b.shared = std::malloc(std::max<size_t>(shared_bytes, 1));
    std::memset(b.shared, 0xFF, shared_bytes);
    run_block(b, block.x);
    std::free(b.shared);
  }
  current_block = nullptr;
}

bool begin_launch(const void* kernel, dim3 grid, dim3 block, size_t shared_bytes,
                  const void* const* pointers, const bool* writes, size_t n_pointers) {
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
  {
    const std::lock_guard<std::mutex> lock(attributes_mutex);
    const auto it = shared_limits.find(kernel);
    const size_t limit = it != shared_limits.end() ? static_cast<size_t>(it->second)
                                                   : static_cast<size_t>(kSharedPerBlock);
    if (shared_bytes > limit) {
      fail(cudaErrorInvalidValue);
      return false;
    }
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
