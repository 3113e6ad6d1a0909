// The kernels, each behind the host function that launches it on this
// thread's stream. Pointers are device memory; nothing here synchronises.
#pragma once

#include <cstdint>

#include "cuda_tables.h"
#include "dims.h"

namespace fi {

// The plan's stages from src (pixels of in.type, `in`) into dst (the same
// type, the last stage's size). The caller holds `tables` until its stream has synchronised; the
// intermediates are freed on the stream, after the kernels that use them.
void run_separable(const void* src, Dims in, void* dst, const Plan& plan, const DevicePlan& tables);
void run_quantize(const void* src, Dims d, void* dst, int levels, bool dither);
// Writes probe_value(i) for i in [0, n) into out.
void run_probe(uint8_t* out, int n);
uint8_t probe_value(int i);

}  // namespace fi
