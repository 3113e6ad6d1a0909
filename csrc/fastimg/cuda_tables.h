// The tables the kernels read, on the device: per plan, the bands and strips
// of its passes (built once per plan, uploaded in one copy); per quantisation,
// its byte table.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "pixel.h"
#include "plan.h"

namespace fi {

// Outputs per vertical band (the rows a block finishes at a time) and per
// horizontal band (the pixels one thread computes along a row). Five, an odd
// number, puts the 8 rows x 4 bands a warp reads from shared memory on 32
// different banks for 1 and 3 channels (docs/kernels.md).
constexpr int kBandRows = 8;
constexpr int kBandPixels = 5;
// Weights per input of a band: the band's outputs padded to two float4s.
constexpr int kBandLanes = 8;

// A pass cut into bands of consecutive outputs: band g computes outputs
// [g * n, g * n + n) (n = kBandRows or kBandPixels) from the inputs
// [first[g], first[g] + length[g]); the weight of output g * n + p at input
// first[g] + u is weights[(g * height + u) * kBandLanes + p], zero where the
// output's window does not reach.
struct Bands {
  int count = 0;
  int height = 0;  // the longest band
  const int* first = nullptr;
  const int* length = nullptr;
  const float* weights = nullptr;
};

// The vertical pass of a shrink, as a ring of kRingSlots sums per element:
// each input row is read once per block and added to every output whose
// window holds it. Row y goes to outputs base[y] .. base[y] + kRingSlots - 1
// with weights[y * kRingSlots + j]; after it, emits[y] outputs (from base[y])
// are complete. Only for passes whose windows start in order and never hold
// a row that more than kRingSlots outputs share (weights == null otherwise).
constexpr int kRingSlots = 8;
struct Ring {
  const float* weights = nullptr;
  const int* base = nullptr;
  const int* emits = nullptr;
};

// The strips of output columns a stage's blocks work on, for one channel
// count: strip s has output pixels [s * width, s * width + width) and reads
// input pixels [px0[s], px1[s]). `elements`: the most input elements (pixel
// channels) a strip reads, rounded up to 4. width == 0: no strip fits in a
// block's shared memory (an extreme shrink), and the stage runs as two passes
// through device memory instead. ring: the vertical pass runs as a Ring (each
// thread keeps the sums of its 4 elements, so a strip has at most
// 4 * kThreads elements).
struct Strips {
  int width = 0;
  int count = 0;
  int elements = 0;
  bool ring = false;
  const int* px0 = nullptr;
  const int* px1 = nullptr;
};

// The shared memory a stage's block uses for strips of `width` output pixels
// reading `elements` input elements: kBandRows rows of the vertical pass's
// results (vertical_pitch floats apart) and kBandRows rows of its outputs.
FI_HD int vertical_pitch(int elements) {
  // Rows 4 floats apart modulo the 32 banks: the kBandRows rows that a warp's
  // threads read at one column fall on different banks.
  return elements + ((4 - elements) % 32 + 32) % 32;
}
size_t stage_shared_bytes(int elements, int width, int channels);

struct DeviceStage {
  Bands vertical, horizontal;
  Ring ring;
  Strips strips[5];  // by channel count: 1, 3 and 4
  // The two-pass form (only when some channel count has no strips): the
  // horizontal pass's weights tap-major, the vertical pass's output-major.
  PassView horizontal_pass{}, vertical_pass{};
};

struct DevicePlan {
  std::shared_ptr<uint8_t> memory;  // every table of the plan, one allocation
  std::vector<DeviceStage> stages;
};

// The tables of `plan`, uploaded at the first call of its geometry. Users hold
// them until their stream has synchronised, so whoever drops them last frees
// memory no kernel still reads.
std::shared_ptr<const DevicePlan> device_tables(const PlanPtr& plan);

// What quantize_value gives each 8-bit value: 256 bytes, or with dithering
// 64 x 256, one row per position in the 8x8 Bayer matrix (y % 8 * 8 + x % 8).
std::shared_ptr<const uint8_t> quantize_table(int levels, bool dither);

}  // namespace fi
