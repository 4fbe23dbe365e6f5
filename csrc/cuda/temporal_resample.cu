// CUDA nearest temporal resampling: temporal_resample, its backward, and pathway_split.
//
// In both memory formats a (N, C, T, H, W) tensor is (outer, T, inner) with each frame's `inner`
// block contiguous: outer = N*C, inner = H*W for NCDHW; outer = N, inner = H*W*C for NDHWC. So
// resampling is copying whole `inner` rows. src(d) is monotone, so the output frames d with
// src(d) == t form a contiguous range, found by binary search. The forward reads each needed input
// row once and writes it to its whole range in up to two outputs (pathway_split: both pathways
// from one read; frames neither needs are never read). The backward, one block per input row and
// chunk, sums that range in fp32 (fp64 for double) in ascending d, and writes zeros where no output
// frame came from t.
#include "cuda_common.cuh"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common.h"

namespace slowfast_fast {
namespace cuda {
namespace {

constexpr int kRowThreads = 128;
constexpr int kRowIlp = 4;
// Eight blocks of kRowThreads per SM (64 registers a thread): with kRowIlp loads in flight per
// thread that is 1024 x 4 accesses per SM, enough to cover DRAM latency in a kernel with no reuse.
constexpr int kRowBlocksPerSm = 8;
constexpr int64_t kRowChunk = kRowThreads * kRowIlp;  // units of one row handled by one block

// First output frame d in [0, t_out) with src(d) >= t (t_out when none).
__device__ __forceinline__ int64_t first_dest(const NearestIndex& idx, int64_t t) {
  int64_t lo = 0, hi = idx.t_out;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (idx(mid) < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

struct RowGeometry {
  int64_t outer;
  int64_t t_in;
  int64_t inner;   // units per row
  int64_t chunks;  // ceil(inner / kRowChunk)
};

// U is the copy unit (uint4, uint2, uint32_t or uint16_t): the widest that divides a row's bytes
// and the alignment of every pointer. out1 == nullptr (idx1.t_out == 0) for a single resample.
//
// Blocks are laid out over output frames ("slots": out0's frames, then out1's) so that a
// downsampling launch has no idle blocks; the block of slot d reads source frame t = src(d) only
// if d is t's first destination in its output and, for out1, only if out0 does not need t at all.
// So every needed input row is read by exactly one block, which writes it to all its destinations.
template <typename U>
__global__ void __launch_bounds__(kRowThreads, kRowBlocksPerSm)
    resample_forward_kernel(const U* __restrict__ x, U* __restrict__ out0, const NearestIndex idx0,
                            U* __restrict__ out1, const NearestIndex idx1, const RowGeometry geo) {
  const int64_t slots = idx0.t_out + (out1 != nullptr ? idx1.t_out : 0);
  const int64_t blocks = geo.outer * slots * geo.chunks;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t slot = (b / geo.chunks) % slots;
    const int64_t o = b / (geo.chunks * slots);
    int64_t t;
    if (slot < idx0.t_out) {
      t = idx0(slot);
      if (slot > 0 && idx0(slot - 1) == t) continue;
    } else {
      const int64_t d = slot - idx0.t_out;
      t = idx1(d);
      if (d > 0 && idx1(d - 1) == t) continue;
      if (first_dest(idx0, t) != first_dest(idx0, t + 1)) continue;  // out0's block copies t
    }
    const int64_t lo0 = first_dest(idx0, t), hi0 = first_dest(idx0, t + 1);
    int64_t lo1 = 0, hi1 = 0;
    if (out1 != nullptr) {
      lo1 = first_dest(idx1, t);
      hi1 = first_dest(idx1, t + 1);
    }

    const int64_t start = (b % geo.chunks) * kRowChunk + threadIdx.x;
    const U* src = x + (o * geo.t_in + t) * geo.inner;
    U v[kRowIlp];
#pragma unroll
    for (int i = 0; i < kRowIlp; ++i) {
      const int64_t u = start + i * kRowThreads;
      if (u < geo.inner) v[i] = src[u];
    }
    for (int64_t d = lo0; d < hi0; ++d) {
      U* dst = out0 + (o * idx0.t_out + d) * geo.inner;
#pragma unroll
      for (int i = 0; i < kRowIlp; ++i) {
        const int64_t u = start + i * kRowThreads;
        if (u < geo.inner) dst[u] = v[i];
      }
    }
    for (int64_t d = lo1; d < hi1; ++d) {
      U* dst = out1 + (o * idx1.t_out + d) * geo.inner;
#pragma unroll
      for (int i = 0; i < kRowIlp; ++i) {
        const int64_t u = start + i * kRowThreads;
        if (u < geo.inner) dst[u] = v[i];
      }
    }
  }
}

// grad_x[o, t, :] = sum over d with src(d) == t of grad_out[o, d, :]. kVecLoad: 16-byte accesses
// (geo.inner then counts vectors of kVec<T> elements), else one element per access.
template <typename T, bool kVecLoad>
__global__ void __launch_bounds__(kRowThreads, kRowBlocksPerSm)
    resample_backward_kernel(const T* __restrict__ grad_out, T* __restrict__ grad_x, const NearestIndex idx,
                             const RowGeometry geo) {
  using acc_t = typename AccType<T>::type;
  constexpr int V = kVecLoad ? kVec<T> : 1;
  union Unit {
    std::conditional_t<kVecLoad, uint4, T> raw;
    T e[V];
  };
  const int64_t blocks = geo.outer * geo.t_in * geo.chunks;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t row = b / geo.chunks;
    const int64_t o = row / geo.t_in;
    const int64_t t = row % geo.t_in;
    const int64_t lo = first_dest(idx, t), hi = first_dest(idx, t + 1);
    const int64_t start = (b % geo.chunks) * kRowChunk + threadIdx.x;

    acc_t acc[kRowIlp][V];
#pragma unroll
    for (int i = 0; i < kRowIlp; ++i)
#pragma unroll
      for (int e = 0; e < V; ++e) acc[i][e] = acc_t(0);
    for (int64_t d = lo; d < hi; ++d) {
      const auto* src = reinterpret_cast<const decltype(Unit::raw)*>(grad_out + (o * idx.t_out + d) * geo.inner * V);
      Unit in[kRowIlp];
#pragma unroll
      for (int i = 0; i < kRowIlp; ++i) {
        const int64_t u = start + i * kRowThreads;
        if (u < geo.inner) in[i].raw = src[u];
      }
#pragma unroll
      for (int i = 0; i < kRowIlp; ++i) {
        const int64_t u = start + i * kRowThreads;
        if (u < geo.inner) {
#pragma unroll
          for (int e = 0; e < V; ++e) acc[i][e] += static_cast<acc_t>(in[i].e[e]);
        }
      }
    }
    auto* dst = reinterpret_cast<decltype(Unit::raw)*>(grad_x + row * geo.inner * V);
#pragma unroll
    for (int i = 0; i < kRowIlp; ++i) {
      const int64_t u = start + i * kRowThreads;
      if (u < geo.inner) {
        Unit res;
#pragma unroll
        for (int e = 0; e < V; ++e) res.e[e] = static_cast<T>(acc[i][e]);
        dst[u] = res.raw;
      }
    }
  }
}

// (outer, inner) of a 5-D tensor in memory format `fmt` (see the file comment).
std::pair<int64_t, int64_t> rows_of(const at::Tensor& t, at::MemoryFormat fmt) {
  const int64_t hw = t.size(3) * t.size(4);
  if (fmt == at::MemoryFormat::ChannelsLast3d) return {t.size(0), hw * t.size(1)};
  return {t.size(0) * t.size(1), hw};
}

void check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(on_kernel_device(x), name, " must be a CUDA tensor");
  TORCH_CHECK(x.dim() == 5, name, " must be 5-D (N, C, T, H, W), got ", x.sizes());
  check_resample_content(x, name);
}

// As the Python validation and the CPU kernels: a finite positive scale giving at least one frame.
void check_scale(double scale_factor, int64_t t_in, const char* name) {
  TORCH_CHECK(std::isfinite(scale_factor) && scale_factor > 0, name, " must be finite and positive, got ",
              scale_factor);
  TORCH_CHECK(t_in >= 0, "t_in must be non-negative, got ", t_in);
  // Before resampled_length casts it: a double past int64's range has no defined conversion.
  TORCH_CHECK(static_cast<double>(t_in) * scale_factor < 4.0e18, name, "=", scale_factor, " makes ", t_in,
              " frames into more frames than int64 can count");
  TORCH_CHECK(resampled_length(t_in, scale_factor) >= 1, "empty temporal output: T=", t_in, " with ", name,
              "=", scale_factor);
}

template <typename U>
void launch_forward(const at::Tensor& x, at::Tensor& out0, const NearestIndex& idx0, at::Tensor* out1,
                    const NearestIndex& idx1, int64_t outer, int64_t inner_bytes) {
  const int64_t inner = inner_bytes / static_cast<int64_t>(sizeof(U));
  const RowGeometry geo{outer, idx0.t_in, inner, ceil_div(inner, kRowChunk)};
  const int64_t slots = idx0.t_out + (out1 != nullptr ? idx1.t_out : 0);
  const int64_t blocks = geo.outer * slots * geo.chunks;
  if (blocks == 0) return;
  SLOWFAST_FAST_LAUNCH(grid_size(blocks), kRowThreads, c10::cuda::getCurrentCUDAStream(), resample_forward_kernel<U>)(
      static_cast<const U*>(x.const_data_ptr()), static_cast<U*>(out0.data_ptr()), idx0,
      out1 != nullptr ? static_cast<U*>(out1->data_ptr()) : nullptr, idx1, geo);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Resamples x into out0 (and out1 when given), choosing the widest copy unit that fits.
void resample_forward(const at::Tensor& x, at::Tensor& out0, const NearestIndex& idx0, at::Tensor* out1,
                      const NearestIndex& idx1, at::MemoryFormat fmt) {
  const auto [outer, inner] = rows_of(x, fmt);
  const int64_t inner_bytes = inner * static_cast<int64_t>(x.element_size());
  std::uintptr_t addr_bits = reinterpret_cast<std::uintptr_t>(x.const_data_ptr()) |
                             reinterpret_cast<std::uintptr_t>(out0.data_ptr());
  if (out1 != nullptr) addr_bits |= reinterpret_cast<std::uintptr_t>(out1->data_ptr());
  const auto fits = [&](int64_t bytes) {
    return inner_bytes % bytes == 0 && addr_bits % static_cast<std::uintptr_t>(bytes) == 0;
  };
  if (fits(16)) launch_forward<uint4>(x, out0, idx0, out1, idx1, outer, inner_bytes);
  else if (fits(8)) launch_forward<uint2>(x, out0, idx0, out1, idx1, outer, inner_bytes);
  else if (fits(4)) launch_forward<uint32_t>(x, out0, idx0, out1, idx1, outer, inner_bytes);
  else {
    TORCH_CHECK(fits(2), "temporal resampling needs 2-byte aligned data");
    launch_forward<uint16_t>(x, out0, idx0, out1, idx1, outer, inner_bytes);
  }
}

at::Tensor new_resampled(const at::Tensor& x, int64_t t_out, at::MemoryFormat fmt) {
  return at::empty({x.size(0), x.size(1), t_out, x.size(3), x.size(4)}, x.options().memory_format(fmt));
}

at::Tensor temporal_resample_cuda(const at::Tensor& x, double scale_factor) {
  check_input(x, "x");
  check_scale(scale_factor, x.size(2), "scale_factor");
  c10::cuda::CUDAGuard guard(x.device());
  const auto fmt = output_memory_format(x);
  const NearestIndex idx(x.size(2), scale_factor);
  at::Tensor out = new_resampled(x, idx.t_out, fmt);
  if (out.numel() == 0) return out;
  const at::Tensor xc = x.contiguous(fmt);
  resample_forward(xc, out, idx, nullptr, idx, fmt);
  return out;
}

std::tuple<at::Tensor, at::Tensor> pathway_split_cuda(const at::Tensor& x, double slow_scale, double fast_scale) {
  check_input(x, "x");
  check_scale(slow_scale, x.size(2), "slow_scale");
  check_scale(fast_scale, x.size(2), "fast_scale");
  c10::cuda::CUDAGuard guard(x.device());
  const auto fmt = output_memory_format(x);
  const NearestIndex slow_idx(x.size(2), slow_scale);
  const NearestIndex fast_idx(x.size(2), fast_scale);
  at::Tensor slow = new_resampled(x, slow_idx.t_out, fmt);
  at::Tensor fast = new_resampled(x, fast_idx.t_out, fmt);
  if (x.numel() == 0) return {slow, fast};
  const at::Tensor xc = x.contiguous(fmt);
  resample_forward(xc, slow, slow_idx, &fast, fast_idx, fmt);
  return {slow, fast};
}

at::Tensor temporal_resample_backward_cuda(const at::Tensor& grad_out, int64_t t_in, double scale_factor) {
  check_input(grad_out, "grad_out");
  check_scale(scale_factor, t_in, "scale_factor");
  const NearestIndex idx(t_in, scale_factor);
  TORCH_CHECK(grad_out.size(2) == idx.t_out, "grad_out has ", grad_out.size(2), " frames, expected ", idx.t_out,
              " = floor(t_in * scale_factor)");
  c10::cuda::CUDAGuard guard(grad_out.device());
  const auto fmt = output_memory_format(grad_out);
  at::Tensor grad_x = at::empty({grad_out.size(0), grad_out.size(1), t_in, grad_out.size(3), grad_out.size(4)},
                                grad_out.options().memory_format(fmt));
  if (grad_x.numel() == 0) return grad_x;
  const at::Tensor go = grad_out.contiguous(fmt);
  // Not a structured binding: the dispatch lambda captures these, a C++20 feature (torch 2.11 builds as C++17).
  const std::pair<int64_t, int64_t> rows = rows_of(go, fmt);
  const int64_t outer = rows.first, inner = rows.second;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "temporal_resample_backward_cuda", [&] {
    constexpr int V = kVec<scalar_t>;
    const bool vec = inner % V == 0 && aligned16(go.const_data_ptr()) && aligned16(grad_x.data_ptr());
    const int64_t units = vec ? inner / V : inner;
    const RowGeometry geo{outer, t_in, units, ceil_div(units, kRowChunk)};
    const dim3 grid(grid_size(geo.outer * geo.t_in * geo.chunks));
    const auto* src = go.const_data_ptr<scalar_t>();
    auto* dst = grad_x.data_ptr<scalar_t>();
    if (vec) SLOWFAST_FAST_LAUNCH(grid, kRowThreads, stream, resample_backward_kernel<scalar_t, true>)(src, dst, idx, geo);
    else SLOWFAST_FAST_LAUNCH(grid, kRowThreads, stream, resample_backward_kernel<scalar_t, false>)(src, dst, idx, geo);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}

}  // namespace
}  // namespace cuda

SLOWFAST_FAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("temporal_resample", &cuda::temporal_resample_cuda);
  m.impl("temporal_resample_backward", &cuda::temporal_resample_backward_cuda);
  m.impl("pathway_split", &cuda::pathway_split_cuda);
}

}  // namespace slowfast_fast
