// The passes of an operation, built once per geometry. Building them costs a
// sin or exp per tap and a few allocations per output (milliseconds for a
// 12 MP photo), so calls of one geometry (the same photo size to the same
// output) share one Plan, on every backend.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "passes.h"

namespace fi {

struct Plan {
  std::vector<Stage> stages;
  // Never reused within the process: a backend keys what it derives from the
  // plan (the CUDA backend's device tables) by it instead of by the content.
  uint64_t id = 0;
};
using PlanPtr = std::shared_ptr<const Plan>;

// From a cache of the most recently used geometries.
PlanPtr resize_plan(int in_w, int in_h, int out_w, int out_h, Filter filter);
PlanPtr blur_plan(int w, int h, double sigma, bool coarse);
// A plan of the caller's stages, not cached (chains of steps built by hand).
PlanPtr make_plan(std::vector<Stage> stages);

}  // namespace fi
