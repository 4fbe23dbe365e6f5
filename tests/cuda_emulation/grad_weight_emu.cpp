// The CUDA grad_weight (csrc/cuda/lateral_concat_grad_weight.cu and every dtype's kernels), compiled
// for the CPU emulator (see cuda_emulation.h).
#include "lateral_concat_grad_weight.cu"
#include "grad_weight_bfloat16.cu"
#include "grad_weight_double.cu"
#include "grad_weight_float.cu"
#include "grad_weight_half.cu"
