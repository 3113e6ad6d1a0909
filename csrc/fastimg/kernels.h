// The drivers: loops (CPU) and grid-stride kernels (CUDA) that apply the
// formulas of pixel.h to whole images. Pointers are host memory for cpu_*
// and device memory for cuda_*; images are packed rows of h x w x c bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "passes.h"

namespace fi {

struct Dims {
  int h = 0;
  int w = 0;
  int c = 0;
  size_t bytes() const { return static_cast<size_t>(h) * w * c; }
  bool operator==(const Dims& o) const { return h == o.h && w == o.w && c == o.c; }
};

// Separable stages applied in turn; dst has the last stage's
// horizontal.n_out columns and vertical.n_out rows.
void cpu_separable(const uint8_t* src, Dims in, uint8_t* dst, const std::vector<Stage>& stages);
void cpu_quantize(const uint8_t* src, Dims d, uint8_t* dst, int levels, bool dither);

struct CudaStatus {
  bool compiled = false;
  bool available = false;
  std::string device;  // name of device 0 when available
  std::string reason;  // why CUDA is not available, else empty
};
CudaStatus cuda_status();

#ifdef FASTIMG_WITH_CUDA
// Device memory from the stream-ordered allocator of the calling thread's
// default stream (kernels are compiled with per-thread default streams, so
// threads never serialise on one stream).
std::shared_ptr<uint8_t> cuda_alloc(size_t bytes);
void cuda_upload(uint8_t* dst, const uint8_t* src, size_t bytes);
void cuda_download(uint8_t* dst, const uint8_t* src, size_t bytes);
void cuda_separable(const uint8_t* src, Dims in, uint8_t* dst, const std::vector<Stage>& stages);
void cuda_quantize(const uint8_t* src, Dims d, uint8_t* dst, int levels, bool dither);
#endif

}  // namespace fi
