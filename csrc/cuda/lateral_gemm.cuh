// The lateral GEMM kernel shared by lateral_concat (forward) and lateral_concat_grad_input: one
// temporal (k,1,1) convolution computed as per-frame GEMMs.
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
//
// launch_lateral_gemm<T> is instantiated once per dtype, each in its own translation unit
// (lateral_gemm_<dtype>.cu), so that a parallel build compiles the kernels side by side; the
// extern declarations below keep every other file from instantiating them again.
#pragma once

#include "cuda_common.cuh"

namespace slowfast_fast {
namespace cuda {

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

extern template void launch_lateral_gemm<float>(const LateralGemmParams<float>&, bool, bool);
extern template void launch_lateral_gemm<double>(const LateralGemmParams<double>&, bool, bool);
extern template void launch_lateral_gemm<c10::Half>(const LateralGemmParams<c10::Half>&, bool, bool);
extern template void launch_lateral_gemm<c10::BFloat16>(const LateralGemmParams<c10::BFloat16>&, bool, bool);

}  // namespace cuda
}  // namespace slowfast_fast
