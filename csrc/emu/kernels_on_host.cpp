// The CUDA kernels and their host code, compiled for the host against the
// emulated runtime (cuda_emu.h), unchanged.
#include "fastimg/cuda.cu"
