#include <algorithm>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <utility>

#include "cuda_memory.h"
#include "cuda_tables.h"

namespace fi {
namespace {

// Host arrays laid out for one upload; offsets become device pointers after.
class Blob {
 public:
  template <class T>
  size_t add(const std::vector<T>& v) {
    const size_t at = (bytes_.size() + 15) / 16 * 16;  // float4 reads need 16-byte alignment
    bytes_.resize(at + v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(bytes_.data() + at, v.data(), v.size() * sizeof(T));
    return at;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

struct HostBands {
  int height = 0;
  std::vector<int> first, length;
  std::vector<float> weights;
};

HostBands make_bands(const Pass& p, int n) {
  HostBands b;
  const int count = (p.n_out + n - 1) / n;
  b.first.resize(count);
  b.length.resize(count);
  for (int g = 0; g < count; ++g) {
    int lo = p.n_in, hi = 0;
    for (int o = g * n; o < std::min(p.n_out, g * n + n); ++o) {
      lo = std::min(lo, p.start[o]);
      hi = std::max(hi, p.start[o] + p.taps);
    }
    b.first[g] = lo;
    b.length[g] = hi - lo;
    b.height = std::max(b.height, hi - lo);
  }
  b.weights.assign(static_cast<size_t>(count) * b.height * kBandLanes, 0.0f);
  for (int g = 0; g < count; ++g)
    for (int o = g * n; o < std::min(p.n_out, g * n + n); ++o)
      for (int k = 0; k < p.taps; ++k) {
        const int u = p.start[o] + k - b.first[g];
        b.weights[(static_cast<size_t>(g) * b.height + u) * kBandLanes + (o - g * n)] =
            p.weights[static_cast<size_t>(o) * p.taps + k];
      }
  return b;
}

struct HostStrips {
  int width = 0, elements = 0;
  bool ring = false;
  std::vector<int> px0, px1;
};

struct HostRing {
  std::vector<float> weights;
  std::vector<int> base, emits;
};

// The ring form of a vertical pass (Ring), or nothing when its windows do not
// start and end in order or some row is in more than kRingSlots of them. A
// window is the range of its nonzero weights: the plan's windows all have
// the pass's longest length, so near an edge, where they are clipped, several
// would start together at the first row and hold rows their weights skip.
HostRing make_ring(const Pass& p) {
  std::vector<int> first(p.n_out), end(p.n_out);
  for (int o = 0; o < p.n_out; ++o) {
    const float* w = p.weights.data() + static_cast<size_t>(o) * p.taps;
    int a = 0, b = p.taps;
    while (a < b - 1 && w[a] == 0.0f) ++a;
    while (b > a + 1 && w[b - 1] == 0.0f) --b;
    first[o] = p.start[o] + a;
    end[o] = p.start[o] + b;
    if (o > 0 && (first[o] < first[o - 1] || end[o] < end[o - 1])) return {};
  }
  HostRing r;
  r.base.resize(p.n_in);
  r.emits.resize(p.n_in);
  // base[y]: the first output whose window ends after row y.
  for (int y = 0, o = 0; y < p.n_in; ++y) {
    while (o < p.n_out && end[o] <= y) ++o;
    r.base[y] = o;
  }
  for (int y = 0; y < p.n_in; ++y)
    r.emits[y] = (y + 1 < p.n_in ? r.base[y + 1] : p.n_out) - r.base[y];
  r.weights.assign(static_cast<size_t>(p.n_in) * kRingSlots, 0.0f);
  for (int o = 0; o < p.n_out; ++o)
    for (int y = first[o]; y < end[o]; ++y) {
      const int slot = o - r.base[y];
      if (slot >= kRingSlots) return {};
      r.weights[static_cast<size_t>(y) * kRingSlots + slot] =
          p.weights[static_cast<size_t>(o) * p.taps + (y - p.start[o])];
    }
  return r;
}

// The strips of `bands_per_strip` horizontal bands each.
HostStrips make_strips(const HostBands& h, int n_out, int bands_per_strip, int channels) {
  HostStrips s;
  s.width = bands_per_strip * kBandPixels;
  const int bands = static_cast<int>(h.first.size());
  const int count = (n_out + s.width - 1) / s.width;
  for (int i = 0; i < count; ++i) {
    int lo = INT32_MAX, hi = 0;
    for (int g = i * bands_per_strip; g < std::min(bands, (i + 1) * bands_per_strip); ++g) {
      lo = std::min(lo, h.first[g]);
      hi = std::max(hi, h.first[g] + h.length[g]);
    }
    s.px0.push_back(lo);
    s.px1.push_back(hi);
    const int e0 = lo * channels / 4 * 4;
    s.elements = std::max(s.elements, (hi * channels - e0 + 3) / 4 * 4);
  }
  return s;
}

size_t shared_bytes(const HostStrips& s, int channels) {
  return stage_shared_bytes(s.elements, s.width, channels);
}

// The widest strips whose block fits in the default 48 KB of shared memory;
// else the narrowest, if it fits in what the device allows a block to opt
// into; else none (width 0).
HostStrips choose_strips(const HostBands& h, int n_out, int channels, size_t optin) {
  constexpr size_t kDefault = 48 << 10;
  const int bands = static_cast<int>(h.first.size());
  int lo = 1, hi = bands;  // the largest count of bands per strip that fits kDefault
  if (shared_bytes(make_strips(h, n_out, 1, channels), channels) > kDefault) {
    HostStrips one = make_strips(h, n_out, 1, channels);
    return shared_bytes(one, channels) <= optin ? one : HostStrips{};
  }
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (shared_bytes(make_strips(h, n_out, mid, channels), channels) <= kDefault)
      lo = mid;
    else
      hi = mid - 1;
  }
  return make_strips(h, n_out, lo, channels);
}

// For a ring: the widest strips that fit kDefault with at most 4 * kThreads
// elements, ring set; else choose_strips's.
HostStrips choose_ring_strips(const HostBands& h, int n_out, int channels, size_t optin) {
  constexpr int kMost = 4 * kThreads;
  HostStrips best = choose_strips(h, n_out, channels, optin);
  if (best.width == 0 || best.elements <= kMost) {
    best.ring = best.width > 0 && best.elements <= kMost;
    return best;
  }
  int lo = 1, hi = best.width / kBandPixels;
  if (make_strips(h, n_out, 1, channels).elements > kMost) return best;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (make_strips(h, n_out, mid, channels).elements <= kMost)
      lo = mid;
    else
      hi = mid - 1;
  }
  HostStrips s = make_strips(h, n_out, lo, channels);
  s.ring = true;
  return s;
}

// The two-pass form's tables (cuda_kernels.cu): tap-major weights for the
// horizontal pass, whose threads compute neighbouring outputs of one row.
std::vector<float> tap_major(const Pass& p) {
  std::vector<float> t(p.weights.size());
  for (int x = 0; x < p.n_out; ++x)
    for (int k = 0; k < p.taps; ++k)
      t[static_cast<size_t>(k) * p.n_out + x] = p.weights[static_cast<size_t>(x) * p.taps + k];
  return t;
}

int shared_memory_optin() {
  static const int bytes = [] {
    int dev = 0, v = 0;
    FI_CUDA_CHECK(cudaGetDevice(&dev));
    FI_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return v;
  }();
  return bytes;
}

std::shared_ptr<const DevicePlan> upload(const Plan& plan) {
  constexpr int kChannels[] = {1, 3, 4};
  struct Offsets {
    size_t v_first, v_length, v_weights, h_first, h_length, h_weights;
    size_t ring_weights, ring_base, ring_emits;
    size_t px0[5], px1[5];
    size_t h_start, h_weights_tap_major, v_start, v_weights_output_major;
  };
  Blob blob;
  auto made = std::make_shared<DevicePlan>();
  std::vector<Offsets> at(plan.stages.size());
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const Stage& s = plan.stages[i];
    DeviceStage d;
    Offsets& o = at[i];
    const HostBands v = make_bands(s.vertical, kBandRows),
                    h = make_bands(s.horizontal, kBandPixels);
    d.vertical = {static_cast<int>(v.first.size()), v.height};
    d.horizontal = {static_cast<int>(h.first.size()), h.height};
    o.v_first = blob.add(v.first);
    o.v_length = blob.add(v.length);
    o.v_weights = blob.add(v.weights);
    o.h_first = blob.add(h.first);
    o.h_length = blob.add(h.length);
    o.h_weights = blob.add(h.weights);
    // A shrink (more than one input row per output row) of few taps per
    // row runs its vertical pass as a ring: then each row is read once.
    const HostRing ring = s.vertical.n_in > s.vertical.n_out ? make_ring(s.vertical) : HostRing{};
    const bool ringed = !ring.weights.empty();
    o.ring_weights = blob.add(ring.weights);
    o.ring_base = blob.add(ring.base);
    o.ring_emits = blob.add(ring.emits);
    bool two_pass = false;
    for (int c : kChannels) {
      const HostStrips st =
          ringed ? choose_ring_strips(h, s.horizontal.n_out, c, shared_memory_optin())
                 : choose_strips(h, s.horizontal.n_out, c, shared_memory_optin());
      d.strips[c] = {st.width, static_cast<int>(st.px0.size()), st.elements, st.ring};
      o.px0[c] = blob.add(st.px0);
      o.px1[c] = blob.add(st.px1);
      two_pass = two_pass || st.width == 0;
    }
    if (two_pass) {
      d.horizontal_pass = s.horizontal.view();
      d.vertical_pass = s.vertical.view();
      o.h_start = blob.add(s.horizontal.start);
      o.h_weights_tap_major = blob.add(tap_major(s.horizontal));
      o.v_start = blob.add(s.vertical.start);
      o.v_weights_output_major = blob.add(s.vertical.weights);
    }
    made->stages.push_back(d);
  }
  const std::vector<uint8_t>& bytes = blob.bytes();
  made->memory = device_array<uint8_t>(bytes.size());
  uint8_t* base = made->memory.get();
  FI_CUDA_CHECK(cudaMemcpyAsync(base, bytes.data(), bytes.size(), cudaMemcpyHostToDevice, kStream));
  // Complete before any thread's stream may read them from the cache.
  FI_CUDA_CHECK(cudaStreamSynchronize(kStream));
  const auto ints = [base](size_t offset) { return reinterpret_cast<const int*>(base + offset); };
  const auto floats = [base](size_t offset) {
    return reinterpret_cast<const float*>(base + offset);
  };
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    DeviceStage& d = made->stages[i];
    const Offsets& o = at[i];
    d.vertical.first = ints(o.v_first);
    d.vertical.length = ints(o.v_length);
    d.vertical.weights = floats(o.v_weights);
    d.horizontal.first = ints(o.h_first);
    d.horizontal.length = ints(o.h_length);
    d.horizontal.weights = floats(o.h_weights);
    d.ring = {floats(o.ring_weights), ints(o.ring_base), ints(o.ring_emits)};
    for (int c : kChannels) {
      d.strips[c].px0 = ints(o.px0[c]);
      d.strips[c].px1 = ints(o.px1[c]);
    }
    if (d.horizontal_pass.n_out > 0) {
      d.horizontal_pass.start = ints(o.h_start);
      d.horizontal_pass.weights = floats(o.h_weights_tap_major);
      d.vertical_pass.start = ints(o.v_start);
      d.vertical_pass.weights = floats(o.v_weights_output_major);
    }
  }
  return made;
}

// Device tables of the plans in use, keyed by the plan's id: calls of one
// geometry share one host plan (plan.h), so they upload its tables once.
class PlanTables {
 public:
  std::shared_ptr<const DevicePlan> get(const PlanPtr& plan) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (auto found = find(plan->id)) return found;
    }
    auto made = upload(*plan);  // outside the lock
    const std::lock_guard<std::mutex> lock(mutex_);
    if (auto found = find(plan->id)) return found;  // another thread was first
    // A plan no longer held by anyone (evicted from the host's cache, or a
    // chain built for one call) cannot be asked for again: drop its tables.
    lru_.remove_if([](const Entry& e) { return e.plan.expired(); });
    lru_.push_front({plan->id, plan, made});
    if (lru_.size() > kEntries) lru_.pop_back();
    return made;
  }

 private:
  static constexpr size_t kEntries = 64;  // as many as the host keeps

  struct Entry {
    uint64_t id;
    std::weak_ptr<const Plan> plan;
    std::shared_ptr<const DevicePlan> tables;
  };

  // The tables of plan `id`, moved to the front; null if absent. Under mutex_.
  std::shared_ptr<const DevicePlan> find(uint64_t id) {
    for (auto it = lru_.begin(); it != lru_.end(); ++it)
      if (it->id == id) {
        lru_.splice(lru_.begin(), lru_, it);
        return it->tables;
      }
    return nullptr;
  }

  std::mutex mutex_;
  std::list<Entry> lru_;  // most recently used first
};

}  // namespace

size_t stage_shared_bytes(int elements, int width, int channels) {
  return static_cast<size_t>(kBandRows) *
         (vertical_pitch(elements) + static_cast<size_t>(width) * channels) * sizeof(float);
}

std::shared_ptr<const DevicePlan> device_tables(const PlanPtr& plan) {
  // Never destroyed: its device memory must not be freed after the runtime is.
  static PlanTables* tables = new PlanTables;
  return tables->get(plan);
}

std::shared_ptr<const uint8_t> quantize_table(int levels, bool dither) {
  // At most 255 x 2 tables of 16 KB, each made once; never destroyed (as above).
  static std::mutex* mutex = new std::mutex;
  static auto* tables = new std::map<std::pair<int, bool>, std::shared_ptr<const uint8_t>>;
  const std::lock_guard<std::mutex> lock(*mutex);
  auto& t = (*tables)[{levels, dither}];
  if (t) return t;
  const int rows = dither ? 64 : 1;
  std::vector<uint8_t> host(static_cast<size_t>(rows) * 256);
  for (int r = 0; r < rows; ++r)
    for (int v = 0; v < 256; ++v)
      host[r * 256 + v] = quantize_value(v, levels, r % 8, r / 8, dither);
  auto made = device_array<uint8_t>(host.size());
  FI_CUDA_CHECK(
      cudaMemcpyAsync(made.get(), host.data(), host.size(), cudaMemcpyHostToDevice, kStream));
  FI_CUDA_CHECK(cudaStreamSynchronize(kStream));
  t = made;
  return t;
}

}  // namespace fi
