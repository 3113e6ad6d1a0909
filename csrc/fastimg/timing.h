// The device time of the kernels, measured with CUDA events, per host thread
// (bench/gpu_bench.py): when on, every CUDA operation records an event on its
// stream before its first kernel and one after its last, and adds the time
// between them once its stream has synchronised.
#pragma once

namespace fi {

void cuda_time_kernels(bool on);
// Milliseconds added on this thread since the last call; resets them.
double cuda_kernel_ms();

}  // namespace fi
