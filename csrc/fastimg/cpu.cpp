// The CPU separable kernels: the choice among the engines (cpu_engine.h,
// compiled once per instruction set by cpu_engine_*.cpp), the threads, and
// the tiles they share out.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "cpu_shared.h"

namespace fi {

const char* cpu_target() {
  // The best the CPU supports, at most what FASTIMG_CPU_TARGET names: for a
  // CPU that lowers its clock under AVX-512, and to test every engine on one
  // machine. Read once.
  static const char* target = [] {
    const char* cap = std::getenv("FASTIMG_CPU_TARGET");
    const std::string want = cap != nullptr ? cap : "";
#ifdef FI_ENGINE_V4
    if (want != "baseline" && want != "x86-64-v3" && __builtin_cpu_supports("x86-64-v4"))
      return "x86-64-v4";
#endif
#ifdef FI_ENGINE_V3
    if (want != "baseline" && __builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
#endif
    return "baseline";
  }();
  return target;
}

namespace {

thread_local int threads_for_calls = 1;

}  // namespace

CpuThreads::CpuThreads(int n) : saved_(threads_for_calls) { threads_for_calls = n; }
CpuThreads::~CpuThreads() { threads_for_calls = saved_; }

int cpu_threads() {
  if (threads_for_calls > 0) return threads_for_calls;
  // One per CPU this process may run on (taskset, cgroup cpusets), which is
  // what a pinned benchmark or a container expects.
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

const Sweep& Sweeps::get(const Pass& p, int out_begin, int out_end, int max_slots) {
  const std::lock_guard<std::mutex> hold(mutex_);
  std::unique_ptr<Sweep>& s = made_[{&p, out_begin, out_end, max_slots}];
  if (!s) s = std::make_unique<Sweep>(make_sweep(p.view(), out_begin, out_end, max_slots));
  return *s;
}

void run_parallel(int units, int threads, const std::function<void(int)>& fn) {
  threads = std::max(1, std::min(threads, units));
  std::atomic<int> next{0};
  std::exception_ptr error;
  std::mutex error_lock;
  auto work = [&] {
    for (int i; (i = next++) < units;) try {
        fn(i);
      } catch (...) {
        const std::lock_guard<std::mutex> hold(error_lock);
        if (!error) error = std::current_exception();
      }
  };
  std::vector<std::thread> others;
  for (int t = 1; t < threads; ++t) others.emplace_back(work);
  work();
  for (std::thread& t : others) t.join();
  if (error) std::rethrow_exception(error);
}

namespace {

// Input floats per row of a strip: a strip's rows of the vertical pass, its
// running sums and its transposed chunks stay in L2.
constexpr int kStripFloats = 1536;

// Vertical strips of the output: narrow enough for the cache, but each at
// least 30 horizontal windows wide, as each strip also reads the input
// under the windows of its edge pixels. With threads, each strip is cut
// into as many bands of rows, each at least kBandRows high.
constexpr int kBandRows = 64;

std::vector<Tile> tiles(Dims in, const std::vector<Stage>& stages, int threads) {
  const int w = stages.back().horizontal.n_out, h = stages.back().vertical.n_out;
  if (stages.size() > 2) return {{0, w, 0, h}};  // longer chains are not tiled
  const Pass& first = stages[0].horizontal;
  const int by_cache = (in.w * in.c + kStripFloats - 1) / kStripFloats;
  const int by_windows = std::max(1, in.w / (30 * first.taps));
  const int strips = std::max(1, std::min({by_cache, by_windows, w / 16}));
  const int bands = std::max(1, std::min(threads, h / kBandRows));
  std::vector<Tile> t;
  for (int b = 0; b < bands; ++b)
    for (int i = 0; i < strips; ++i)
      t.push_back({w * i / strips, w * (i + 1) / strips, h * b / bands, h * (b + 1) / bands});
  return t;
}

}  // namespace

namespace {

// The engine for the CPU's target, on 8-bit pixels or premultiplied floats.
template <class T>
void engine_separable(const T* src, Dims in, T* dst, const std::vector<Stage>& stages) {
  typedef void (*Engine)(const T*, Dims, T*, const std::vector<Stage>&, const Tile&, Sweeps&);
  static const std::string target = cpu_target();
  Engine engine = baseline::separable<T>;
#ifdef FI_ENGINE_V4
  if (target == "x86-64-v4") engine = v4::separable<T>;
#endif
#ifdef FI_ENGINE_V3
  if (target == "x86-64-v3") engine = v3::separable<T>;
#endif
  const int threads = cpu_threads();
  const std::vector<Tile> parts = tiles(in, stages, threads);
  Sweeps sweeps;
  run_parallel(static_cast<int>(parts.size()), threads,
               [&](int i) { engine(src, in, dst, stages, parts[i], sweeps); });
}

// fn(y0, y1) over bands of the h rows, on the call's threads.
template <class Fn>
void by_rows(int h, Fn fn) {
  const int threads = cpu_threads(), bands = std::max(1, std::min(threads, h / 64));
  run_parallel(bands, threads, [&](int b) { fn(h * b / bands, h * (b + 1) / bands); });
}

// 16-bit and float images: converted to premultiplied floats (load_px), run
// through the engine from float to float, and written back as Px (store_px).
template <int C, class Px>
void separable_via_floats(const Px* src, Dims in, Px* dst, const std::vector<Stage>& stages) {
  const int out_w = stages.back().horizontal.n_out, out_h = stages.back().vertical.n_out;
  std::vector<float> work_in(static_cast<size_t>(in.h) * in.w * C);
  std::vector<float> work_out(static_cast<size_t>(out_h) * out_w * C);
  by_rows(in.h, [&](int y0, int y1) {
    for (size_t i = static_cast<size_t>(y0) * in.w; i < static_cast<size_t>(y1) * in.w; ++i)
      load_px<C, Px>(src + i * C, &work_in[i * C]);
  });
  engine_separable<float>(work_in.data(), in, work_out.data(), stages);
  by_rows(out_h, [&](int y0, int y1) {
    for (size_t i = static_cast<size_t>(y0) * out_w; i < static_cast<size_t>(y1) * out_w; ++i)
      store_px<C, Px>(&work_out[i * C], dst + i * C);
  });
}

}  // namespace

void cpu_separable(const void* src, Dims in, void* dst, const std::vector<Stage>& stages) {
  with_pixel_type(in.type, [&](auto px) {
    typedef decltype(px) Px;
    const Px* s = static_cast<const Px*>(src);
    Px* d = static_cast<Px*>(dst);
    if constexpr (std::is_same_v<Px, uint8_t>) {
      engine_separable<uint8_t>(s, in, d, stages);
    } else {
      if (in.c == 1) return separable_via_floats<1>(s, in, d, stages);
      if (in.c == 3) return separable_via_floats<3>(s, in, d, stages);
      if (in.c == 4) return separable_via_floats<4>(s, in, d, stages);
      throw std::invalid_argument("channels must be 1, 3 or 4");
    }
  });
}

}  // namespace fi
