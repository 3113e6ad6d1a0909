// What the CPU sources share; not part of the kernels' interface.
#pragma once

#include <functional>

#include "kernels.h"

// One build runs well everywhere: on x86-64 with GCC the kernels are
// compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 and FMA) and the
// baseline, and cpu_target() picks the best the CPU supports.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FI_X86_TARGETS 1
#endif

#if defined(__GNUC__)
#define FI_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define FI_ALWAYS_INLINE inline
#endif

namespace fi {

// Output pixels x_begin .. x_end - 1 of rows y_begin .. y_end - 1: a part of
// an image the CPU engine computes on its own.
struct Tile {
  int x_begin, x_end, y_begin, y_end;
};

// The threads the CPU kernels may use for the current call (CpuThreads).
int cpu_threads();

// Calls fn(0) .. fn(units - 1), spread over up to `threads` threads (the
// caller's one of them); the first exception is rethrown after all finish.
void run_parallel(int units, int threads, const std::function<void(int)>& fn);

}  // namespace fi
