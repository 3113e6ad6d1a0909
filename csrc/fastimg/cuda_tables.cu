#include <list>
#include <mutex>

#include "cuda_memory.h"
#include "cuda_tables.h"

namespace fi {

DevicePass::DevicePass(const Pass& p, Layout layout)
    : start(device_array<int>(p.start.size())), weights(device_array<float>(p.weights.size())) {
  std::vector<float> transposed;
  if (layout == Layout::TapMajor) {
    transposed.resize(p.weights.size());
    for (int x = 0; x < p.n_out; ++x)
      for (int k = 0; k < p.taps; ++k)
        transposed[static_cast<size_t>(k) * p.n_out + x] =
            p.weights[static_cast<size_t>(x) * p.taps + k];
  }
  const std::vector<float>& w = layout == Layout::TapMajor ? transposed : p.weights;
  FI_CUDA_CHECK(cudaMemcpyAsync(start.get(), p.start.data(), p.start.size() * sizeof(int),
                                cudaMemcpyHostToDevice, kStream));
  FI_CUDA_CHECK(cudaMemcpyAsync(weights.get(), w.data(), w.size() * sizeof(float),
                                cudaMemcpyHostToDevice, kStream));
  // Complete before any thread's stream may read them from the cache.
  FI_CUDA_CHECK(cudaStreamSynchronize(kStream));
  view = {p.n_in, p.n_out, p.taps, start.get(), weights.get()};
}

DevicePlan::DevicePlan(const Plan& p) {
  passes.reserve(2 * p.stages.size());
  for (const Stage& s : p.stages) {
    passes.emplace_back(s.horizontal, Layout::TapMajor);
    passes.emplace_back(s.vertical, Layout::OutputMajor);
  }
}

namespace {

// Device tables of the plans in use, keyed by the plan's id: calls of one
// geometry share one host plan (plan.h), so they upload its tables once.
class PlanTables {
 public:
  std::shared_ptr<const DevicePlan> get(const PlanPtr& plan) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (auto found = find(plan->id)) return found;
    }
    auto made = std::make_shared<const DevicePlan>(*plan);  // uploaded outside the lock
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

std::shared_ptr<const DevicePlan> device_tables(const PlanPtr& plan) {
  // Never destroyed: its device memory must not be freed after the runtime is.
  static PlanTables* tables = new PlanTables;
  return tables->get(plan);
}

}  // namespace fi
