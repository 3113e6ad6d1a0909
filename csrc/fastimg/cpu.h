// The CPU drivers (cpu.cpp): loops that apply the formulas of pixel.h to whole
// images in host memory, packed rows of h x w x c values of in.type.
#pragma once

#include <cstdint>
#include <vector>

#include "dims.h"
#include "passes.h"

namespace fi {

// Separable stages applied in turn; dst has the last stage's
// horizontal.n_out columns and vertical.n_out rows.
void cpu_separable(const void* src, Dims in, void* dst, const std::vector<Stage>& stages);
void cpu_quantize(const void* src, Dims d, void* dst, int levels, bool dither);
// The instruction set the CPU kernels run on: "x86-64-v4" (AVX-512, 16-float
// vectors), "x86-64-v3" (AVX2, 8) or "baseline" (4).
const char* cpu_target();
// While one exists, the CPU kernels called on this thread may use up to n
// threads, the caller's included (0: one per CPU this process may run on);
// otherwise one.
class CpuThreads {
 public:
  explicit CpuThreads(int n);
  ~CpuThreads();
  CpuThreads(const CpuThreads&) = delete;
  CpuThreads& operator=(const CpuThreads&) = delete;

 private:
  int saved_;
};

}  // namespace fi
