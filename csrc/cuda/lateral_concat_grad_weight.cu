// CUDA lateral_concat_grad_weight: the reduction over every (sample, frame, pixel) of
//
//   G[o, kt, c] = sum g[n, o, to, px] * x_fast[n, c, to*s - p + kt, px],   g = grad_out[:, C_s:] (* ReLU mask)
//   grad_weight[o, c, kt] = G * scale[o],  grad_scale[o] = sum_{c,kt} W[o, c, kt] * G[o, kt, c],
//   grad_shift[o] = sum g[:, o].
//
// Two deterministic passes, no atomics. Pass 1: a block owns one (tap kt, 64 lateral channels,
// 64 fast channels) tile of G and a contiguous slice ("split") of the 16-pixel tiles of all
// (n, to) frames; it accumulates that slice with the shared tile MMA (reduction dim = pixels) and
// writes its partial tile to a workspace. The splits are sized so the grid fills the GPU even when
// G is small. Blocks with kt == 0 and the first fast-channel tile also sum g for grad_shift.
// Pass 2: one block per lateral channel sums the partials in a fixed order and forms the three
// outputs. This file checks the inputs; the kernels are in grad_weight.cuh, compiled once per dtype
// in grad_weight_<dtype>.cu.
#include "grad_weight.cuh"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "common.h"

namespace slowfast_fast {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lateral_concat_grad_weight_cuda(
    const at::Tensor& grad_out, const at::Tensor& x_fast, const at::Tensor& weight,
    const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& out, int64_t stride,
    int64_t padding) {
  TORCH_CHECK(grad_out.dim() == 5 && x_fast.dim() == 5 && weight.dim() == 5,
              "grad_out, x_fast and weight must be 5-D");
  for (const at::Tensor* t : {&grad_out, &weight}) {
    TORCH_CHECK(on_kernel_device(*t) && t->device() == x_fast.device() && t->scalar_type() == x_fast.scalar_type(),
                "grad_out and weight must match x_fast's device and dtype");
  }
  const int64_t c_lat = weight.size(0), k = weight.size(2);
  TORCH_CHECK(weight.size(1) == x_fast.size(1) && k >= 1 && weight.size(3) == 1 && weight.size(4) == 1,
              "weight must be (C_lat, C_fast, k, 1, 1), got ", weight.sizes());
  TORCH_CHECK(grad_out.size(1) >= c_lat, "grad_out has fewer channels than the lateral conv produces");
  TORCH_CHECK(grad_out.size(0) == x_fast.size(0) && grad_out.size(3) == x_fast.size(3) &&
                  grad_out.size(4) == x_fast.size(4),
              "grad_out must match x_fast in N, H, W");
  check_conv_geometry(x_fast.size(2), k, stride, padding, grad_out.size(2), "grad_out");
  if (scale.has_value()) {
    TORCH_CHECK(on_kernel_device(*scale) && scale->device() == x_fast.device() &&
                    scale->scalar_type() == x_fast.scalar_type() && scale->dim() == 1 &&
                    scale->size(0) == c_lat,
                "scale must be (C_lat,) on x_fast's device and dtype");
  }
  if (out.has_value()) {
    TORCH_CHECK(on_kernel_device(*out) && out->device() == x_fast.device() && out->scalar_type() == x_fast.scalar_type() &&
                    out->sizes() == grad_out.sizes(),
                "out must match grad_out's shape and x_fast's device and dtype");
  }

  c10::cuda::CUDAGuard guard(x_fast.device());
  at::Tensor grad_w = at::empty(weight.sizes(), weight.options());  // contiguous
  at::Tensor grad_scale = at::empty({c_lat}, weight.options());
  at::Tensor grad_shift = at::empty({c_lat}, weight.options());
  if (c_lat == 0) return {grad_w, grad_scale, grad_shift};
  if (x_fast.size(0) == 0 || grad_out.size(2) == 0 || x_fast.size(3) * x_fast.size(4) == 0) {
    // Nothing to reduce over: every gradient is an empty sum.
    grad_w.zero_();
    grad_scale.zero_();
    grad_shift.zero_();
    return {grad_w, grad_scale, grad_shift};
  }

  const auto fmt = output_memory_format(x_fast);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast3d;
  const at::Tensor go = grad_out.contiguous(fmt);
  const at::Tensor xf = x_fast.contiguous(fmt);
  const at::Tensor wc = weight.contiguous();
  std::optional<at::Tensor> mask, sc;
  if (out.has_value()) mask = out->contiguous(fmt);
  if (scale.has_value()) sc = scale->contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "lateral_concat_grad_weight_cuda",
                                  [&] {
                                    grad_weight_impl<scalar_t>(go, mask, xf, wc, sc, stride, padding, cl, grad_w,
                                                               grad_scale, grad_shift);
                                  });
  return {grad_w, grad_scale, grad_shift};
}

}  // namespace
}  // namespace cuda

SLOWFAST_FAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("lateral_concat_grad_weight", &cuda::lateral_concat_grad_weight_cuda);
}

}  // namespace slowfast_fast
