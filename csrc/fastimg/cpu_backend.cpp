// The CPU backend: host memory, and the drivers of cpu.cpp.
#include <cstring>

#include "backend.h"
#include "cpu.h"

namespace fi {
namespace {

std::shared_ptr<uint8_t> alloc(size_t bytes) {
  return std::shared_ptr<uint8_t>(new uint8_t[bytes], std::default_delete<uint8_t[]>());
}

void upload(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes) {
  std::memcpy(dst.get(), src, bytes);
}

void download(uint8_t* dst, const std::shared_ptr<uint8_t>& src, size_t bytes) {
  std::memcpy(dst, src.get(), bytes);
}

void copy_in(const std::shared_ptr<uint8_t>& dst, const uint8_t* src, size_t bytes, uintptr_t) {
  std::memcpy(dst.get(), src, bytes);
}

void separable(const std::shared_ptr<uint8_t>& src, Dims in, const std::shared_ptr<uint8_t>& dst,
               const PlanPtr& plan) {
  cpu_separable(src.get(), in, dst.get(), plan->stages);
}

void quantize(const std::shared_ptr<uint8_t>& src, Dims d, const std::shared_ptr<uint8_t>& dst,
              int levels, bool dither) {
  cpu_quantize(src.get(), d, dst.get(), levels, dither);
}

}  // namespace

const BackendOps kCpuOps{alloc, upload, download, copy_in, separable, quantize};

}  // namespace fi
