// What the CPU sources share; not part of the kernels' interface.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "cpu.h"

// One build runs well everywhere: on x86-64 with GCC the engine is compiled
// for x86-64-v4 (AVX-512) and x86-64-v3 (AVX2 and FMA) besides the baseline
// (CMake's FASTIMG_CPU_TARGETS, which defines FI_ENGINE_V4 and FI_ENGINE_V3),
// and cpu_target() picks the best the CPU supports.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FI_X86_TARGETS 1
#endif

#if defined(__GNUC__)
#define FI_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define FI_ALWAYS_INLINE inline
#endif
// A lambda's body inlined where it is called; not at -O0 (the instrumented
// build), where it would only make the engines' functions slower to compile.
#if defined(__GNUC__) && defined(__OPTIMIZE__)
#define FI_INLINE_LAMBDA __attribute__((always_inline))
#else
#define FI_INLINE_LAMBDA
#endif

namespace fi {

// Output pixels x_begin .. x_end - 1 of rows y_begin .. y_end - 1: a part of
// an image the CPU engine computes on its own.
struct Tile {
  int x_begin, x_end, y_begin, y_end;
};

// The sweeps of one call (Sweep, passes.h), each built once and shared by
// the tiles and threads that need it.
class Sweeps {
 public:
  const Sweep& get(const Pass& p, int out_begin, int out_end, int max_slots);

 private:
  std::mutex mutex_;
  std::map<std::tuple<const Pass*, int, int, int>, std::unique_ptr<Sweep>> made_;
};

// The threads the CPU kernels may use for the current call (CpuThreads).
int cpu_threads();

// Calls fn(0) .. fn(units - 1), spread over up to `threads` threads (the
// caller's one of them); the first exception is rethrown after all finish.
void run_parallel(int units, int threads, const std::function<void(int)>& fn);

// The engine (cpu_engine.h) for each instruction set: the stages of
// cpu_separable over one tile, on T: uint8_t for 8-bit images, float for
// premultiplied floats.
#define FI_DECLARE_ENGINE(name)                                                                  \
  namespace name {                                                                               \
  template <class T>                                                                             \
  void separable(const T* src, Dims in, T* dst, const std::vector<Stage>& stages, const Tile& t, \
                 Sweeps& sweeps);                                                                \
  }
FI_DECLARE_ENGINE(v4)
FI_DECLARE_ENGINE(v3)
FI_DECLARE_ENGINE(baseline)
#undef FI_DECLARE_ENGINE

}  // namespace fi
