// What an engine source (cpu_engine_*.cpp) includes before it selects its
// instruction set: the standard library and the intrinsics, compiled as
// baseline code, so that the copies of inline library functions the linker
// keeps never hold another target's instructions.
#pragma once

// pixel.h's formulas take the engines' vectors; GCC warns that passing them
// changes with the target, which never applies: they are always inlined.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12's AVX-512 intrinsics pass an operand left undefined on purpose,
// which -Wmaybe-uninitialized reports at every use in the engine.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu_shared.h"

#ifdef __SSE2__
#include <immintrin.h>
#endif
