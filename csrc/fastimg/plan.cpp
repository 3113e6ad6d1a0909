#include "plan.h"

#include <atomic>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

namespace fi {
namespace {

// What a plan depends on: the operation, its sizes and its parameter (the
// filter, or sigma's bits).
using Key = std::tuple<int, int, int, int, int, uint64_t>;
enum Kind { kResize, kBlur, kExactBlur };

size_t bytes_of(const Plan& p) {
  size_t n = sizeof p;
  for (const Stage& s : p.stages)
    for (const Pass* q : {&s.horizontal, &s.vertical})
      n += q->start.size() * sizeof(int) + q->weights.size() * sizeof(float);
  return n;
}

class PlanCache {
 public:
  template <class Build>
  PlanPtr get(const Key& key, Build build) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto it = index_.find(key);
      if (it != index_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);
        return it->second->second;
      }
    }
    PlanPtr made = make_plan(build());  // built outside the lock
    const size_t bytes = bytes_of(*made);
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = index_.find(key);
    if (it != index_.end()) return it->second->second;  // another thread was first
    if (bytes > kMaxBytes) return made;                 // used once, not kept
    lru_.emplace_front(key, made);
    index_.emplace(key, lru_.begin());
    bytes_ += bytes;
    while (lru_.size() > kEntries || bytes_ > kMaxBytes) {
      bytes_ -= bytes_of(*lru_.back().second);
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
    return made;
  }

 private:
  // A few dozen geometries in use at once; a plan of a 12 MP photo is
  // 0.2-1 MB, and one of an extreme size is never worth keeping.
  static constexpr size_t kEntries = 64;
  static constexpr size_t kMaxBytes = size_t{64} << 20;

  using Entry = std::pair<Key, PlanPtr>;
  std::mutex mutex_;
  std::list<Entry> lru_;  // most recently used first
  std::map<Key, std::list<Entry>::iterator> index_;
  size_t bytes_ = 0;
};

// Never destroyed: plans may still be held by threads that outlive main.
PlanCache& cache() {
  static PlanCache* c = new PlanCache;
  return *c;
}

}  // namespace

PlanPtr make_plan(std::vector<Stage> stages) {
  static std::atomic<uint64_t> next_id{1};
  auto p = std::make_shared<Plan>();
  p->stages = std::move(stages);
  p->id = next_id++;
  return p;
}

PlanPtr resize_plan(int in_w, int in_h, int out_w, int out_h, Filter filter) {
  const Key key{kResize, in_w, in_h, out_w, out_h, static_cast<uint64_t>(filter)};
  return cache().get(key, [&] {
    return std::vector<Stage>{{resize_pass(in_w, out_w, filter), resize_pass(in_h, out_h, filter)}};
  });
}

PlanPtr blur_plan(int w, int h, double sigma, bool coarse) {
  uint64_t bits = 0;
  std::memcpy(&bits, &sigma, sizeof bits);
  const Key key{coarse ? kBlur : kExactBlur, w, h, w, h, bits};
  return cache().get(key, [&] { return gaussian_stages(w, h, sigma, coarse); });
}

}  // namespace fi
