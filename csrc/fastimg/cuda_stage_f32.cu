// The stage kernels for float input: the later stages of a wide blur or a chain.
#include "cuda_stage_kernel.h"

namespace fi {

template void launch_stage<1, float, uint8_t>(const float*, uint8_t*, const StageGeometry&,
                                              const DeviceStage&, int);
template void launch_stage<1, float, float>(const float*, float*, const StageGeometry&,
                                            const DeviceStage&, int);
template void launch_stage<3, float, uint8_t>(const float*, uint8_t*, const StageGeometry&,
                                              const DeviceStage&, int);
template void launch_stage<3, float, float>(const float*, float*, const StageGeometry&,
                                            const DeviceStage&, int);
template void launch_stage<4, float, uint8_t>(const float*, uint8_t*, const StageGeometry&,
                                              const DeviceStage&, int);
template void launch_stage<4, float, float>(const float*, float*, const StageGeometry&,
                                            const DeviceStage&, int);

}  // namespace fi
