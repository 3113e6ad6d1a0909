// A host emulation of the part of the CUDA runtime that csrc/fastimg/cuda_*.cu
// use (FASTIMG_CUDA=EMU). Device memory is host memory that the emulation
// tracks, so that AddressSanitizer sees every access and copies and launches
// can be checked against it.
//
// Launches. A grid-stride kernel (launch) has no shared memory and no
// barriers: every (block, thread) runs in turn on the calling thread, which
// executes exactly its logic. A kernel whose threads share memory and wait for
// each other (launch_blocks) runs each block's threads as fibers on the
// calling thread: a thread runs until it reaches __syncthreads or returns,
// then the next one runs; when all have arrived, the next round starts, in the
// opposite order (so that a value read from shared memory without a barrier
// after its write comes out wrong one way round or the other). A barrier that
// some threads of a block reach and others do not, or that they reach a
// different number of times, aborts with a message. Each block gets its own
// dynamic shared memory, a heap block filled with 0xFF bytes (NaN as float).
//
// Environment (read at each call, so that a test can change it in-process):
//   FASTIMG_EMU_SMS=n           multiprocessors reported (default 132): the
//                               grid size the kernels see
//   FASTIMG_EMU_MEMORY=bytes    device memory; allocations beyond it fail
//   FASTIMG_EMU_OOM_AT=n        the n-th allocation after this value was set
//                               fails with cudaErrorMemoryAllocation
//   FASTIMG_EMU_STICKY_AT=n     the n-th launch after this value was set
//                               faults with cudaErrorIllegalAddress, sticky
//   FASTIMG_EMU_NO_KERNEL_IMAGE=1  every launch fails as on a GPU the module
//                               has no kernel image for
//   FASTIMG_EMU_SKIP_WAITS=1    cudaStreamWaitEvent orders nothing, as if the
//                               call were missing: the ordering check fires
//   FASTIMG_EMU_SKIP_EVENT_SYNCS=1  cudaEventSynchronize waits for nothing, as
//                               if the call were missing: pinned buffers are
//                               reused too early and the pixels come out wrong
//   FASTIMG_EMU_NO_HOST_COPIES=1  a copy between host and device fails with
//                               cudaErrorInvalidValue: a path that is to stay
//                               on the device is proven to
//
// Copies between device memory and pinned host memory (cudaMallocHost) are
// asynchronous on a GPU: the host may not touch the buffer until an event
// recorded after the copy has completed. The emulation defers them for that
// reason: such a copy runs only when the host waits for it (an event
// synchronised or waited for, the stream synchronised) or when a later
// operation of its stream other than another such copy needs it. A host that
// reuses a buffer too early therefore sends or reads the wrong bytes. Copies
// with pageable host memory run at once, as the real runtime's do.
//
// Streams: each host thread's default stream is one stream. The emulation runs
// them synchronously, so it cannot race, but it checks that the CUDA calls
// order them: device memory written on one stream and then used (copied,
// passed to a kernel, freed) on another must be ordered after the write by an
// event the user waited for, or by a synchronisation of the writing stream.
// An unordered use aborts with a message, as a double free does.
// docs/kernels.md says what this checks and what it cannot.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict

struct alignas(16) float4 {
  float x, y, z, w;
};

// A read through the read-only data cache: a plain read here.
template <class T>
T __ldg(const T* p) {
  return *p;
}

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Byte n of the result is byte (s >> 4n) & 7 of y:x, or with bit 3 of that
// nibble set, that byte's sign repeated.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t both = static_cast<uint64_t>(y) << 32 | x;
  unsigned r = 0;
  for (int n = 0; n < 4; ++n) {
    const unsigned sel = (s >> (4 * n)) & 0xF;
    unsigned b = static_cast<unsigned>(both >> (8 * (sel & 7))) & 0xFF;
    if (sel & 8) b = (b & 0x80) ? 0xFF : 0;
    r |= b << (8 * n);
  }
  return r;
}

// Waits until every thread of the block has reached it (launch_blocks only).
void __syncthreads();

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in variables, per host thread: threads run launches concurrently.
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

// The values of the real runtime's enum, so that messages and logs read alike.
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorECCUncorrectable = 214,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchTimeout = 702,
  cudaErrorAssert = 710,
  cudaErrorHardwareStackError = 714,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorInvalidAddressSpace = 717,
  cudaErrorInvalidPc = 718,
  cudaErrorLaunchFailure = 719,
  cudaErrorMpsClientTerminated = 810,
  cudaErrorExternalDevice = 911,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};
enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };

struct CUmemPoolHandle_st;
using cudaMemPool_t = CUmemPoolHandle_st*;

struct CUstream_st;
using cudaStream_t = CUstream_st*;
#define cudaStreamPerThread (reinterpret_cast<cudaStream_t>(0x2))

struct CUevent_st;
using cudaEvent_t = CUevent_st*;
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int multiProcessorCount;
  int major;
  int minor;
};

const char* cudaGetErrorName(cudaError_t err);
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
// The host's time between the two records (the emulation's work is done at
// the launch, between them).
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value);

namespace fi::emu {

// Checks a launch (configuration, shared memory, device state, pointer
// arguments and their ordering) and records the error it gets, if any; says
// whether the kernel is to run. writes[i]: the kernel may write through
// pointers[i].
bool begin_launch(const void* kernel, dim3 grid, dim3 block, size_t shared_bytes,
                  const void* const* pointers, const bool* writes, size_t n_pointers);

template <class T>
const void* pointer_or_null(const T& arg) {
  if constexpr (std::is_pointer_v<T>)
    return arg;
  else
    return nullptr;
}

template <class... Params, class... Args>
bool begin(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
           const Args&... args) {
  // Every pointer argument must point into device memory, as on a GPU.
  const void* pointers[sizeof...(Args) + 1] = {pointer_or_null(args)...};
  const bool writes[sizeof...(Params) + 1] = {std::is_pointer_v<Params> &&
                                              !std::is_const_v<std::remove_pointer_t<Params>>...};
  static_assert(sizeof...(Params) == sizeof...(Args), "one argument per parameter");
  return begin_launch(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes, pointers,
                      writes, sizeof...(Args));
}

// kernel<<<grid, block, 0, stream>>>(args...) of a kernel without shared
// memory or barriers: every block, every thread, in order, on the calling
// thread (which is what the stream orders work by).
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t, Args... args) {
  if (!begin(kernel, grid, block, 0, args...)) return;
  gridDim = grid;
  blockDim = block;
  for (unsigned b = 0; b < grid.x; ++b) {
    blockIdx = {b, 0, 0};
    for (unsigned t = 0; t < block.x; ++t) {
      threadIdx = {t, 0, 0};
      kernel(args...);
    }
  }
}

// Runs `thread` for every thread of every block of the grid, each block's
// threads as fibers that switch at __syncthreads (see the top of this file).
void run_blocks(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& thread);

// kernel<<<grid, block, shared_bytes, stream>>>(args...).
template <class... Params, class... Args>
void launch_blocks(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                   cudaStream_t, Args... args) {
  if (!begin(kernel, grid, block, shared_bytes, args...)) return;
  run_blocks(grid, block, shared_bytes, [&] { kernel(args...); });
}

// The dynamic shared memory of the block now running on this thread.
void* block_shared_memory();

}  // namespace fi::emu
