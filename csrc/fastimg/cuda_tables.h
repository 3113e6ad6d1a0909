// The weight tables of the plans in use, on the device.
#pragma once

#include <memory>
#include <vector>

#include "plan.h"

namespace fi {

// Weights in the order the kernels read them: output-major as the host builds
// them (vertical pass: a warp shares one output row), or tap-major (tap k of
// output x at k * n_out + x: the threads of a warp compute neighbouring
// outputs x, so their reads of one tap are contiguous).
enum class Layout : char { OutputMajor, TapMajor };

// A pass's weight tables on the device; the view points there.
struct DevicePass {
  std::shared_ptr<int> start;
  std::shared_ptr<float> weights;
  PassView view;

  DevicePass(const Pass& p, Layout layout);
};

// A plan's tables: per stage, the horizontal pass tap-major and the vertical
// pass output-major.
struct DevicePlan {
  std::vector<DevicePass> passes;

  explicit DevicePlan(const Plan& p);
};

// The tables of `plan`, uploaded at the first call of its geometry. Users hold
// them until their stream has synchronised, so whoever drops them last frees
// memory no kernel still reads.
std::shared_ptr<const DevicePlan> device_tables(const PlanPtr& plan);

}  // namespace fi
