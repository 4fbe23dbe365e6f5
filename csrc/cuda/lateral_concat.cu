// CUDA lateral_concat (forward) and lateral_concat_grad_input. Both are one temporal (k,1,1)
// convolution computed as per-frame GEMMs, so they share one kernel:
//
//   forward:     out[n, C_s + o, to, px] = epi(sum_{kt, c} W[o, c, kt] * x_fast[n, c, to*s - p + kt, px])
//                and, in the same launch, out[n, :C_s, to, px] = x_slow[n, :, to, px];
//   grad_input:  gx[n, c, t, px] = sum_{kt, o : t = to*s - p + kt} W[o, c, kt] * scale[o] * g[n, o, to, px]
//                with g = grad_out[:, C_s:] (times the ReLU mask out[:, C_s:] > 0 when given).
//
// This file checks the inputs and fills the kernel's parameters; the kernel itself is in
// lateral_gemm.cuh, compiled once per dtype in lateral_gemm_<dtype>.cu.
#include "lateral_gemm.cuh"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common.h"

namespace slowfast_fast {
namespace cuda {
namespace {

void check_cuda_tensor(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device(), name, " must be on ", like.device(), ", got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must be ", like.scalar_type(), ", got ",
              t.scalar_type());
}

// Checks weight (C_lat, C_fast, k, 1, 1) against x_fast and the optional per-channel tensors.
void check_weight(const at::Tensor& weight, const at::Tensor& x_fast, const std::optional<at::Tensor>& scale,
                  const std::optional<at::Tensor>& shift) {
  TORCH_CHECK(x_fast.dim() == 5 && weight.dim() == 5, "x_fast and weight must be 5-D");
  check_cuda_tensor(weight, x_fast, "weight");
  TORCH_CHECK(weight.size(1) == x_fast.size(1) && weight.size(2) >= 1 && weight.size(3) == 1 &&
                  weight.size(4) == 1,
              "weight must be (C_lat, C_fast, k, 1, 1), got ", weight.sizes());
  for (const auto* opt : {&scale, &shift}) {
    if (opt->has_value()) {
      check_cuda_tensor(**opt, x_fast, "scale/shift");
      TORCH_CHECK((*opt)->dim() == 1 && (*opt)->size(0) == weight.size(0), "scale/shift must be (C_lat,)");
    }
  }
}

template <typename T>
const T* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

at::Tensor lateral_concat_cuda(const at::Tensor& x_slow, const at::Tensor& x_fast, const at::Tensor& weight,
                               int64_t stride, int64_t padding, const std::optional<at::Tensor>& scale,
                               const std::optional<at::Tensor>& shift, bool relu) {
  TORCH_CHECK(x_slow.dim() == 5, "x_slow must be 5-D");
  check_cuda_tensor(x_slow, x_slow, "x_slow");
  check_cuda_tensor(x_fast, x_slow, "x_fast");
  check_weight(weight, x_fast, scale, shift);
  const int64_t n = x_slow.size(0), c_slow = x_slow.size(1), t_slow = x_slow.size(2);
  const int64_t h = x_slow.size(3), w = x_slow.size(4);
  const int64_t c_fast = x_fast.size(1), t_fast = x_fast.size(2);
  const int64_t c_lat = weight.size(0), k = weight.size(2);
  TORCH_CHECK(x_fast.size(0) == n && x_fast.size(3) == h && x_fast.size(4) == w,
              "x_fast must match x_slow in N, H, W");
  check_conv_geometry(t_fast, k, stride, padding, t_slow, "x_slow");
  TORCH_CHECK(c_slow <= (int64_t{1} << 24), "x_slow has too many channels for the copy's 32-bit indexing");

  c10::cuda::CUDAGuard guard(x_slow.device());
  const auto fmt = output_memory_format(x_slow);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast3d;
  const at::Tensor xs = x_slow.contiguous(fmt);
  const at::Tensor xf = x_fast.contiguous(fmt);
  const at::Tensor wc = weight.contiguous();
  std::optional<at::Tensor> sc, sh;
  if (scale.has_value()) sc = scale->contiguous();
  if (shift.has_value()) sh = shift->contiguous();
  at::Tensor out = at::empty({n, c_slow + c_lat, t_slow, h, w}, x_slow.options().memory_format(fmt));
  if (out.numel() == 0) return out;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xs.scalar_type(), "lateral_concat_cuda", [&] {
    using T = scalar_t;
    constexpr int V = kVec<T>;
    LateralGemmParams<T> p{};
    p.a = xf.data_ptr<T>();
    p.mask = nullptr;
    p.av = ActView{c_fast, 0, t_fast, h * w};
    p.red_ch = c_fast;
    p.weight = wc.data_ptr<T>();
    p.scale = data_or_null<T>(sc);
    p.shift = data_or_null<T>(sh);
    p.relu = relu;
    p.c_fast = c_fast;
    p.k = k;
    p.stride = stride;
    p.pad = padding;
    p.transposed = false;
    p.out = out.data_ptr<T>();
    p.ov = ActView{c_slow + c_lat, c_slow, t_slow, h * w};
    p.out_ch = c_lat;
    p.slow = xs.data_ptr<T>();
    p.c_slow = c_slow;
    p.batch = n;
    p.num_pt = ceil_div(h * w, kBM);
    // At least one channel tile, so x_slow is copied even without lateral channels.
    p.num_jt = std::max<int64_t>(1, ceil_div(c_lat, kBN));
    p.slow_share = ceil_div(ceil_div(c_slow, p.num_jt), 8) * 8;  // whole 16-byte vectors
    const int64_t hw = h * w;
    const bool ptrs = aligned16(p.a) && aligned16(p.out) && aligned16(p.slow);
    if (cl) {
      p.a_vec = ptrs && c_fast % V == 0;
      p.out_vec = ptrs && (c_slow + c_lat) % V == 0 && c_slow % V == 0 && c_lat % V == 0;
      p.slow_vec = ptrs && (c_slow + c_lat) % V == 0 && c_slow % V == 0;
    } else {
      p.a_vec = p.out_vec = p.slow_vec = ptrs && hw % V == 0;
    }
    launch_lateral_gemm(p, cl, conv_allows_tf32());
  });
  return out;
}

at::Tensor lateral_concat_grad_input_cuda(const at::Tensor& grad_out, const at::Tensor& x_fast,
                                          const at::Tensor& weight, const std::optional<at::Tensor>& scale,
                                          const std::optional<at::Tensor>& out, int64_t stride,
                                          int64_t padding) {
  TORCH_CHECK(grad_out.dim() == 5, "grad_out must be 5-D");
  check_cuda_tensor(x_fast, x_fast, "x_fast");
  check_cuda_tensor(grad_out, x_fast, "grad_out");
  check_weight(weight, x_fast, scale, std::nullopt);
  const int64_t n = x_fast.size(0), c_fast = x_fast.size(1), t_fast = x_fast.size(2);
  const int64_t h = x_fast.size(3), w = x_fast.size(4);
  const int64_t c_lat = weight.size(0), k = weight.size(2);
  const int64_t c_tot = grad_out.size(1), t_slow = grad_out.size(2);
  TORCH_CHECK(c_tot >= c_lat, "grad_out has fewer channels than the lateral conv produces");
  TORCH_CHECK(grad_out.size(0) == n && grad_out.size(3) == h && grad_out.size(4) == w,
              "grad_out must match x_fast in N, H, W");
  check_conv_geometry(t_fast, k, stride, padding, t_slow, "grad_out");
  if (out.has_value()) {
    check_cuda_tensor(*out, x_fast, "out");
    TORCH_CHECK(out->sizes() == grad_out.sizes(), "out must have grad_out's shape");
  }

  c10::cuda::CUDAGuard guard(x_fast.device());
  const auto fmt = output_memory_format(x_fast);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast3d;
  const at::Tensor go = grad_out.contiguous(fmt);
  std::optional<at::Tensor> oc;
  if (out.has_value()) oc = out->contiguous(fmt);
  const at::Tensor wc = weight.contiguous();
  std::optional<at::Tensor> sc;
  if (scale.has_value()) sc = scale->contiguous();
  at::Tensor grad_x = at::empty(x_fast.sizes(), x_fast.options().memory_format(fmt));
  if (grad_x.numel() == 0) return grad_x;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "lateral_concat_grad_input_cuda",
                                  [&] {
                                    using T = scalar_t;
                                    constexpr int V = kVec<T>;
                                    LateralGemmParams<T> p{};
                                    p.a = go.data_ptr<T>();
                                    p.mask = data_or_null<T>(oc);
                                    p.av = ActView{c_tot, c_tot - c_lat, t_slow, h * w};
                                    p.red_ch = c_lat;
                                    p.weight = wc.data_ptr<T>();
                                    p.scale = data_or_null<T>(sc);
                                    p.shift = nullptr;
                                    p.relu = false;
                                    p.c_fast = c_fast;
                                    p.k = k;
                                    p.stride = stride;
                                    p.pad = padding;
                                    p.transposed = true;
                                    p.out = grad_x.data_ptr<T>();
                                    p.ov = ActView{c_fast, 0, t_fast, h * w};
                                    p.out_ch = c_fast;
                                    p.slow = nullptr;
                                    p.batch = n;
                                    p.num_pt = ceil_div(h * w, kBM);
                                    p.num_jt = ceil_div(c_fast, kBN);
                                    const bool ptrs = aligned16(p.a) && aligned16(p.out) &&
                                                      (p.mask == nullptr || aligned16(p.mask));
                                    if (cl) {
                                      p.a_vec = ptrs && c_tot % V == 0 && c_lat % V == 0;
                                      p.out_vec = ptrs && c_fast % V == 0;
                                    } else {
                                      p.a_vec = p.out_vec = ptrs && (h * w) % V == 0;
                                    }
                                    launch_lateral_gemm(p, cl, conv_allows_tf32());
                                  });
  return grad_x;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(slowfast_fast, CUDA, m) {
  m.impl("lateral_concat", &cuda::lateral_concat_cuda);
  m.impl("lateral_concat_grad_input", &cuda::lateral_concat_grad_input_cuda);
}

}  // namespace slowfast_fast
