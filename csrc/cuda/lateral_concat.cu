// CUDA lateral_concat (forward) and lateral_concat_grad_input. Both are one temporal (k,1,1)
// convolution computed as per-frame GEMMs, so they share one kernel:
//
//   forward:     out[n, C_s + o, to, px] = epi(sum_{kt, c} W[o, c, kt] * x_fast[n, c, to*s - p + kt, px])
//                and, in the same launch, out[n, :C_s, to, px] = x_slow[n, :, to, px];
//   grad_input:  gx[n, c, t, px] = sum_{kt, o : t = to*s - p + kt} W[o, c, kt] * scale[o] * g[n, o, to, px]
//                with g = grad_out[:, C_s:] (times the ReLU mask out[:, C_s:] > 0 when given).
//
// A block owns a 64-pixel x 64-output-channel tile of one (sample, output frame); it loops over
// the k taps, skipping taps whose input frame lies in the padding (so frames the conv never reads
// are never loaded), and over 16-channel chunks of the reduction. Operands go through shared
// memory; the accumulator tile is staged in shared memory so the epilogue writes along whichever
// dimension is contiguous in the output's memory format.
#include "cuda_common.cuh"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common.h"

namespace slowfast_fast {
namespace cuda {
namespace {

template <typename T>
struct LateralGemmParams {
  const T* a;     // reduction operand: x_fast (forward) or grad_out (grad_input)
  const T* mask;  // ReLU mask in a's view (grad_input with relu), else nullptr
  ActView av;
  int64_t red_ch;  // reduction channels: C_fast (forward) or C_lat (grad_input)

  const T* weight;  // (C_lat, C_fast, k) contiguous
  const T* scale;   // forward: epilogue multiplier; grad_input: folded into the weight tile
  const T* shift;
  bool relu;
  int64_t c_fast;
  int64_t k;
  int64_t stride;
  int64_t pad;
  bool transposed;  // grad_input: output frames are the conv's input frames

  T* out;
  ActView ov;
  int64_t out_ch;

  const T* slow;  // forward: x_slow, copied into out[:, :C_s]; else nullptr
  int64_t c_slow;
  int64_t slow_share;  // x_slow channels copied by each output-channel tile

  int64_t batch;
  int64_t num_pt;  // pixel tiles per frame
  int64_t num_jt;  // output-channel tiles
  bool a_vec;
  bool out_vec;
  bool slow_vec;
};

// The x_slow part of the concat for this block's pixels: channels [jt*share, (jt+1)*share).
template <typename T, bool CL>
__device__ void copy_slow(const LateralGemmParams<T>& p, int64_t n, int64_t f, int64_t p0, int64_t jt) {
  const int64_t c_begin = jt * p.slow_share;
  const int64_t c_end = std::min(p.c_slow, c_begin + p.slow_share);
  if (c_begin >= c_end) return;
  const int64_t hw = p.ov.hw;
  const int64_t t_s = p.ov.frames;
  const uint32_t npx = static_cast<uint32_t>(std::min<int64_t>(kBM, hw - p0));
  const uint32_t nch = static_cast<uint32_t>(c_end - c_begin);
  int64_t src, dst, ss, ds;
  uint32_t rows, len;
  if (CL) {  // rows are pixels, runs are channels
    src = ((n * t_s + f) * hw + p0) * p.c_slow + c_begin;
    dst = ((n * t_s + f) * hw + p0) * p.ov.ctot + c_begin;
    ss = p.c_slow;
    ds = p.ov.ctot;
    rows = npx;
    len = nch;
  } else {  // rows are channels, runs are pixels
    src = ((n * p.c_slow + c_begin) * t_s + f) * hw + p0;
    dst = ((n * p.ov.ctot + c_begin) * t_s + f) * hw + p0;
    ss = t_s * hw;
    ds = t_s * hw;
    rows = nch;
    len = npx;
  }
  if (p.slow_vec) {
    constexpr int V = kVec<T>;
    copy_rows<uint4, kThreads>(reinterpret_cast<uint4*>(p.out + dst), ds / V,
                               reinterpret_cast<const uint4*>(p.slow + src), ss / V, rows, len / V);
  } else {
    copy_rows<T, kThreads>(p.out + dst, ds, p.slow + src, ss, rows, len);
  }
}

template <typename T, typename acc_t>
__device__ __forceinline__ T epilogue(const LateralGemmParams<T>& p, acc_t v, int64_t oc) {
  if (p.scale != nullptr && !p.transposed) v *= static_cast<acc_t>(p.scale[oc]);
  if (p.shift != nullptr) v += static_cast<acc_t>(p.shift[oc]);
  if (p.relu && v < acc_t(0)) v = acc_t(0);  // NaN stays NaN, as torch.relu
  return static_cast<T>(v);
}

// Writes the staged tile along the output's contiguous dimension: pixels for NCDHW (Cs staged by
// column: Cs[j][m]), output channels for NDHWC (Cs[m][j]).
template <typename T, bool CL, typename acc_t>
__device__ void store_tile(const LateralGemmParams<T>& p, const acc_t* Cs, int64_t n, int64_t f, int64_t p0,
                           int64_t j0) {
  constexpr int V = kVec<T>;
  const int64_t hw = p.ov.hw;
  if (p.out_vec) {
    constexpr int kRun = CL ? kBN : kBM;
    constexpr int kUnits = kRun / V;
    for (int u = threadIdx.x; u < kBM * kBN / V; u += kThreads) {
      const int o = u / kUnits;
      const int r = (u % kUnits) * V;
      const int m = CL ? o : r;
      const int j = CL ? r : o;
      if (p0 + m >= hw || j0 + j >= p.out_ch) continue;  // out_vec: the whole vector is in range
      union {
        uint4 raw;
        T e[V];
      } val;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const int cs = CL ? m * kLdc + j + e : j * kLdc + m + e;
        val.e[e] = epilogue(p, Cs[cs], j0 + (CL ? j + e : j));
      }
      *reinterpret_cast<uint4*>(p.out + act_offset<CL>(p.ov, n, j0 + j, f, p0 + m)) = val.raw;
    }
  } else {
    constexpr int kRun = CL ? kBN : kBM;
    for (int u = threadIdx.x; u < kBM * kBN; u += kThreads) {
      const int o = u / kRun;
      const int r = u % kRun;
      const int m = CL ? o : r;
      const int j = CL ? r : o;
      if (p0 + m >= hw || j0 + j >= p.out_ch) continue;
      const int cs = CL ? m * kLdc + j : j * kLdc + m;
      p.out[act_offset<CL>(p.ov, n, j0 + j, f, p0 + m)] = epilogue(p, Cs[cs], j0 + j);
    }
  }
}

// One thread's share of the weight tile Bs[c][j] for tap kt, in the same two phases as
// ActTileLoader. forward: W[o = j, c_fast = c]; grad_input: W[o = c, c_fast = j] * scale[o].
template <typename T>
struct WeightTileLoader {
  static constexpr int kPerThread = kBK * kBN / kThreads;
  static_assert(kBK * kBN % kThreads == 0, "whole weight tile per block");
  T w[kPerThread];
  T s[kPerThread];

  __device__ __forceinline__ void load(const LateralGemmParams<T>& p, int64_t kt, int64_t c0, int64_t j0) {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int u = threadIdx.x + i * kThreads;
      const int c = u / kBN;
      const int j = u % kBN;
      w[i] = T(0);
      s[i] = T(1);
      if (c0 + c < p.red_ch && j0 + j < p.out_ch) {
        const int64_t o = p.transposed ? c0 + c : j0 + j;
        const int64_t cf = p.transposed ? j0 + j : c0 + c;
        w[i] = p.weight[(o * p.c_fast + cf) * p.k + kt];
        if (p.transposed && p.scale != nullptr) s[i] = p.scale[o];
      }
    }
  }

  __device__ __forceinline__ void store(T* Bs) const {
    using acc_t = typename AccType<T>::type;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int u = threadIdx.x + i * kThreads;
      Bs[(u / kBN) * kLds + u % kBN] = static_cast<T>(static_cast<acc_t>(w[i]) * static_cast<acc_t>(s[i]));
    }
  }
};

// First tap >= kt whose reduction-operand frame exists, with that frame in af; p.k when none.
template <typename T>
__device__ __forceinline__ int64_t next_tap(const LateralGemmParams<T>& p, int64_t f, int64_t kt, int64_t& af) {
  for (; kt < p.k; ++kt) {
    if (!p.transposed) {
      af = f * p.stride - p.pad + kt;
      if (af >= 0 && af < p.av.frames) return kt;
    } else {
      const int64_t num = f + p.pad - kt;
      if (num >= 0 && num % p.stride == 0 && num / p.stride < p.av.frames) {
        af = num / p.stride;
        return kt;
      }
    }
  }
  return kt;
}

template <typename T, bool CL, bool kUseWmma>
__global__ void __launch_bounds__(kThreads, 2) lateral_gemm_kernel(const LateralGemmParams<T> p) {
  using Mma = BlockMma<T, kUseWmma>;
  using acc_t = typename Mma::acc_t;
  __shared__ __align__(128) unsigned char smem[tile_smem_bytes<T>()];
  T* As = reinterpret_cast<T*>(smem);  // As[c][m]: reduction channel x pixel
  T* Bs = As + kBK * kLds;             // Bs[c][j]: reduction channel x output channel
  acc_t* Cs = reinterpret_cast<acc_t*>(smem);

  const int64_t frames_out = p.ov.frames;
  const int64_t num_tiles = p.batch * frames_out * p.num_pt * p.num_jt;
  const bool masked = p.mask != nullptr;
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    // Output-channel tiles vary fastest so blocks sharing an input tile run together (L2 reuse).
    const int64_t jt = tile % p.num_jt;
    const int64_t pt = (tile / p.num_jt) % p.num_pt;
    const int64_t nf = tile / (p.num_jt * p.num_pt);
    const int64_t n = nf / frames_out;
    const int64_t f = nf % frames_out;
    const int64_t p0 = pt * kBM;
    const int64_t j0 = jt * kBN;

    if (p.slow != nullptr) copy_slow<T, CL>(p, n, f, p0, jt);

    // Steps are (tap, 16-channel chunk) pairs; taps whose frame is padding are never loaded. The
    // next step's loads are issued before the current step's MMA (one shared buffer, two barriers).
    Mma mma;
    mma.zero();
    ActTileLoader<T, CL, kBK, kBM, kThreads> a;
    WeightTileLoader<T> w;
    int64_t af = 0;
    int64_t kt = p.red_ch > 0 ? next_tap(p, f, 0, af) : p.k;
    int64_t c0 = 0;
    if (kt < p.k) {
      a.load(p.a, p.mask, p.av, n, af, c0, p.red_ch, p0, p.a_vec);
      w.load(p, kt, c0, j0);
    }
    while (kt < p.k) {
      a.store(As, kLds, 1, masked, p.a_vec);
      w.store(Bs);
      __syncthreads();
      int64_t next_af = af, next_kt = kt, next_c0 = c0 + kBK;
      if (next_c0 >= p.red_ch) {
        next_c0 = 0;
        next_kt = next_tap(p, f, kt + 1, next_af);
      }
      if (next_kt < p.k) {
        a.load(p.a, p.mask, p.av, n, next_af, next_c0, p.red_ch, p0, p.a_vec);
        w.load(p, next_kt, next_c0, j0);
      }
      mma.step(As, Bs);
      __syncthreads();
      kt = next_kt;
      c0 = next_c0;
      af = next_af;
    }
    mma.template store<!CL>(Cs);
    __syncthreads();
    store_tile<T, CL>(p, Cs, n, f, p0, j0);
    __syncthreads();
  }
}

template <typename T>
void launch_lateral_gemm(const LateralGemmParams<T>& p, bool channels_last, bool allow_tf32) {
  const int64_t tiles = p.batch * p.ov.frames * p.num_pt * p.num_jt;
  if (tiles == 0) return;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(grid_size(tiles));
  const bool tc = use_tensor_cores<T>(allow_tf32);
  // Each layout gets one kernel per dtype (two for fp32: TF32 or not); fp16/bf16 always use wmma.
  if constexpr (std::is_same_v<T, float>) {
    if (channels_last) {
      if (tc) lateral_gemm_kernel<T, true, true><<<grid, kThreads, 0, stream>>>(p);
      else lateral_gemm_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(p);
    } else {
      if (tc) lateral_gemm_kernel<T, false, true><<<grid, kThreads, 0, stream>>>(p);
      else lateral_gemm_kernel<T, false, false><<<grid, kThreads, 0, stream>>>(p);
    }
  } else {
    constexpr bool kTc = !std::is_same_v<T, double>;
    if (channels_last) lateral_gemm_kernel<T, true, kTc><<<grid, kThreads, 0, stream>>>(p);
    else lateral_gemm_kernel<T, false, kTc><<<grid, kThreads, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

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
