// Ops that steer and observe the emulator: the thread order within a phase, the multiprocessor count
// the host code reads, counters that show the kernels really ran, and self-test kernels (correct ones
// and ones with the bugs the emulator exists to catch), so that a test shows each check can fail. The
// fused ops' schemas in this namespace are defined from Python (slowfast_fast/ops/_schemas.py) before
// the library is loaded.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "cuda_emulation.h"

namespace {

namespace emu = slowfast_fast::emulation;

constexpr int kThreads = 64;

void configure(int64_t order, int64_t sms, int64_t max_blocks) {
  TORCH_CHECK(order == emu::kForward || order == emu::kReverse || order == emu::kAlternate, "order: 0, 1 or 2");
  TORCH_CHECK(sms >= 1, "sms must be positive");
  TORCH_CHECK(max_blocks >= 0, "max_blocks: 0 (no cap) or positive");
  emu::settings().order = static_cast<int>(order);
  emu::settings().sms = static_cast<int>(sms);
  emu::settings().max_blocks = static_cast<unsigned>(max_blocks);
}

std::vector<int64_t> counters() {
  const auto& s = emu::settings();
  return {s.launches, s.blocks, s.barriers, s.async_copies};
}

// Each thread publishes in[block * kThreads + tid] in shared memory and returns its right neighbour's
// (tid + 1 wrapping within the block), read after a barrier, or, with `barrier` false, without one.
// A template with a grid-stride loop, as the package's kernels are: the poisoning must reach the static
// of every instantiation, in every block and every loop trip.
template <typename T>
__global__ void neighbour_kernel(const T* in, T* out, bool barrier, unsigned tiles) {
  __shared__ T slot[kThreads];
  emu::poison_shared(slot, sizeof(slot));
  for (unsigned tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const unsigned i = tile * kThreads + threadIdx.x;
    slot[threadIdx.x] = in[i];
    if (barrier) __syncthreads();
    out[i] = slot[(threadIdx.x + 1) % kThreads];
    __syncthreads();  // every read before the next trip's writes
  }
}

// The same through cp.async: `wait_first` waits for the copy before the barrier (correct), else only
// after reading (the bug the deferred copies expose); `wait` false never waits.
__global__ void async_neighbour_kernel(const float* in, float* out, bool wait_first, bool wait) {
  __shared__ __align__(16) float slot[kThreads];
  emu::poison_shared(slot, sizeof(slot));
  const unsigned i = blockIdx.x * kThreads + threadIdx.x;
  emu::cp_async(&slot[threadIdx.x], in + i, 4, true);
  emu::cp_async_commit();
  if (wait && wait_first) emu::cp_async_wait(0);
  __syncthreads();
  out[i] = slot[(threadIdx.x + 1) % kThreads];
  if (wait && !wait_first) emu::cp_async_wait(0);
}

// A ring slot refilled by cp.async while another thread may still read its old contents: each thread
// reads its neighbour's slot, then (after a barrier only if `barrier`) refills its own slot from the
// second half of the input. Returns the first read.
__global__ void async_refill_kernel(const float* in, float* out, bool barrier) {
  __shared__ __align__(16) float slot[kThreads];
  emu::poison_shared(slot, sizeof(slot));
  const unsigned i = blockIdx.x * kThreads + threadIdx.x;
  slot[threadIdx.x] = in[i];
  __syncthreads();
  out[i] = slot[(threadIdx.x + 1) % kThreads];
  if (barrier) __syncthreads();
  emu::cp_async(&slot[threadIdx.x], in + gridDim.x * kThreads + i, 4, true);
  emu::cp_async_commit();
  emu::cp_async_wait(0);
}

// A cp.async from an address off its width's alignment (an error on the GPU).
__global__ void misaligned_async_kernel(const float* in, float* out) {
  __shared__ __align__(16) float slot[4 * kThreads];
  emu::poison_shared(slot, sizeof(slot));
  emu::cp_async(&slot[4 * threadIdx.x], in + 4 * threadIdx.x + 1, 16, true);
  emu::cp_async_commit();
  emu::cp_async_wait(0);
  out[threadIdx.x] = slot[4 * threadIdx.x];
}

// Half of the block skips the barrier (undefined behaviour on the GPU).
__global__ void divergent_barrier_kernel(const float* in, float* out) {
  if (threadIdx.x < kThreads / 2) __syncthreads();
  out[threadIdx.x] = in[threadIdx.x];
}

// The sum of each warp's 32 values by shuffles, in lane 0; other lanes keep their partial sums.
__global__ void warp_sum_kernel(const float* in, float* out) {
  const unsigned i = blockIdx.x * kThreads + threadIdx.x;
  float v = in[i];
  for (unsigned d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  out[i] = v;
}

// Out-of-bounds accesses, each one element past (or before) what it may touch: the last thread reads
// past the end of the input, the first before its start, the last thread of a block past the end of a
// __shared__ array, and a cp.async copies from past the end of the input. Only AddressSanitizer sees
// them (selftest refuses them in the plain build, where they would read neighbouring host memory).
// Thread i reads in[i + shift].
__global__ void shifted_read_kernel(const float* in, float* out, int shift) {
  const int i = static_cast<int>(blockIdx.x * kThreads + threadIdx.x);
  out[i] = in[i + shift];
}

// A template, as the package's kernels are: its static is a COMDAT (unique) global, which the
// sanitizer must cover too.
template <typename T>
__global__ void shared_past_end_kernel(const T* in, T* out) {
  __shared__ T slot[kThreads];
  emu::poison_shared(slot, sizeof(slot));
  const unsigned i = blockIdx.x * kThreads + threadIdx.x;
  slot[threadIdx.x] = in[i];
  __syncthreads();
  out[i] = slot[threadIdx.x + 1];
}

__global__ void async_past_end_kernel(const float* in, float* out) {
  __shared__ __align__(16) float slot[kThreads];
  emu::poison_shared(slot, sizeof(slot));
  const unsigned i = blockIdx.x * kThreads + threadIdx.x;
  emu::cp_async(&slot[threadIdx.x], in + i + 1, 4, true);
  emu::cp_async_commit();
  emu::cp_async_wait(0);
  out[i] = slot[threadIdx.x];
}

// A 16x16 tile of 2.5 stored by wmma into out's first 256 elements (both warps store the same tile), by
// every lane or, with `half_warp`, by lanes 0-15 only (undefined on the GPU: store_matrix_sync is
// warp-collective).
__global__ void wmma_store_kernel(float* out, bool half_warp) {
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> f;
  nvcuda::wmma::fill_fragment(f, 2.5f);
  if (!half_warp || threadIdx.x % 32 < 16) nvcuda::wmma::store_matrix_sync(out, f, 16, nvcuda::wmma::mem_row_major);
  __syncthreads();
}

bool asan_build() {
#ifdef SLOWFAST_FAST_EMULATION_ASAN
  return true;
#else
  return false;
#endif
}

at::Tensor selftest(const std::string& name, const at::Tensor& in) {
  TORCH_CHECK(in.is_cpu() && in.scalar_type() == at::kFloat && in.is_contiguous() && in.numel() % kThreads == 0 &&
                  in.numel() >= 4 * kThreads + 4,
              "selftest input: contiguous fp32 CPU, a multiple of ", kThreads, " elements, at least ", 4 * kThreads + 4);
  at::Tensor out = at::zeros_like(in);
  const float* x = in.data_ptr<float>();
  float* y = out.data_ptr<float>();
  const unsigned blocks = static_cast<unsigned>(in.numel() / kThreads);
  if (name == "barrier") emu::launch(blocks, kThreads, neighbour_kernel<float>)(x, y, true, blocks);
  else if (name == "missing_barrier") emu::launch(blocks, kThreads, neighbour_kernel<float>)(x, y, false, blocks);
  else if (name == "barrier_two_blocks") emu::launch(2u, kThreads, neighbour_kernel<float>)(x, y, true, blocks);
  else if (name == "missing_barrier_two_blocks")
    emu::launch(2u, kThreads, neighbour_kernel<float>)(x, y, false, blocks);
  else if (name == "async_refill") emu::launch(blocks / 2, kThreads, async_refill_kernel)(x, y, true);
  else if (name == "async_refill_without_barrier")
    emu::launch(blocks / 2, kThreads, async_refill_kernel)(x, y, false);
  else if (name == "async") emu::launch(blocks, kThreads, async_neighbour_kernel)(x, y, true, true);
  else if (name == "async_read_before_wait") emu::launch(blocks, kThreads, async_neighbour_kernel)(x, y, false, true);
  else if (name == "async_never_waited") emu::launch(blocks, kThreads, async_neighbour_kernel)(x, y, false, false);
  else if (name == "async_misaligned") emu::launch(1u, kThreads, misaligned_async_kernel)(x, y);
  else if (name == "divergent_barrier") emu::launch(1u, kThreads, divergent_barrier_kernel)(x, y);
  else if (name == "warp_sum") emu::launch(blocks, kThreads, warp_sum_kernel)(x, y);
  else if (name == "wmma_store") emu::launch(1u, kThreads, wmma_store_kernel)(y, false);
  else if (name == "wmma_store_half_warp") emu::launch(1u, kThreads, wmma_store_kernel)(y, true);
  else if (name.rfind("oob_", 0) == 0) {
    TORCH_CHECK(asan_build(), "selftest ", name, " reads out of bounds: only in the AddressSanitizer build");
    if (name == "oob_global_past_end") emu::launch(blocks, kThreads, shifted_read_kernel)(x, y, 1);
    else if (name == "oob_global_before_start") emu::launch(blocks, kThreads, shifted_read_kernel)(x, y, -1);
    else if (name == "oob_shared_past_end") emu::launch(blocks, kThreads, shared_past_end_kernel<float>)(x, y);
    else if (name == "oob_async_past_end") emu::launch(blocks, kThreads, async_past_end_kernel)(x, y);
    else TORCH_CHECK(false, "no selftest named ", name);
  } else TORCH_CHECK(false, "no selftest named ", name);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(slowfast_fast_cudaemu, m) {
  m.def("emulator_configure(int order, int sms, int max_blocks) -> ()", &configure);
  m.def("emulator_counters() -> int[]", &counters);
  m.def("emulator_selftest(str name, Tensor x) -> Tensor", &selftest);
  m.def("emulator_asan() -> bool", &asan_build);
}
