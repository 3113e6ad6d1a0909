// The engine for x86-64-v3 (AVX2 and FMA): vectors of 8 floats. (One
// 16-float vector type for every target was 15-20x slower on AVX2: GCC keeps
// vectors wider than the target's registers in memory.)
#include "cpu_engine_prelude.h"

#pragma GCC target("arch=x86-64-v3")
#define FI_ENGINE v3
#define FI_LANES 8
#include "cpu_engine.h"
