// A register-blocked SIMD micro-kernel for the lateral conv of lateral_concat's forward, in fp32
// arithmetic, one output frame at a time (see lateral_simd.cpp for how it is blocked and why).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <vector>

namespace slowfast_fast::cpu {

// One lateral conv, its inputs already widened to fp32 and dense.
struct LateralSimdProblem {
  const float* x_fast;  // (N, C_fast, T_fast, H, W), NCDHW or channels_last_3d
  bool channels_last;   // layout of x_fast and of the output (the kernel needs them alike)
  const float* weight;  // (C_lat, C_fast, k) contiguous
  const float* alpha;   // (C_lat,): multiplies the conv output (1 when there is no scale)
  const float* beta;    // (C_lat,): added after (0 when there is no shift)
  bool relu;
  int64_t c_fast, t_fast, c_lat, t_slow, hw, k, stride, padding;
  int64_t c_total, c_slow;  // output channels; the lateral ones start at c_slow
};

// Computes the lateral channels of output frames with the widest vector unit this CPU has (AVX2
// or AVX-512; the environment variable ATEN_CPU_CAPABILITY=avx2 or =default lowers it).
class LateralSimd {
 public:
  // Whether a kernel exists for this CPU and problem; when not, callers take the BLAS path.
  static bool supported(const LateralSimdProblem& p);

  // Packs the weight once (rows (kt, c), C_lat floats each). `p` must be supported and its
  // pointers must outlive this object.
  explicit LateralSimd(const LateralSimdProblem& p);

  // Writes the lateral channels of output frame t of sample n into `out`, the whole output tensor
  // (N, C_total, T_slow, H, W) in the problem's layout. Thread-safe for distinct (n, t).
  void frame(int64_t n, int64_t t, float* out) const;
  void frame(int64_t n, int64_t t, c10::BFloat16* out) const;
  void frame(int64_t n, int64_t t, c10::Half* out) const;

 private:
  LateralSimdProblem p_;
  std::vector<float> packed_;  // (k*C_fast) x C_lat, rows ordered (kt, c)
  int lanes_;                  // floats per vector register: 8 (AVX2) or 16 (AVX-512)
};

}  // namespace slowfast_fast::cpu
