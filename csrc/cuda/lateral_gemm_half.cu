// The half instantiation of the lateral GEMM (see lateral_gemm.cuh): its own translation unit, so
// that nvcc compiles each dtype's kernels in parallel.
#include "lateral_gemm.cuh"

namespace slowfast_fast {
namespace cuda {

template void launch_lateral_gemm<c10::Half>(const LateralGemmParams<c10::Half>&, bool, bool);

}  // namespace cuda
}  // namespace slowfast_fast
