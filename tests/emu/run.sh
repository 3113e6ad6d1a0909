#!/usr/bin/env bash
# The CUDA source executed without a GPU: builds fastimg with FASTIMG_CUDA=EMU
# (csrc/emu: grid-stride kernels thread by thread, kernels with shared memory
# and barriers as fibers per block) under AddressSanitizer and UBSan, into its
# own build and target directories, then runs the CUDA tests and the
# emulation's own tests (out-of-memory at every allocation, sticky errors, no
# kernel image) on a grid sized for 132 SMs and on a one-SM grid, the two at
# once. Uses the python on PATH, which needs the test extras (.ci/run calls
# this inside its venv). docs/kernels.md says what it checks.
set -euo pipefail
cd "$(dirname "$0")/../.."

build=build/cuda-emu
target="$build/pkg"
rm -rf "$target"
# The CPU engine is instrumented only for the x86-64 level this machine runs,
# the one the CUDA tests compare with (the others could not run here), which
# keeps the instrumented build short. Without an installed fastimg to ask, every level.
levels=$(python -c 'import fastimg; t = fastimg.backends().cpu_target; print("" if t == "baseline" else t)' \
  2>/dev/null) || levels="x86-64-v4;x86-64-v3"
# Not stripped: ASan's and UBSan's reports name functions and lines.
python -m pip install -q --no-deps --target "$target" . -Cbuild-dir="$build/cmake" \
  -Cinstall.strip=false -Ccmake.define.FASTIMG_CUDA=EMU -Ccmake.define.FASTIMG_SANITIZE=ON \
  -Ccmake.define.FASTIMG_CPU_TARGETS="$levels"

# The extension is instrumented but python is not: the ASan runtime must be
# loaded first, and libstdc++ with it, or ASan cannot intercept C++ throws
# (python itself does not link libstdc++). Leaks are not checked (the
# interpreter keeps memory at exit). One BLAS thread: the two runs share the
# cores.
libasan=$("${CXX:-c++}" -print-file-name=libasan.so)
libstdcxx=$("${CXX:-c++}" -print-file-name=libstdc++.so)
[ -f "$libasan" ] && [ -f "$libstdcxx" ] || { echo "libasan or libstdc++ not found" >&2; exit 1; }
run() {
  env PYTHONPATH="$target" LD_PRELOAD="$libasan $libstdcxx" OPENBLAS_NUM_THREADS=1 \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$@"
}
run python - <<'PY'
import fastimg
assert "libasan" in open("/proc/self/maps").read(), "ASan runtime not loaded"
info = fastimg.backends()
assert info.default == "cuda" and "emulation" in info.cuda_device, info
print("CUDA emulation:", info.describe(), "from", fastimg.__file__)
PY
# --capture=sys: sanitizer reports go to file descriptor 2, which pytest's
# default capture would take with it when ASan aborts the process.
tests=(tests/test_kernels_cuda.py tests/test_kernels_device.py tests/test_kernels_dtypes_cuda.py tests/test_cuda_emu.py -q -p no:cacheprovider --capture=sys)
run python -m pytest "${tests[@]}" >"$build/132-sms.log" 2>&1 &
many=$!
run env FASTIMG_EMU_SMS=1 python -m pytest "${tests[@]}" >"$build/1-sm.log" 2>&1 &
one=$!
status=0
wait "$many" || status=1
wait "$one" || status=1
echo "== a grid sized for 132 SMs"
cat "$build/132-sms.log"
echo "== a one-SM grid"
cat "$build/1-sm.log"
exit "$status"
