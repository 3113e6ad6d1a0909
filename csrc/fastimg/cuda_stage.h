// A separable stage as one kernel (cuda_stage_kernel.h), launched from here
// for each channel count and pixel type: the 8-bit input's instances are
// compiled in cuda_stage_u8.cu and the float input's in cuda_stage_f32.cu, in
// parallel.
#pragma once

#include <cstddef>

#include "cuda_tables.h"

namespace fi {

// Where a stage reads and writes: 8-bit images are packed rows, float
// intermediates have rows `pitch` floats apart (a multiple of 4, for float4).
struct StageGeometry {
  int out_w, out_h;
  size_t src_pitch, dst_pitch;  // elements per row
  int bands_per_block;          // of the vertical pass
};

// The stage on `blocks` blocks, on this thread's stream: block b takes strip
// b % strips and the vertical bands [b / strips * bands_per_block, ...).
template <int C, class In, class Out>
void launch_stage(const In* src, Out* dst, const StageGeometry& g, const DeviceStage& t,
                  int blocks);

}  // namespace fi
