// The engine for x86-64-v4 (AVX-512): vectors of 16 floats. `#pragma GCC
// target` applies to every function defined after it, the engine's
// templates and lambdas included.
#include "cpu_engine_prelude.h"

#pragma GCC target("arch=x86-64-v4")
#define FI_ENGINE v4
#define FI_LANES 16
#include "cpu_engine.h"
