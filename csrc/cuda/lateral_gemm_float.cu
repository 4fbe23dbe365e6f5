// The float instantiation of the lateral GEMM (see lateral_gemm.cuh): its own translation unit, so
// that nvcc compiles each dtype's kernels in parallel.
#include "lateral_gemm.cuh"

namespace slowfast_fast {
namespace cuda {

template void launch_lateral_gemm<float>(const LateralGemmParams<float>&, bool, bool);

}  // namespace cuda
}  // namespace slowfast_fast
