// The CUDA backend's operations, implemented by the cuda_*.cu files; image.cpp
// reaches them through kCudaOps (backend.h). The memory they take is
// cuda_alloc's, which carries what orders its uses on any thread's stream
// after its last write (cuda_memory.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "dims.h"
#include "plan.h"

namespace fi {

// Records a sticky error: from then on cuda_status() reports CUDA unavailable.
void cuda_mark_lost(const std::string& what);
// Device memory from the stream-ordered allocator of the calling thread's
// default stream (kernels are compiled with per-thread default streams, so
// threads never serialise on one stream).
std::shared_ptr<uint8_t> cuda_alloc(size_t bytes);
void cuda_upload(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes);
void cuda_download(uint8_t* dst, const std::shared_ptr<uint8_t>& src, size_t bytes);
void cuda_copy_in(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes,
                  uintptr_t producer);
void cuda_separable(const std::shared_ptr<uint8_t>& src, Dims in,
                    const std::shared_ptr<uint8_t>& dst, const PlanPtr& plan);
void cuda_quantize(const std::shared_ptr<uint8_t>& src, Dims d, const std::shared_ptr<uint8_t>& dst,
                   int levels, bool dither);

}  // namespace fi
