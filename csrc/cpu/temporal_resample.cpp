// CPU kernels of nearest temporal resampling, its backward, and the two-output pathway split.
//
// A dense 5-D tensor in either layout is a contiguous (outer, T, inner) array: NCDHW has
// outer = N*C and inner = H*W (one plane per frame), channels_last_3d has outer = N and
// inner = H*W*C (one whole frame). Resampling is a gather of `inner`-long rows along T. Since the
// nearest source index is non-decreasing in the output index, the output frames copied from
// source frame s form one range; every task reads one source row once and writes it to all of
// its destinations (in both outputs for pathway_split), and source frames nobody needs are never
// read. The backward sums each range back into its source frame.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "common.h"
#include "cpu/cpu_utils.h"

namespace slowfast_fast::cpu {
namespace {

using at::Tensor;

// For each source frame, the half-open range of output frames that copy it.
struct Ranges {
  std::vector<int64_t> lo, hi;
  int64_t t_out;

  // `wide`: double data, whose index PyTorch's CPU kernel computes in double (common.h).
  Ranges(int64_t t_in, double scale_factor, bool wide) : lo(t_in, 0), hi(t_in, 0) {
    const NearestIndex index(t_in, scale_factor, wide);
    t_out = index.t_out;
    for (int64_t d = t_out - 1; d >= 0; --d) lo[index(d)] = d;
    for (int64_t d = 0; d < t_out; ++d) hi[index(d)] = d + 1;
  }
  bool empty(int64_t s) const { return hi[s] == 0; }
};

struct Layout {
  int64_t outer, inner;
  at::MemoryFormat format;
};

Layout layout_of(const Tensor& x) {
  const at::MemoryFormat format = output_memory_format(x);
  const int64_t hw = x.size(3) * x.size(4);
  if (format == at::MemoryFormat::ChannelsLast3d) return {x.size(0), hw * x.size(1), format};
  return {x.size(0) * x.size(1), hw, format};
}

void check_scale(double scale_factor, int64_t t_in) {
  TORCH_CHECK(std::isfinite(scale_factor) && scale_factor > 0, "scale_factor must be finite and positive");
  // Before resampled_length casts it: a double past int64's range has no defined conversion.
  TORCH_CHECK(static_cast<double>(t_in) * scale_factor < 4.0e18, "scale_factor ", scale_factor, " makes ",
              t_in, " frames into more frames than int64 can count");
  TORCH_CHECK(t_in >= 0 && resampled_length(t_in, scale_factor) >= 1, "empty temporal output");
}

Tensor empty_resampled(const Tensor& x, int64_t t_out, at::MemoryFormat format) {
  return at::empty({x.size(0), x.size(1), t_out, x.size(3), x.size(4)}, x.options().memory_format(format));
}

// Roughly 64 KiB of copying per task keeps small planes from becoming one task each.
int64_t grain(int64_t inner, int64_t element_size) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, inner * element_size));
}

// Gathers x (outer, t_in, inner) into each (outer, r.t_out, inner) output of `outs`.
void gather(const Tensor& x, const Layout& l, const std::vector<std::pair<const Ranges*, Tensor*>>& outs) {
  const int64_t t_in = x.size(2);
  const int64_t bytes = l.inner * x.element_size();
  const char* src = static_cast<const char*>(x.const_data_ptr());
  at::parallel_for(0, l.outer * t_in, grain(l.inner, x.element_size()), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / t_in, s = task % t_in;
      const char* row = src + task * bytes;
      for (const auto& [r, out] : outs) {
        char* dst = static_cast<char*>(out->mutable_data_ptr()) + o * r->t_out * bytes;
        for (int64_t d = r->lo[s]; d < r->hi[s]; ++d) std::memcpy(dst + d * bytes, row, bytes);
      }
    }
  });
}

Tensor temporal_resample_cpu(const Tensor& x_in, double scale_factor) {
  check_cpu_5d(x_in, "x");
  check_resample_content(x_in, "x");
  check_scale(scale_factor, x_in.size(2));
  const Layout l = layout_of(x_in);
  const Tensor x = x_in.contiguous(l.format);
  const Ranges r(x.size(2), scale_factor, x.scalar_type() == at::kDouble);
  Tensor out = empty_resampled(x, r.t_out, l.format);
  gather(x, l, {{&r, &out}});
  return out;
}

std::tuple<Tensor, Tensor> pathway_split_cpu(const Tensor& x_in, double slow_scale, double fast_scale) {
  check_cpu_5d(x_in, "x");
  check_resample_content(x_in, "x");
  check_scale(slow_scale, x_in.size(2));
  check_scale(fast_scale, x_in.size(2));
  const Layout l = layout_of(x_in);
  const Tensor x = x_in.contiguous(l.format);
  const bool wide = x.scalar_type() == at::kDouble;
  const Ranges slow(x.size(2), slow_scale, wide), fast(x.size(2), fast_scale, wide);
  Tensor out_slow = empty_resampled(x, slow.t_out, l.format);
  Tensor out_fast = empty_resampled(x, fast.t_out, l.format);
  gather(x, l, {{&slow, &out_slow}, {&fast, &out_fast}});
  return {out_slow, out_fast};
}

// grad_x[:, :, s] = sum of grad_out[:, :, d] over d in s's range (zeros when empty), summed in
// acc_t in increasing d and rounded once.
template <typename scalar_t>
void scatter_add(const Tensor& grad_out, const Layout& l, const Ranges& r, Tensor& grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t t_in = grad_x.size(2), inner = l.inner;
  const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
  scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, l.outer * t_in, grain(inner, sizeof(scalar_t)), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / t_in, s = task % t_in;
      scalar_t* dst = gx + task * inner;
      const scalar_t* rows = g + o * r.t_out * inner;
      const int64_t lo = r.lo[s], hi = r.hi[s];
      if (hi - lo <= 1) {
        if (hi == lo) {
          std::fill(dst, dst + inner, scalar_t(0));
        } else {
          std::memcpy(dst, rows + lo * inner, inner * sizeof(scalar_t));
        }
        continue;
      }
      acc.assign(inner, acc_t(0));
      for (int64_t d = lo; d < hi; ++d) {
        const scalar_t* row = rows + d * inner;
        for (int64_t i = 0; i < inner; ++i) acc[i] += static_cast<acc_t>(row[i]);
      }
      for (int64_t i = 0; i < inner; ++i) dst[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

Tensor temporal_resample_backward_cpu(const Tensor& grad_out_in, int64_t t_in, double scale_factor) {
  check_cpu_5d(grad_out_in, "grad_out");
  check_resample_content(grad_out_in, "grad_out");
  check_scale(scale_factor, t_in);
  const Ranges r(t_in, scale_factor, grad_out_in.scalar_type() == at::kDouble);
  TORCH_CHECK(grad_out_in.size(2) == r.t_out, "grad_out has ", grad_out_in.size(2),
              " frames but resampling ", t_in, " frames gives ", r.t_out);
  const Layout l = layout_of(grad_out_in);
  const Tensor grad_out = grad_out_in.contiguous(l.format);
  Tensor grad_x = empty_resampled(grad_out, t_in, l.format);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_out.scalar_type(), "temporal_resample_backward", [&] {
    scatter_add<scalar_t>(grad_out, l, r, grad_x);
  });
  return grad_x;
}

}  // namespace
}  // namespace slowfast_fast::cpu

TORCH_LIBRARY_IMPL(slowfast_fast, CPU, m) {
  m.impl("temporal_resample", &slowfast_fast::cpu::temporal_resample_cpu);
  m.impl("temporal_resample_backward", &slowfast_fast::cpu::temporal_resample_backward_cpu);
  m.impl("pathway_split", &slowfast_fast::cpu::pathway_split_cpu);
}
