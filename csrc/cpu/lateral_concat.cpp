// CPU kernels of lateral_concat and its two gradient ops.
//
// The lateral conv has a (k, 1, 1) kernel, so for output frame t of sample n it is a sum over the
// k taps of GEMMs W[:, :, kt] (C_lat x C_fast) @ x_fast[n, :, t*s - p + kt] (C_fast x H*W). Frames
// of both layouts are strided matrices (see cpu_utils.h `frame`), so BLAS reads the fast frames in
// place and writes straight into the output's lateral channels: no im2col, no intermediate lateral
// tensor, no separate cat, and fast frames that no tap needs are never touched. fp16/bf16 blocks
// are widened to fp32 on the way in and the fp32 result is rounded once on the way out.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "common.h"
#include "cpu/cpu_utils.h"

namespace slowfast_fast::cpu {
namespace {

using at::Tensor;

struct Conv {
  int64_t batch, c_fast, t_fast, c_lat, t_slow, hw, k, stride, padding;

  // Fast frame read by tap kt of output frame t (may lie in the padding).
  int64_t source(int64_t t, int64_t kt) const { return t * stride - padding + kt; }
  bool in_range(int64_t tf) const { return tf >= 0 && tf < t_fast; }
};

Conv check_conv(const Tensor& x_fast, const Tensor& weight, int64_t stride, int64_t padding,
                int64_t batch, int64_t t_slow, int64_t h, int64_t w) {
  check_cpu_5d(x_fast, "x_fast");
  check_cpu_5d(weight, "weight");
  TORCH_CHECK(weight.scalar_type() == x_fast.scalar_type(), "weight and x_fast dtypes differ");
  TORCH_CHECK(weight.size(1) == x_fast.size(1) && weight.size(3) == 1 && weight.size(4) == 1,
              "weight must be (C_lat, C_fast, k, 1, 1), got ", weight.sizes());
  TORCH_CHECK(x_fast.size(0) == batch && x_fast.size(3) == h && x_fast.size(4) == w,
              "x_fast's N, H, W must match");
  const int64_t k = weight.size(2);
  TORCH_CHECK(k >= 1 && stride >= 1 && padding >= 0 && padding < k, "bad kernel/stride/padding");
  const int64_t t_fast = x_fast.size(2);
  TORCH_CHECK(t_fast + 2 * padding >= k && (t_fast + 2 * padding - k) / stride + 1 == t_slow,
              "the lateral conv's output length does not match T_slow=", t_slow);
  return {batch, x_fast.size(1), t_fast, weight.size(0), t_slow, h * w, k, stride, padding};
}

void check_affine(const std::optional<Tensor>& t, const Tensor& like, int64_t channels,
                  const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == like.scalar_type(), name,
              " must be a CPU tensor of dtype ", like.scalar_type());
  TORCH_CHECK(t->dim() == 1 && t->size(0) == channels, name, " must have shape (", channels, ",)");
}

bool is_channels_last(const Tensor& dense) {
  return output_memory_format(dense) == at::MemoryFormat::ChannelsLast3d;
}

Tensor dense(const Tensor& t) { return t.contiguous(output_memory_format(t)); }

// Per-channel vector in acc_t, or `fill` everywhere when absent.
template <typename scalar_t, typename acc_t>
std::vector<acc_t> channel_vector(const std::optional<Tensor>& t, int64_t channels, acc_t fill) {
  std::vector<acc_t> v(channels, fill);
  if (t.has_value()) {
    const Tensor c = t->contiguous();
    const scalar_t* p = c.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < channels; ++i) v[i] = static_cast<acc_t>(p[i]);
  }
  return v;
}

// The weight as k row-major (C_lat x C_fast) taps (or their transposes when `transpose`), each
// output channel multiplied by row_scale[o].
template <typename scalar_t, typename acc_t>
std::vector<acc_t> pack_taps(const Tensor& weight, const std::vector<acc_t>& row_scale,
                             bool transpose) {
  const Tensor w = weight.contiguous();
  const int64_t c_lat = w.size(0), c_fast = w.size(1), k = w.size(2);
  const scalar_t* p = w.const_data_ptr<scalar_t>();
  std::vector<acc_t> taps(k * c_lat * c_fast);
  for (int64_t o = 0; o < c_lat; ++o)
    for (int64_t c = 0; c < c_fast; ++c)
      for (int64_t kt = 0; kt < k; ++kt) {
        const int64_t idx = transpose ? (kt * c_fast + c) * c_lat + o : (kt * c_lat + o) * c_fast + c;
        taps[idx] = static_cast<acc_t>(p[(o * c_fast + c) * k + kt]) * row_scale[o];
      }
  return taps;
}

// ---------------------------------------------------------------------------------------------
// Forward

template <typename scalar_t>
void lateral_forward(const Tensor& x_slow, const Tensor& x_fast, const Tensor& weight,
                     const std::optional<Tensor>& scale, const std::optional<Tensor>& shift,
                     bool relu, const Conv& cv, Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool direct = std::is_same_v<acc_t, scalar_t>;  // accumulate in the output itself
  const int64_t c_slow = x_slow.size(1), c_total = out.size(1), hw = cv.hw;
  const int64_t c_lat = cv.c_lat, c_fast = cv.c_fast, t_slow = cv.t_slow;
  const bool cl_out = is_channels_last(out), cl_fast = is_channels_last(x_fast);
  const std::vector<acc_t> alpha = channel_vector<scalar_t, acc_t>(scale, c_lat, acc_t(1));
  const std::vector<acc_t> beta = channel_vector<scalar_t, acc_t>(shift, c_lat, acc_t(0));
  const std::vector<acc_t> taps =
      pack_taps<scalar_t, acc_t>(weight, std::vector<acc_t>(c_lat, acc_t(1)), false);
  const bool affine = scale.has_value() || shift.has_value();
  const scalar_t* xs = x_slow.const_data_ptr<scalar_t>();
  const scalar_t* xf = x_fast.const_data_ptr<scalar_t>();
  scalar_t* y = out.mutable_data_ptr<scalar_t>();

  at::parallel_for(0, cv.batch * t_slow, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc_buf(direct ? 0 : c_lat * hw), frame_buf(direct ? 0 : c_fast * hw);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / t_slow, t = task % t_slow;
      // x_slow's channels of this frame, in the same pass.
      if (cl_out) {
        const scalar_t* src = xs + (n * t_slow + t) * hw * c_slow;
        scalar_t* dst = y + (n * t_slow + t) * hw * c_total;
        for (int64_t i = 0; i < hw; ++i)
          std::memcpy(dst + i * c_total, src + i * c_slow, c_slow * sizeof(scalar_t));
      } else {
        for (int64_t c = 0; c < c_slow; ++c)
          std::memcpy(y + ((n * c_total + c) * t_slow + t) * hw,
                      xs + ((n * c_slow + c) * t_slow + t) * hw, hw * sizeof(scalar_t));
      }

      const Mat<scalar_t> dst = frame(y, c_total, t_slow, hw, cl_out, n, t, c_slow);
      Mat<acc_t> acc;
      if constexpr (direct) {
        acc = dst;
      } else {
        acc = cl_out ? Mat<acc_t>{acc_buf.data(), 1, c_lat} : Mat<acc_t>{acc_buf.data(), hw, 1};
      }
      acc_t keep = 0;  // 0 for the first tap, then accumulate
      for (int64_t kt = 0; kt < cv.k; ++kt) {
        const int64_t tf = cv.source(t, kt);
        if (!cv.in_range(tf)) continue;
        Mat<const acc_t> x;
        const Mat<const scalar_t> xm = frame(xf, c_fast, cv.t_fast, hw, cl_fast, n, tf);
        if constexpr (direct) {
          x = xm;
        } else {
          x = to_acc<scalar_t, acc_t>(xm, c_fast, hw, frame_buf.data());
        }
        gemm<acc_t>(c_lat, hw, c_fast, Mat<const acc_t>{taps.data() + kt * c_lat * c_fast, c_fast, 1},
                    x, keep, acc);
        keep = 1;
      }
      if (keep == 0) for_each(acc, c_lat, hw, [&](int64_t o, int64_t i) { acc.ptr[o * acc.rs + i * acc.cs] = 0; });
      if (!direct || affine || relu) {
        for_each(dst, c_lat, hw, [&](int64_t o, int64_t i) {
          acc_t v = acc.ptr[o * acc.rs + i * acc.cs] * alpha[o] + beta[o];
          if (relu) v = v > acc_t(0) ? v : acc_t(0);
          dst.ptr[o * dst.rs + i * dst.cs] = static_cast<scalar_t>(v);
        });
      }
    }
  });
}

Tensor lateral_concat_cpu(const Tensor& x_slow_in, const Tensor& x_fast_in, const Tensor& weight,
                          int64_t stride, int64_t padding, const std::optional<Tensor>& scale,
                          const std::optional<Tensor>& shift, bool relu) {
  check_cpu_5d(x_slow_in, "x_slow");
  TORCH_CHECK(x_slow_in.scalar_type() == x_fast_in.scalar_type(), "x_slow and x_fast dtypes differ");
  const int64_t batch = x_slow_in.size(0), t_slow = x_slow_in.size(2);
  const Conv cv = check_conv(x_fast_in, weight, stride, padding, batch, t_slow, x_slow_in.size(3),
                             x_slow_in.size(4));
  check_affine(scale, x_slow_in, cv.c_lat, "scale");
  check_affine(shift, x_slow_in, cv.c_lat, "shift");
  const Tensor x_slow = dense(x_slow_in), x_fast = dense(x_fast_in);
  Tensor out = at::empty({batch, x_slow.size(1) + cv.c_lat, t_slow, x_slow.size(3), x_slow.size(4)},
                         x_slow.options().memory_format(output_memory_format(x_slow_in)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_slow.scalar_type(), "lateral_concat", [&] {
    lateral_forward<scalar_t>(x_slow, x_fast, weight, scale, shift, relu, cv, out);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Backward: g = grad_out[:, c_slow:] * (relu ? out[:, c_slow:] > 0 : 1)

struct GradArgs {
  Tensor grad_out;            // dense
  std::optional<Tensor> out;  // dense, present when the forward applied ReLU
  Tensor x_fast;              // dense
  Conv cv;
  int64_t c_slow;
};

GradArgs check_grad(const Tensor& grad_out, const Tensor& x_fast, const Tensor& weight,
                    const std::optional<Tensor>& scale, const std::optional<Tensor>& out,
                    int64_t stride, int64_t padding) {
  check_cpu_5d(grad_out, "grad_out");
  TORCH_CHECK(grad_out.scalar_type() == x_fast.scalar_type(), "grad_out and x_fast dtypes differ");
  const Conv cv = check_conv(x_fast, weight, stride, padding, grad_out.size(0), grad_out.size(2),
                             grad_out.size(3), grad_out.size(4));
  const int64_t c_slow = grad_out.size(1) - cv.c_lat;
  TORCH_CHECK(c_slow >= 0, "grad_out has fewer channels than the lateral conv's output");
  check_affine(scale, x_fast, cv.c_lat, "scale");
  std::optional<Tensor> out_dense;
  if (out.has_value()) {
    check_cpu_5d(*out, "out");
    TORCH_CHECK(out->sizes() == grad_out.sizes() && out->scalar_type() == grad_out.scalar_type(),
                "out must have grad_out's shape and dtype");
    out_dense = dense(*out);
  }
  return {dense(grad_out), out_dense, dense(x_fast), cv, c_slow};
}

// The lateral gradient of frame (n, t) as a (C_lat x H*W) matrix: grad_out's own memory when no
// mask or widening is needed, else a masked acc_t copy in `buf` in grad_out's orientation.
template <typename scalar_t, typename acc_t>
class LateralGrad {
 public:
  explicit LateralGrad(const GradArgs& a)
      : go_(a.grad_out.const_data_ptr<scalar_t>()),
        mask_(a.out.has_value() ? a.out->const_data_ptr<scalar_t>() : nullptr),
        c_total_(a.grad_out.size(1)),
        c_slow_(a.c_slow),
        c_lat_(a.cv.c_lat),
        t_slow_(a.cv.t_slow),
        hw_(a.cv.hw),
        cl_go_(is_channels_last(a.grad_out)),
        cl_mask_(a.out.has_value() && is_channels_last(*a.out)) {}

  static constexpr bool kWiden = !std::is_same_v<acc_t, scalar_t>;
  bool needs_copy() const { return kWiden || mask_ != nullptr; }
  int64_t block_size() const { return c_lat_ * hw_; }

  Mat<const acc_t> get(int64_t n, int64_t t, acc_t* buf) const {
    const Mat<const scalar_t> g = frame(go_, c_total_, t_slow_, hw_, cl_go_, n, t, c_slow_);
    if constexpr (!kWiden) {
      if (mask_ == nullptr) return g;
    }
    const Mat<acc_t> d = cl_go_ ? Mat<acc_t>{buf, 1, c_lat_} : Mat<acc_t>{buf, hw_, 1};
    if (mask_ == nullptr) {
      for_each(d, c_lat_, hw_, [&](int64_t o, int64_t i) {
        d.ptr[o * d.rs + i * d.cs] = static_cast<acc_t>(g.ptr[o * g.rs + i * g.cs]);
      });
    } else {
      const Mat<const scalar_t> m = frame(mask_, c_total_, t_slow_, hw_, cl_mask_, n, t, c_slow_);
      for_each(d, c_lat_, hw_, [&](int64_t o, int64_t i) {
        const bool pass = static_cast<acc_t>(m.ptr[o * m.rs + i * m.cs]) > acc_t(0);
        d.ptr[o * d.rs + i * d.cs] = pass ? static_cast<acc_t>(g.ptr[o * g.rs + i * g.cs]) : acc_t(0);
      });
    }
    return d;
  }

 private:
  const scalar_t* go_;
  const scalar_t* mask_;
  int64_t c_total_, c_slow_, c_lat_, t_slow_, hw_;
  bool cl_go_, cl_mask_;
};

// grad_x_fast[n, :, tf] = sum over the (t, kt) with t*s - p + kt == tf of
// (W[:, :, kt] * scale)^T @ g[n, :, t]. One task owns one fast frame, so nothing races; frames no
// tap reads (stride > k) get zeros.
template <typename scalar_t>
void lateral_grad_input(const GradArgs& a, const Tensor& weight, const std::optional<Tensor>& scale,
                        Tensor& grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool direct = std::is_same_v<acc_t, scalar_t>;
  const Conv& cv = a.cv;
  const int64_t c_lat = cv.c_lat, c_fast = cv.c_fast, hw = cv.hw;
  const std::vector<acc_t> taps_t = pack_taps<scalar_t, acc_t>(
      weight, channel_vector<scalar_t, acc_t>(scale, c_lat, acc_t(1)), true);
  const LateralGrad<scalar_t, acc_t> lateral(a);

  // Masked / widened gradient blocks are prepared once, since each feeds up to ceil(k/s) frames.
  std::vector<acc_t> g_all;
  if (lateral.needs_copy()) {
    g_all.resize(cv.batch * cv.t_slow * lateral.block_size());
    at::parallel_for(0, cv.batch * cv.t_slow, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task)
        lateral.get(task / cv.t_slow, task % cv.t_slow, g_all.data() + task * lateral.block_size());
    });
  }
  const bool cl_go = is_channels_last(a.grad_out);
  auto g_block = [&](int64_t n, int64_t t) -> Mat<const acc_t> {
    if (g_all.empty()) return lateral.get(n, t, nullptr);
    acc_t* p = g_all.data() + (n * cv.t_slow + t) * lateral.block_size();
    return cl_go ? Mat<const acc_t>{p, 1, c_lat} : Mat<const acc_t>{p, hw, 1};
  };

  const bool cl_x = is_channels_last(grad_x);
  scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, cv.batch * cv.t_fast, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc_buf(direct ? 0 : c_fast * hw);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / cv.t_fast, tf = task % cv.t_fast;
      const Mat<scalar_t> dst = frame(gx, c_fast, cv.t_fast, hw, cl_x, n, tf);
      Mat<acc_t> acc;
      if constexpr (direct) {
        acc = dst;
      } else {
        acc = cl_x ? Mat<acc_t>{acc_buf.data(), 1, c_fast} : Mat<acc_t>{acc_buf.data(), hw, 1};
      }
      // Output frames t whose taps reach tf: kt = tf + p - t*s in [0, k).
      const int64_t reach = tf + cv.padding;
      const int64_t lo_num = reach - (cv.k - 1);
      const int64_t t_lo = lo_num <= 0 ? 0 : (lo_num + cv.stride - 1) / cv.stride;
      const int64_t t_hi = std::min(cv.t_slow - 1, reach / cv.stride);
      acc_t keep = 0;
      for (int64_t t = t_lo; t <= t_hi; ++t) {
        const int64_t kt = reach - t * cv.stride;
        gemm<acc_t>(c_fast, hw, c_lat, Mat<const acc_t>{taps_t.data() + kt * c_fast * c_lat, c_lat, 1},
                    g_block(n, t), keep, acc);
        keep = 1;
      }
      if (keep == 0) {
        for_each(dst, c_fast, hw, [&](int64_t c, int64_t i) { dst.ptr[c * dst.rs + i * dst.cs] = 0; });
      } else if constexpr (!direct) {
        for_each(dst, c_fast, hw, [&](int64_t c, int64_t i) {
          dst.ptr[c * dst.rs + i * dst.cs] = static_cast<scalar_t>(acc.ptr[c * acc.rs + i * acc.cs]);
        });
      }
    }
  });
}

Tensor lateral_concat_grad_input_cpu(const Tensor& grad_out, const Tensor& x_fast,
                                     const Tensor& weight, const std::optional<Tensor>& scale,
                                     const std::optional<Tensor>& out, int64_t stride,
                                     int64_t padding) {
  const GradArgs a = check_grad(grad_out, x_fast, weight, scale, out, stride, padding);
  Tensor grad_x = at::empty(x_fast.sizes(), x_fast.options().memory_format(output_memory_format(x_fast)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_fast.scalar_type(), "lateral_concat_grad_input", [&] {
    lateral_grad_input<scalar_t>(a, weight, scale, grad_x);
  });
  return grad_x;
}

// G[kt] (C_lat x C_fast) = sum over (n, t) of g[n, :, t] @ x_fast[n, :, t*s - p + kt]^T and
// sum_g[o] = sum of g[:, o]. The (n, t) range is cut into a fixed number of chunks, each with its
// own acc_t accumulator, summed afterwards in chunk order: a real reduction, deterministic for a
// given thread count.
template <typename scalar_t>
void lateral_grad_weight(const GradArgs& a, const Tensor& weight, const std::optional<Tensor>& scale,
                         Tensor& grad_w, Tensor& grad_scale, Tensor& grad_shift) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool direct = std::is_same_v<acc_t, scalar_t>;
  const Conv& cv = a.cv;
  const int64_t c_lat = cv.c_lat, c_fast = cv.c_fast, hw = cv.hw, k = cv.k;
  const int64_t tasks = cv.batch * cv.t_slow;
  const int64_t per_tap = c_lat * c_fast, slot = k * per_tap + c_lat;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks));
  std::vector<acc_t> partial(chunks * slot, acc_t(0));
  const LateralGrad<scalar_t, acc_t> lateral(a);
  const bool cl_x = is_channels_last(a.x_fast);
  const scalar_t* xf = a.x_fast.const_data_ptr<scalar_t>();

  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<acc_t> g_buf(lateral.needs_copy() ? lateral.block_size() : 0);
    std::vector<acc_t> x_buf(direct ? 0 : c_fast * hw);
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      acc_t* G = partial.data() + chunk * slot;
      acc_t* sum_g = G + k * per_tap;
      for (int64_t task = chunk * tasks / chunks; task < (chunk + 1) * tasks / chunks; ++task) {
        const int64_t n = task / cv.t_slow, t = task % cv.t_slow;
        const Mat<const acc_t> g = lateral.get(n, t, g_buf.data());
        for_each(g, c_lat, hw, [&](int64_t o, int64_t i) { sum_g[o] += g.ptr[o * g.rs + i * g.cs]; });
        for (int64_t kt = 0; kt < k; ++kt) {
          const int64_t tf = cv.source(t, kt);
          if (!cv.in_range(tf)) continue;
          const Mat<const scalar_t> xm = frame(xf, c_fast, cv.t_fast, hw, cl_x, n, tf);
          Mat<const acc_t> x;
          if constexpr (direct) {
            x = xm;
          } else {
            x = to_acc<scalar_t, acc_t>(xm, c_fast, hw, x_buf.data());
          }
          gemm<acc_t>(c_lat, c_fast, hw, g, x.transposed(), acc_t(1),
                      Mat<acc_t>{G + kt * per_tap, c_fast, 1});
        }
      }
    }
  });
  for (int64_t chunk = 1; chunk < chunks; ++chunk)
    for (int64_t i = 0; i < slot; ++i) partial[i] += partial[chunk * slot + i];

  const acc_t* G = partial.data();
  const std::vector<acc_t> s = channel_vector<scalar_t, acc_t>(scale, c_lat, acc_t(1));
  const Tensor w = weight.contiguous();
  const scalar_t* wp = w.const_data_ptr<scalar_t>();
  scalar_t* gw = grad_w.mutable_data_ptr<scalar_t>();
  scalar_t* gs = grad_scale.mutable_data_ptr<scalar_t>();
  scalar_t* gb = grad_shift.mutable_data_ptr<scalar_t>();
  for (int64_t o = 0; o < c_lat; ++o) {
    acc_t dot = 0;
    for (int64_t c = 0; c < c_fast; ++c)
      for (int64_t kt = 0; kt < k; ++kt) {
        const acc_t v = G[kt * per_tap + o * c_fast + c];
        const int64_t idx = (o * c_fast + c) * k + kt;
        gw[idx] = static_cast<scalar_t>(v * s[o]);
        dot += static_cast<acc_t>(wp[idx]) * v;
      }
    gs[o] = static_cast<scalar_t>(dot);
    gb[o] = static_cast<scalar_t>(G[k * per_tap + o]);
  }
}

std::tuple<Tensor, Tensor, Tensor> lateral_concat_grad_weight_cpu(
    const Tensor& grad_out, const Tensor& x_fast, const Tensor& weight,
    const std::optional<Tensor>& scale, const std::optional<Tensor>& out, int64_t stride,
    int64_t padding) {
  const GradArgs a = check_grad(grad_out, x_fast, weight, scale, out, stride, padding);
  Tensor grad_w = at::empty(weight.sizes(), weight.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor grad_scale = at::empty({a.cv.c_lat}, weight.options());
  Tensor grad_shift = at::empty({a.cv.c_lat}, weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_fast.scalar_type(), "lateral_concat_grad_weight", [&] {
    lateral_grad_weight<scalar_t>(a, weight, scale, grad_w, grad_scale, grad_shift);
  });
  return {grad_w, grad_scale, grad_shift};
}

}  // namespace
}  // namespace slowfast_fast::cpu

TORCH_LIBRARY_IMPL(slowfast_fast, CPU, m) {
  m.impl("lateral_concat", &slowfast_fast::cpu::lateral_concat_cpu);
  m.impl("lateral_concat_grad_input", &slowfast_fast::cpu::lateral_concat_grad_input_cpu);
  m.impl("lateral_concat_grad_weight", &slowfast_fast::cpu::lateral_concat_grad_weight_cpu);
}
