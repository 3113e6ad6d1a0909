#!/usr/bin/env bash
# The one GPU check, for a fresh GPU machine with no network: build for the
# GPU present, check that the CUDA backend is in use (the start-up probe ran a
# kernel on it), run the CUDA tests (CUDA against CPU), run the GPU benchmark,
# print its table, then the 12 MP job stage by stage and with 1..nproc jobs at
# a time.
# Uses the preinstalled numpy, pillow, pybind11, scikit-build-core, cmake,
# pytest (and torch for the side-by-side); downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
time python3 -m pip install -q --no-build-isolation --no-deps . \
  -Ccmake.define.FASTIMG_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=native -Cbuild-dir=build/gpu-check
cd /tmp  # import the installed package, not the source tree
python3 -m fastimg
python3 -c 'import fastimg, sys; sys.exit(fastimg.backends().default != "cuda")' \
  || { echo "the CUDA backend is not in use" >&2; exit 1; }
python3 -m pytest "$OLDPWD/tests/test_kernels_cuda.py" -q -p no:cacheprovider -x 2>&1 | tail -5
python3 "$OLDPWD/bench/gpu_bench.py"
# The pipeline on the GPU: stages, and jobs at a time up to the CPU count.
python3 "$OLDPWD/bench/stages.py" --reps 8 --threads "1,2,4,8,$(nproc)"
