// The half instantiation of lateral_concat_grad_weight's kernels (see grad_weight.cuh): its own
// translation unit, so that nvcc compiles each dtype's kernels in parallel.
#include "grad_weight.cuh"

namespace slowfast_fast {
namespace cuda {

template void grad_weight_impl<c10::Half>(SLOWFAST_FAST_GRAD_WEIGHT_ARGS);

}  // namespace cuda
}  // namespace slowfast_fast
