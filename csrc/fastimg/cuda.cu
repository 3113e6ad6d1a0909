#include <algorithm>
#include <cstdint>
#include <cstring>
#include <list>
#include <mutex>
#include <type_traits>
#include <vector>

#include "cuda_check.h"
#include "kernels.h"

namespace fi {
namespace {

// All work of a host thread goes to its own default stream, so worker threads
// overlap on the GPU instead of queueing behind one another.
const cudaStream_t kStream = cudaStreamPerThread;

// A row of pixels: 8-bit (the input of a chain of stages) or premultiplied
// floats (between stages).
template <int C, class In>
struct Row {
  const In* p;
  __device__ void load(int i, float px[C]) const {
    if constexpr (std::is_same_v<In, float>)
      load_f32<C>(p + static_cast<size_t>(i) * C, px);
    else
      load_u8<C>(p + static_cast<size_t>(i) * C, px);
  }
};

template <int C>
struct F32Column {
  const float* p;
  size_t pitch;  // floats between consecutive rows
  __device__ void load(int i, float px[C]) const { load_f32<C>(p + i * pitch, px); }
};

// The horizontal pass's weights are stored tap-major on the device (tap k of
// output x at k * n_out + x): the threads of a warp compute neighbouring
// outputs x, so their reads of one tap are contiguous instead of `taps` apart.
struct TapMajor {
  const float* p;  // tap 0 of this output
  int n_out;
  __device__ float operator[](int k) const { return p[static_cast<size_t>(k) * n_out]; }
};

// Grid-stride loops: any grid size covers any image, and the launch below
// sizes the grid to the device instead of to the image.
template <int C, class In>
__global__ void horizontal_kernel(const In* src, int in_w, int rows, PassView hp, float* tmp) {
  const size_t n = static_cast<size_t>(rows) * hp.n_out;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / hp.n_out), x = static_cast<int>(i % hp.n_out);
    const Row<C, In> row{src + static_cast<size_t>(y) * in_w * C};
    weighted_sum<C>(row, hp.start[x], TapMajor{hp.weights + x, hp.n_out}, hp.taps, tmp + i * C);
  }
}

template <int C, class Out>
__global__ void vertical_kernel(const float* tmp, int w, PassView vp, Out* dst) {
  const size_t n = static_cast<size_t>(vp.n_out) * w;
  const size_t pitch = static_cast<size_t>(w) * C;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / w), x = static_cast<int>(i % w);
    const F32Column<C> column{tmp + static_cast<size_t>(x) * C, pitch};
    float acc[C];
    weighted_sum<C>(column, vp.start[y], vp.weights + static_cast<size_t>(y) * vp.taps, vp.taps,
                    acc);
    if constexpr (std::is_same_v<Out, float>)
      for (int c = 0; c < C; ++c) dst[i * C + c] = acc[c];  // stays premultiplied, unrounded
    else
      store_u8<C>(acc, dst + i * C);
  }
}

__global__ void quantize_kernel(const uint8_t* src, Dims d, uint8_t* dst, int levels, bool dither) {
  const size_t n = static_cast<size_t>(d.h) * d.w;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / d.w), x = static_cast<int>(i % d.w);
    quantize_pixel(src + i * d.c, dst + i * d.c, d.c, levels, x, y, dither);
  }
}

// The start-up probe: a formula of pixel.h per element, which the host checks.
// It fails to launch when no kernel image in the module fits the device.
__global__ void probe_kernel(uint8_t* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    out[i] = quantize_value(i & 255, 7, i, i >> 3, true);
}

constexpr int kThreads = 256;

int grid_for(size_t items) {
  static const int max_blocks = [] {
    int dev = 0, sms = 0;
    FI_CUDA_CHECK(cudaGetDevice(&dev));
    FI_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return sms * 32;  // enough resident blocks to hide memory latency
  }();
  const size_t blocks = (items + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<size_t>(1, std::min<size_t>(blocks, max_blocks)));
}

// The one place kernels are launched, on a grid sized for `items`. The host
// emulation runs every (block, thread) of the grid in turn instead.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), size_t items, Args... args) {
  const int grid = grid_for(items);
#ifdef FASTIMG_CUDA_EMU
  emu::launch(kernel, grid, kThreads, kStream, args...);
#else
  kernel<<<grid, kThreads, 0, kStream>>>(args...);
#endif
  FI_CUDA_CHECK_LAUNCH();
}

// Device memory from the stream-ordered allocator of this thread's stream.
uint8_t* malloc_on_stream(size_t bytes) {
  // The device's default pool hands its free memory back to the driver at
  // every synchronisation unless told otherwise: then every call's buffers
  // were new driver allocations. Kept instead, they are reused.
  static const bool pool_keeps_memory = [] {
    int dev = 0;
    FI_CUDA_CHECK(cudaGetDevice(&dev));
    cudaMemPool_t pool;
    FI_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
    uint64_t threshold = UINT64_MAX;
    FI_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    return true;
  }();
  (void)pool_keeps_memory;
  void* p = nullptr;
  FI_CUDA_CHECK(cudaMallocAsync(&p, std::max<size_t>(bytes, 1), kStream));
  return static_cast<uint8_t*>(p);
}

// A call's own buffers (weights, intermediate rows): used on this thread's
// stream only, and freed after it synchronised.
template <class T>
std::shared_ptr<T> device_array(size_t count) {
  // A deleter must not throw. Its failure is cleared rather than left for an
  // unrelated call to report; a sticky error comes back at the next call anyway.
  return std::shared_ptr<T>(reinterpret_cast<T*>(malloc_on_stream(count * sizeof(T))), [](T* q) {
    if (cudaFreeAsync(q, kStream) != cudaSuccess) cudaGetLastError();
  });
}

// An Image's device memory is written on one thread's stream and may be read,
// written or freed on another's. Its deleter holds an event recorded after
// every write (the allocation being the first); a stream waits for it before
// any use, so the use is ordered after the write on the GPU without blocking
// the host. Reads need no event: every call that reads synchronises its
// stream before it returns, so a later write or free is ordered by the host.
struct OrderedFree {
  cudaEvent_t written = nullptr;
  // Cannot throw (see device_array). The wait fails only in a context that a
  // sticky error ended, where nothing runs any more, so the memory is freed.
  void operator()(uint8_t* q) const {
    bool ok = cudaStreamWaitEvent(kStream, written, 0) == cudaSuccess;
    ok = cudaFreeAsync(q, kStream) == cudaSuccess && ok;
    ok = cudaEventDestroy(written) == cudaSuccess && ok;
    if (!ok) cudaGetLastError();
  }
};

cudaEvent_t written_event(const std::shared_ptr<uint8_t>& image) {
  const OrderedFree* f = std::get_deleter<OrderedFree>(image);
  if (f == nullptr) throw std::logic_error("device memory that is not an Image's");
  return f->written;
}

// Orders this thread's stream after the last write to `image`, on any stream.
uint8_t* ordered(const std::shared_ptr<uint8_t>& image) {
  FI_CUDA_CHECK(cudaStreamWaitEvent(kStream, written_event(image), 0));
  return image.get();
}

// Marks the work queued so far on this thread's stream as the last write.
void mark_written(const std::shared_ptr<uint8_t>& image) {
  FI_CUDA_CHECK(cudaEventRecord(written_event(image), kStream));
}

// Copies between an array in pageable host memory (numpy's) and the device go
// through two pinned buffers per thread, a chunk at a time: the host fills or
// empties one buffer while the other's DMA runs. A pageable copy would be
// staged by the driver anyway, without that overlap, and would block the host.
class Staging {
 public:
  static constexpr size_t kChunk = size_t{4} << 20;

  Staging() {
    try {
      for (Half& h : halves_) {
        FI_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h.buffer), kChunk));
        FI_CUDA_CHECK(cudaEventCreateWithFlags(&h.copied, cudaEventDisableTiming));
      }
    } catch (...) {
      release();  // what was made before the failure
      throw;
    }
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  ~Staging() { release(); }

  // Host to device: returns once the last chunk is queued; the stream orders
  // the copies before the work queued after them.
  void upload(uint8_t* dst, const uint8_t* src, size_t bytes) {
    for (size_t off = 0, i = 0; off < bytes; off += kChunk, ++i) {
      const size_t n = std::min(kChunk, bytes - off);
      Half& h = halves_[i % 2];
      FI_CUDA_CHECK(cudaEventSynchronize(h.copied));  // its previous DMA has read it
      std::memcpy(h.buffer, src + off, n);
      FI_CUDA_CHECK(cudaMemcpyAsync(dst + off, h.buffer, n, cudaMemcpyHostToDevice, kStream));
      FI_CUDA_CHECK(cudaEventRecord(h.copied, kStream));
    }
  }

  // Device to host: chunk i + 1 is copied into one buffer while the host
  // empties chunk i from the other.
  void download(uint8_t* dst, const uint8_t* src, size_t bytes) {
    const size_t chunks = (bytes + kChunk - 1) / kChunk;
    const auto queue = [&](size_t i) {
      Half& h = halves_[i % 2];
      FI_CUDA_CHECK(cudaMemcpyAsync(h.buffer, src + i * kChunk, chunk_bytes(i, bytes),
                                    cudaMemcpyDeviceToHost, kStream));
      FI_CUDA_CHECK(cudaEventRecord(h.copied, kStream));
    };
    if (chunks > 0) queue(0);
    for (size_t i = 0; i < chunks; ++i) {
      if (i + 1 < chunks) queue(i + 1);  // into the buffer the host emptied last round
      Half& h = halves_[i % 2];
      FI_CUDA_CHECK(cudaEventSynchronize(h.copied));
      std::memcpy(dst + i * kChunk, h.buffer, chunk_bytes(i, bytes));
    }
  }

 private:
  static size_t chunk_bytes(size_t i, size_t bytes) { return std::min(kChunk, bytes - i * kChunk); }

  // Runs at thread exit too, so it cannot throw. A copy still using a buffer
  // is waited for first (cudaFreeHost would also wait, for the whole device).
  void release() noexcept {
    for (Half& h : halves_) {
      bool ok = h.copied == nullptr || cudaEventSynchronize(h.copied) == cudaSuccess;
      ok = (h.buffer == nullptr || cudaFreeHost(h.buffer) == cudaSuccess) && ok;
      ok = (h.copied == nullptr || cudaEventDestroy(h.copied) == cudaSuccess) && ok;
      if (!ok) cudaGetLastError();
    }
  }

  struct Half {
    uint8_t* buffer = nullptr;
    cudaEvent_t copied = nullptr;  // recorded after the last copy from or into the buffer
  };
  Half halves_[2];
};

// This thread's buffers, made at its first copy. A failed attempt (pinned
// memory is scarce) throws, stores nothing, and is tried again next time.
Staging& staging() {
  thread_local std::unique_ptr<Staging> s;
  if (!s) s = std::make_unique<Staging>();
  return *s;
}

// Weights in the order the kernels read them: output-major as the host builds
// them (vertical pass: a warp shares one output row), or tap-major (TapMajor).
enum class Layout : char { OutputMajor, TapMajor };

// A pass's weight tables on the device; the view points there.
struct DevicePass {
  std::shared_ptr<int> start;
  std::shared_ptr<float> weights;
  PassView view;

  DevicePass(const Pass& p, Layout layout)
      : start(device_array<int>(p.start.size())), weights(device_array<float>(p.weights.size())) {
    std::vector<float> transposed;
    if (layout == Layout::TapMajor) {
      transposed.resize(p.weights.size());
      for (int x = 0; x < p.n_out; ++x)
        for (int k = 0; k < p.taps; ++k)
          transposed[static_cast<size_t>(k) * p.n_out + x] =
              p.weights[static_cast<size_t>(x) * p.taps + k];
    }
    const std::vector<float>& w = layout == Layout::TapMajor ? transposed : p.weights;
    FI_CUDA_CHECK(cudaMemcpyAsync(start.get(), p.start.data(), p.start.size() * sizeof(int),
                                  cudaMemcpyHostToDevice, kStream));
    FI_CUDA_CHECK(cudaMemcpyAsync(weights.get(), w.data(), w.size() * sizeof(float),
                                  cudaMemcpyHostToDevice, kStream));
    // Complete before any thread's stream may read them from the cache.
    FI_CUDA_CHECK(cudaStreamSynchronize(kStream));
    view = {p.n_in, p.n_out, p.taps, start.get(), weights.get()};
  }
};

// A plan's weight tables on the device: per stage, the horizontal pass
// tap-major and the vertical pass output-major.
struct DevicePlan {
  std::vector<DevicePass> passes;

  explicit DevicePlan(const Plan& p) {
    passes.reserve(2 * p.stages.size());
    for (const Stage& s : p.stages) {
      passes.emplace_back(s.horizontal, Layout::TapMajor);
      passes.emplace_back(s.vertical, Layout::OutputMajor);
    }
  }
};

// Device tables of the plans in use, keyed by the plan's id: calls of one
// geometry share one host plan (plan.h), so they upload its tables once.
// Users hold the tables until their stream has synchronised, so whoever drops
// them last frees memory no kernel still reads.
class PlanTables {
 public:
  std::shared_ptr<const DevicePlan> get(const PlanPtr& plan) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (auto found = find(plan->id)) return found;
    }
    auto made = std::make_shared<const DevicePlan>(*plan);  // uploaded outside the lock
    const std::lock_guard<std::mutex> lock(mutex_);
    if (auto found = find(plan->id)) return found;  // another thread was first
    // A plan no longer held by anyone (evicted from the host's cache, or a
    // chain built for one call) cannot be asked for again: drop its tables.
    lru_.remove_if([](const Entry& e) { return e.plan.expired(); });
    lru_.push_front({plan->id, plan, made});
    if (lru_.size() > kEntries) lru_.pop_back();
    return made;
  }

 private:
  static constexpr size_t kEntries = 64;  // as many as the host keeps

  struct Entry {
    uint64_t id;
    std::weak_ptr<const Plan> plan;
    std::shared_ptr<const DevicePlan> tables;
  };

  // The tables of plan `id`, moved to the front; null if absent. Under mutex_.
  std::shared_ptr<const DevicePlan> find(uint64_t id) {
    for (auto it = lru_.begin(); it != lru_.end(); ++it)
      if (it->id == id) {
        lru_.splice(lru_.begin(), lru_, it);
        return it->tables;
      }
    return nullptr;
  }

  std::mutex mutex_;
  std::list<Entry> lru_;  // most recently used first
};

// Never destroyed: its device memory must not be freed after the runtime is.
PlanTables& plan_tables() {
  static PlanTables* tables = new PlanTables;
  return *tables;
}

template <int C, class In, class Out>
void stage(const In* src, Dims in, Out* dst, const DevicePass& h, const DevicePass& v) {
  const PassView hp = h.view, vp = v.view;
  const size_t tmp_items = static_cast<size_t>(in.h) * hp.n_out;
  auto tmp = device_array<float>(tmp_items * C);
  launch(horizontal_kernel<C, In>, tmp_items, src, in.w, in.h, hp, tmp.get());
  const size_t out_items = static_cast<size_t>(vp.n_out) * hp.n_out;
  launch(vertical_kernel<C, Out>, out_items, tmp.get(), hp.n_out, vp, dst);
}

template <int C>
void run_stages(const uint8_t* src, Dims in, uint8_t* dst, const PlanPtr& plan,
                const std::shared_ptr<uint8_t>& image) {
  // Held until the stream has synchronised (see PlanTables).
  const std::shared_ptr<const DevicePlan> tables = plan_tables().get(plan);
  const std::vector<Stage>& stages = plan->stages;
  // Between stages the image stays in premultiplied floats, as on the CPU.
  std::shared_ptr<float> cur, next;
  for (size_t i = 0; i < stages.size(); ++i) {
    const Stage& s = stages[i];
    const bool first = i == 0, last = i + 1 == stages.size();
    if (!last)
      next = device_array<float>(static_cast<size_t>(s.vertical.n_out) * s.horizontal.n_out * C);
    const DevicePass &h = tables->passes[2 * i], &v = tables->passes[2 * i + 1];
    if (first && last)
      stage<C>(src, in, dst, h, v);
    else if (first)
      stage<C>(src, in, next.get(), h, v);
    else if (last)
      stage<C>(cur.get(), in, dst, h, v);
    else
      stage<C>(cur.get(), in, next.get(), h, v);
    in = {s.vertical.n_out, s.horizontal.n_out, C};
    cur.swap(next);
  }
  mark_written(image);
}

// Runs a call that reads an Image, then synchronises its stream, on an error
// too: a later write or free on another stream (ordered by the host only, see
// OrderedFree) must not overtake a kernel still reading. Kernel faults surface
// here, at the call that caused them.
template <class Work>
void synchronised(Work work) {
  try {
    work();
  } catch (...) {
    if (cudaStreamSynchronize(kStream) != cudaSuccess) cudaGetLastError();
    throw;
  }
  FI_CUDA_CHECK(cudaStreamSynchronize(kStream));
}

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
    launch(probe_kernel, n, out.get(), n);
    std::vector<uint8_t> got(n);
    cuda_download(got.data(), out, n);
    for (int i = 0; i < n; ++i)
      if (got[i] != quantize_value(i & 255, 7, i, i >> 3, true))
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

std::shared_ptr<uint8_t> cuda_alloc(size_t bytes) {
  cudaEvent_t written = nullptr;
  FI_CUDA_CHECK(cudaEventCreateWithFlags(&written, cudaEventDisableTiming));
  uint8_t* p = nullptr;
  try {
    p = malloc_on_stream(bytes);
  } catch (...) {
    if (cudaEventDestroy(written) != cudaSuccess) cudaGetLastError();
    throw;
  }
  std::shared_ptr<uint8_t> image(p, OrderedFree{written});
  mark_written(image);  // the allocation, ordered on this thread's stream
  return image;
}

void cuda_upload(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes) {
  staging().upload(ordered(dst), src, bytes);
  mark_written(dst);
}

void cuda_download(uint8_t* dst, const std::shared_ptr<uint8_t>& src, size_t bytes) {
  const uint8_t* s = ordered(src);
  synchronised([&] { staging().download(dst, s, bytes); });
}

void cuda_separable(const std::shared_ptr<uint8_t>& src, Dims in,
                    const std::shared_ptr<uint8_t>& dst, const PlanPtr& plan) {
  if (in.c != 1 && in.c != 3 && in.c != 4)
    throw std::invalid_argument("channels must be 1, 3 or 4");
  const uint8_t* s = ordered(src);
  uint8_t* d = ordered(dst);
  synchronised([&] {
    if (in.c == 1) run_stages<1>(s, in, d, plan, dst);
    if (in.c == 3) run_stages<3>(s, in, d, plan, dst);
    if (in.c == 4) run_stages<4>(s, in, d, plan, dst);
  });
}

void cuda_quantize(const std::shared_ptr<uint8_t>& src, Dims d, const std::shared_ptr<uint8_t>& dst,
                   int levels, bool dither) {
  const uint8_t* s = ordered(src);
  uint8_t* out = ordered(dst);
  synchronised([&] {
    launch(quantize_kernel, static_cast<size_t>(d.h) * d.w, s, d, out, levels, dither);
    mark_written(dst);
  });
}

}  // namespace fi
