// The engine for any CPU the compiler targets by default: vectors of 4
// floats.
#include "cpu_engine_prelude.h"

#define FI_ENGINE baseline
#define FI_LANES 4
#include "cpu_engine.h"
