// CUDA lateral_concat (forward) and lateral_concat_grad_input. Both are one temporal (k,1,1)
// convolution computed as per-frame GEMMs, so they share one kernel:
//
//   forward:     out[n, C_s + o, to, px] = epi(sum_{kt, c} W[o, c, kt] * x_fast[n, c, to*s - p + kt, px])
//                and out[n, :C_s, to, px] = x_slow[n, :, to, px];
//   grad_input:  gx[n, c, t, px] = sum_{kt, o : t = to*s - p + kt} W[o, c, kt] * scale[o] * g[n, o, to, px]
//                with g = grad_out[:, C_s:] (times the ReLU mask !(out[:, C_s:] <= 0) when given).
//
// The x_slow half of the forward (about 80% of its bytes at SlowFast's fusion points) is a strided
// row copy, launched before the GEMM as its own kernel (concat_copy_kernel, below): it needs no
// shared memory and few registers, so it runs at full occupancy with 16-byte accesses wherever the
// alignment allows, instead of at the GEMM's occupancy. This file checks the inputs, runs the copy
// and fills the GEMM's parameters; the GEMM is in lateral_gemm.cuh, compiled once per dtype in
// lateral_gemm_<dtype>.cu.
#include "lateral_gemm.cuh"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <initializer_list>
#include <limits>

#include "common.h"

namespace slowfast_fast {
namespace cuda {
namespace {

void check_cuda_tensor(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(on_kernel_device(t) && t.device() == like.device(), name, " must be on ", like.device(), ", got ",
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

// Elements per global access of a GEMM operand or output along its contiguous run: 16 bytes when
// the base address (`addr`, the OR of every pointer accessed this way) and every extent the offsets
// are built from (`extents`: H*W for NCDHW; channel counts and offsets for NDHWC) are multiples of
// it, so every access is aligned and none straddles a frame or a channel range; else 8 bytes; else
// (2-byte types) 4 bytes; else one element.
template <typename T>
int access_width(std::uintptr_t addr, std::initializer_list<int64_t> extents) {
  for (const int w : {kVec<T>, kVec<T> / 2, kVec<T> / 4}) {
    if (w < 2 || addr % (static_cast<std::uintptr_t>(w) * sizeof(T)) != 0) continue;
    if (std::all_of(extents.begin(), extents.end(), [w](int64_t e) { return e % w == 0; })) return w;
  }
  return 1;
}

// The x_slow copy: `rows` rows of `len` units U, row strides ss (source) and ds (destination) in
// units. A block tile is kCopyTile units: several whole rows when rows are short (NDHWC: one
// pixel's C_s channels), else a chunk of one row (NCDHW: one sample's C_s*T*H*W block). Every thread
// issues its kCopyIlp loads before its first store.
constexpr int kCopyThreads = 256;
constexpr int kCopyIlp = 4;
constexpr uint32_t kCopyTile = kCopyThreads * kCopyIlp;

struct CopyGeometry {
  int64_t rows;
  int64_t len;
  int64_t ss;
  int64_t ds;
  uint32_t rows_per_tile;   // >= 1
  uint32_t chunks_per_row;  // >= 1, and 1 whenever rows_per_tile > 1
  uint32_t tiles;
  uint32_t len_div;  // min(len, kCopyTile): u / len_div is the row of unit u < kCopyTile in its tile
};

template <typename U>
__global__ void __launch_bounds__(kCopyThreads, 4)
    concat_copy_kernel(const U* __restrict__ src, U* __restrict__ dst, const CopyGeometry g) {
  for (uint32_t t = blockIdx.x; t < g.tiles; t += gridDim.x) {
    const uint32_t group = t / g.chunks_per_row;
    const uint32_t chunk = t - group * g.chunks_per_row;
    const int64_t row0 = static_cast<int64_t>(group) * g.rows_per_tile;
    const int64_t col0 = static_cast<int64_t>(chunk) * kCopyTile;
    U v[kCopyIlp];
    int64_t to[kCopyIlp];
    bool in[kCopyIlp];
#pragma unroll
    for (int i = 0; i < kCopyIlp; ++i) {
      const uint32_t u = threadIdx.x + i * kCopyThreads;
      const uint32_t r = u / g.len_div;
      const int64_t row = row0 + r;
      const int64_t col = col0 + (u - r * g.len_div);
      in[i] = r < g.rows_per_tile && row < g.rows && col < g.len;
      if (in[i]) v[i] = src[row * g.ss + col];
      to[i] = row * g.ds + col;
    }
#pragma unroll
    for (int i = 0; i < kCopyIlp; ++i) {
      if (in[i]) dst[to[i]] = v[i];
    }
  }
}

template <int kBytes>
void launch_copy(const void* src, void* dst, int64_t rows, int64_t len, int64_t ss, int64_t ds,
                 cudaStream_t stream) {
  using U = typename UnitType<kBytes>::type;
  if (rows == 0 || len == 0) return;
  const int64_t rows_per_tile = std::max<int64_t>(1, kCopyTile / len);
  const int64_t chunks_per_row = ceil_div(len, kCopyTile);
  const int64_t tiles = ceil_div(rows, rows_per_tile) * chunks_per_row;
  TORCH_CHECK(tiles <= std::numeric_limits<int32_t>::max(), "x_slow is too large for the copy's 32-bit tiling");
  const CopyGeometry g{rows,
                       len,
                       ss,
                       ds,
                       static_cast<uint32_t>(rows_per_tile),
                       static_cast<uint32_t>(chunks_per_row),
                       static_cast<uint32_t>(tiles),
                       static_cast<uint32_t>(std::min<int64_t>(len, kCopyTile))};
  SLOWFAST_FAST_LAUNCH(grid_size(tiles), kCopyThreads, stream, concat_copy_kernel<U>)(static_cast<const U*>(src),
                                                                        static_cast<U*>(dst), g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Copies rows of `len` elements of T (row strides ss and ds, in elements) from src to dst: the body
// of every row in the widest unit (16, 8, 4 or 2 bytes, at least one element) that both base
// addresses and, with more than one row, both row strides allow; the last len % unit elements of
// every row in a second launch, one element per access.
template <typename T>
void copy_rows(const T* src, T* dst, int64_t rows, int64_t len, int64_t ss, int64_t ds, cudaStream_t stream) {
  constexpr int64_t E = sizeof(T);
  std::uintptr_t bits = address_bits(src) | address_bits(dst);
  if (rows > 1) bits |= static_cast<std::uintptr_t>(ss * E) | static_cast<std::uintptr_t>(ds * E);
  int64_t unit = 16;
  while (unit > E && (bits % static_cast<std::uintptr_t>(unit) != 0 || len * E < unit)) unit /= 2;
  const int64_t per = unit / E;  // elements per unit
  const int64_t body = len / per;
  // With one row the strides are never used (row 0), so their truncation below is harmless.
  switch (unit) {
    case 16: launch_copy<16>(src, dst, rows, body, ss / per, ds / per, stream); break;
    case 8: launch_copy<8>(src, dst, rows, body, ss / per, ds / per, stream); break;
    case 4: launch_copy<4>(src, dst, rows, body, ss / per, ds / per, stream); break;
    default: launch_copy<2>(src, dst, rows, body, ss / per, ds / per, stream); break;
  }
  const int64_t tail = len - body * per;
  if (tail > 0) launch_copy<static_cast<int>(E)>(src + body * per, dst + body * per, rows, tail, ss, ds, stream);
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
  // Only the batch and C_slow may be 0 (as in the Python checks: the reference refuses the rest).
  TORCH_CHECK(c_fast >= 1 && c_lat >= 1, "the lateral conv needs channels: C_fast=", c_fast, ", C_lat=", c_lat);
  TORCH_CHECK(t_fast >= 1, "x_fast has no frames (T_fast=0)");
  TORCH_CHECK(h >= 1 && w >= 1, "frames must have pixels, got H x W = ", h, " x ", w);
  check_conv_geometry(t_fast, k, stride, padding, t_slow, "x_slow");

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

  TORCH_CHECK(k * c_fast <= std::numeric_limits<int32_t>::max(),
              "k * C_fast is too large for the GEMM's 32-bit K index");
  const int64_t hw = h * w;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xs.scalar_type(), "lateral_concat_cuda", [&] {
    using T = scalar_t;
    if (c_slow > 0) {
      // NCDHW: one row per sample (its C_s*T*H*W block); NDHWC: one row per pixel (its C_s channels).
      if (cl) copy_rows(xs.data_ptr<T>(), out.data_ptr<T>(), n * t_slow * hw, c_slow, c_slow, c_slow + c_lat, stream);
      else copy_rows(xs.data_ptr<T>(), out.data_ptr<T>(), n, c_slow * t_slow * hw, c_slow * t_slow * hw,
                     (c_slow + c_lat) * t_slow * hw, stream);
    }
    LateralGemmParams<T> p{};
    p.a = xf.data_ptr<T>();
    p.mask = nullptr;
    p.av = ActView{c_fast, 0, t_fast, hw};
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
    p.ov = ActView{c_slow + c_lat, c_slow, t_slow, hw};
    p.out_ch = c_lat;
    p.batch = n;
    p.num_pt = ceil_div(hw, kBM);
    p.num_jt = ceil_div(c_lat, kBN);  // 0 without lateral channels: no GEMM launch
    if (cl) {
      p.a_width = access_width<T>(address_bits(p.a), {c_fast});
      p.out_width = access_width<T>(address_bits(p.out), {c_slow + c_lat, c_slow});
    } else {
      p.a_width = access_width<T>(address_bits(p.a), {hw});
      p.out_width = access_width<T>(address_bits(p.out), {hw});
    }
    p.a_async = p.a_width * sizeof(T) >= 4;
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
  TORCH_CHECK(k * c_lat <= std::numeric_limits<int32_t>::max(), "k * C_lat is too large for the GEMM's 32-bit K index");
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
                                    p.batch = n;
                                    p.num_pt = ceil_div(h * w, kBM);
                                    p.num_jt = ceil_div(c_fast, kBN);
                                    const std::uintptr_t a_bits = address_bits(p.a) | address_bits(p.mask);
                                    if (cl) {
                                      p.a_width = access_width<T>(a_bits, {c_tot, c_lat});
                                      p.out_width = access_width<T>(address_bits(p.out), {c_fast});
                                    } else {
                                      p.a_width = access_width<T>(a_bits, {h * w});
                                      p.out_width = access_width<T>(address_bits(p.out), {h * w});
                                    }
                                    p.a_async = p.mask == nullptr && p.a_width * sizeof(T) >= 4;
                                    launch_lateral_gemm(p, cl, conv_allows_tf32());
                                  });
  return grad_x;
}

}  // namespace
}  // namespace cuda

SLOWFAST_FAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("lateral_concat", &cuda::lateral_concat_cuda);
  m.impl("lateral_concat_grad_input", &cuda::lateral_concat_grad_input_cuda);
}

}  // namespace slowfast_fast
