// Device memory on the stream-ordered allocator, and the ordering of an
// Image's memory between the streams of different host threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "cuda_launch.h"

namespace fi {

// Device memory from the stream-ordered allocator of this thread's stream.
uint8_t* malloc_on_stream(size_t bytes);

// Bytes an Image's device memory has beyond its pixels, readable by kernels.
constexpr size_t kImagePadding = 16;

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

// An Image's device memory (cuda_alloc) is written on one thread's stream and
// may be read, written or freed on another's. Each use first orders this
// thread's stream after its last write; each write marks itself the last.
// Reads need no mark: every call that reads synchronises its stream before
// it returns (synchronised), so a later write or free is ordered by the host.
uint8_t* ordered(const std::shared_ptr<uint8_t>& image);
void mark_written(const std::shared_ptr<uint8_t>& image);

// Runs a call that reads an Image, then synchronises its stream, on an error
// too: a later write or free on another stream (ordered by the host only)
// must not overtake a kernel still reading. Kernel faults surface here, at
// the call that caused them.
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

}  // namespace fi
