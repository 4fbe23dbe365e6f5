// The CUDA forward and grad_input (csrc/cuda/lateral_concat.cu) and every dtype's lateral GEMM,
// compiled for the CPU emulator (see cuda_emulation.h).
#include "lateral_concat.cu"
#include "lateral_gemm_bfloat16.cu"
#include "lateral_gemm_double.cu"
#include "lateral_gemm_float.cu"
#include "lateral_gemm_half.cu"
