#!/usr/bin/env bash
# The one GPU check, for a fresh GPU machine with no network (an H200: sm_90):
#   1. build for sm_90 only, with the preinstalled build tools;
#   2. check that the CUDA backend is in use (the start-up probe ran a kernel);
#   3. run the CUDA tests (every kernel against the CPU backend);
#   4. bench/gpu_bench.py: each operation per call and its kernels alone
#      (device time), against the device's copy bandwidth; upload, download;
#   5. bench/stages.py: the 12 MP job stage by stage, and 1..16 jobs at once;
# then prints a short summary. Each step runs under `timeout`, so that one
# hang cannot take the whole run; the whole is about 4 minutes. Logs go to
# $OUT when it is set (else build/gpu-check/logs). Uses the preinstalled
# numpy, pillow, pybind11, scikit-build-core, cmake, pytest and torch;
# downloads nothing. Usage: bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
logs=${OUT:-$repo/build/gpu-check/logs}
mkdir -p "$logs"
summary=$logs/summary.txt
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

# step NAME SECONDS COMMAND...: runs it under timeout, its output to NAME.log
# and to the terminal; records how it ended.
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
  local rc=${PIPESTATUS[0]}
  local how=ok
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && how="TIMED OUT after ${limit}s"
  [ "$rc" -ne 0 ] && [ "$how" = ok ] && how="FAILED (exit $rc)"
  say "$(printf '%-8s %-28s %5ss' "$how" "$name" $((SECONDS - t0)))"
  return "$rc"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/gpu.txt"

# Every core for the build (make or ninja), and nvcc's --threads within each file.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
step build 150 python3 -m pip install -v --no-build-isolation --no-deps . \
  -Ccmake.define.FASTIMG_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
  -Cbuild-dir=build/gpu-check/cmake || { cat "$summary"; exit 1; }

cd /tmp || exit 1 # import the installed package, not the source tree
step backend 30 python3 -c '
import sys, fastimg
info = fastimg.backends()
print(info.describe())
sys.exit(info.default != "cuda")' || { cat "$summary"; exit 1; }

step cuda-tests 150 python3 -m pytest "$repo/tests/test_kernels_cuda.py" -q -p no:cacheprovider
step gpu-bench 90 python3 "$repo/bench/gpu_bench.py" --table "$logs/gpu_bench_table.txt"
step stages 90 python3 "$repo/bench/stages.py" --reps 4 --threads "1,2,4,8,$(nproc)"

echo
echo "== summary ($logs)"
cat "$logs/gpu.txt"
cat "$summary"
grep -E "passed|failed|error" "$logs/cuda-tests.log" | tail -1
[ -f "$logs/gpu_bench_table.txt" ] && cat "$logs/gpu_bench_table.txt"
tail -n 22 "$logs/stages.log"
