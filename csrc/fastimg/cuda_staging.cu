// Copies between an array in pageable host memory (numpy's) and the device go
// through two pinned buffers per thread, a chunk at a time: the host fills or
// empties one buffer while the other's DMA runs. A pageable copy would be
// staged by the driver anyway, without that overlap, and would block the host.
#include <cstring>

#include "cuda_memory.h"

namespace fi {
namespace {

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

}  // namespace

void cuda_upload(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes) {
  staging().upload(ordered(dst), src, bytes);
  mark_written(dst);
}

void cuda_download(uint8_t* dst, const std::shared_ptr<uint8_t>& src, size_t bytes) {
  const uint8_t* s = ordered(src);
  synchronised([&] { staging().download(dst, s, bytes); });
}

}  // namespace fi
