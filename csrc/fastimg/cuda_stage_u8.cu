// The stage kernels for 8-bit input: the first stage of every operation.
#include "cuda_stage_kernel.h"

namespace fi {

template void launch_stage<1, uint8_t, uint8_t>(const uint8_t*, uint8_t*, const StageGeometry&,
                                                const DeviceStage&, int);
template void launch_stage<1, uint8_t, float>(const uint8_t*, float*, const StageGeometry&,
                                              const DeviceStage&, int);
template void launch_stage<3, uint8_t, uint8_t>(const uint8_t*, uint8_t*, const StageGeometry&,
                                                const DeviceStage&, int);
template void launch_stage<3, uint8_t, float>(const uint8_t*, float*, const StageGeometry&,
                                              const DeviceStage&, int);
template void launch_stage<4, uint8_t, uint8_t>(const uint8_t*, uint8_t*, const StageGeometry&,
                                                const DeviceStage&, int);
template void launch_stage<4, uint8_t, float>(const uint8_t*, float*, const StageGeometry&,
                                              const DeviceStage&, int);

}  // namespace fi
