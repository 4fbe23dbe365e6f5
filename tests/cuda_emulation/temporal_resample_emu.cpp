// The CUDA resampling kernels (csrc/cuda/temporal_resample.cu), compiled for the CPU emulator (see
// cuda_emulation.h).
#include "temporal_resample.cu"
