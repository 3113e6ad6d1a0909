#include <stdexcept>

#include "cuda_memory.h"

namespace fi {
namespace {

// Its deleter holds an event recorded after every write (the allocation being
// the first); a stream waits for it before any use, so the use is ordered
// after the write on the GPU without blocking the host.
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

}  // namespace

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

uint8_t* ordered(const std::shared_ptr<uint8_t>& image) {
  FI_CUDA_CHECK(cudaStreamWaitEvent(kStream, written_event(image), 0));
  return image.get();
}

void mark_written(const std::shared_ptr<uint8_t>& image) {
  FI_CUDA_CHECK(cudaEventRecord(written_event(image), kStream));
}

std::shared_ptr<uint8_t> cuda_alloc(size_t bytes) {
  cudaEvent_t written = nullptr;
  FI_CUDA_CHECK(cudaEventCreateWithFlags(&written, cudaEventDisableTiming));
  uint8_t* p = nullptr;
  try {
    // The kernels read 8-bit rows as aligned 4-byte words, of which the last
    // may reach past the last pixel (cuda_kernels.cu).
    p = malloc_on_stream(bytes + kImagePadding);
  } catch (...) {
    if (cudaEventDestroy(written) != cudaSuccess) cudaGetLastError();
    throw;
  }
  std::shared_ptr<uint8_t> image(p, OrderedFree{written});
  mark_written(image);  // the allocation, ordered on this thread's stream
  return image;
}

}  // namespace fi
