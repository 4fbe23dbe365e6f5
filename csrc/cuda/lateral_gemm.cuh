// The lateral GEMM kernel shared by lateral_concat (forward) and lateral_concat_grad_input: one
// temporal (k,1,1) convolution computed as per-frame GEMMs.
//
//   forward:     out[n, C_s + o, to, px] = epi(sum_{kt, c} W[o, c, kt] * x_fast[n, c, to*s - p + kt, px]);
//   grad_input:  gx[n, c, t, px] = sum_{kt, o : t = to*s - p + kt} W[o, c, kt] * scale[o] * g[n, o, to, px]
//                with g = grad_out[:, C_s:] (times the ReLU mask !(out[:, C_s:] <= 0) when given).
//
// (The forward's other half, out[:, :C_s] = x_slow, is a copy kernel of its own in lateral_concat.cu,
// so that it runs at copy bandwidth instead of at this GEMM's occupancy.)
//
// A block owns a 64-pixel x 64-output-channel tile of one (sample, output frame). Its reduction is
// one flat K loop over (tap, channel) pairs of the taps whose operand frame exists (a run of taps,
// found once per tile: frames the conv never reads are never loaded), in steps of 16 that cross tap
// boundaries, so a reduction of 8 channels per tap does not pad every step with zeros. Operands go
// through shared memory in the global tensor's own order (pixel-major for NCDHW, channel-major for
// NDHWC), each global access 16 bytes, else 8, else (2-byte types) 4, else one element wide. The A
// tiles (the activations: nearly all of the GEMM's bytes) are fetched with cp.async kStages - 1 steps
// ahead into a ring of shared buffers (k_loop_async); where cp.async cannot serve (a ReLU mask to
// apply, or 2-byte elements one at a time) they go through registers one step ahead
// (k_loop_registers). The weight tile is fetched one step ahead through registers in both. The
// accumulator tile is staged in shared memory so the epilogue writes along whichever dimension is
// contiguous in the output's memory format.
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
  int64_t red_ch;  // reduction channels: C_fast (forward) or C_lat (grad_input); k * red_ch < 2^31

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

  int64_t batch;
  int64_t num_pt;  // pixel tiles per frame
  int64_t num_jt;  // output-channel tiles
  // Elements per global access of a (and mask) and of out: kVec<T> (16 bytes), kVec<T> / 2 (8 bytes)
  // or 1. The host checked that every address of that width is aligned and that no access straddles
  // the edge of a tile's valid range (see access_width in lateral_concat.cu).
  int a_width;
  int out_width;
  // Whether a's tiles are fetched with cp.async into a ring of kStages<T> shared buffers: without a
  // ReLU mask to apply on the way (forward and grad_input without relu) and with accesses of at
  // least 4 bytes (cp.async's smallest), i.e. everything but 2-byte types at odd extents.
  bool a_async;
};

// Access widths (elements) a kernel handles for T: 16, 8 and, for 2-byte types, 4 bytes; else 1.
template <typename T>
constexpr int kW16 = kVec<T>;
template <typename T>
constexpr int kW8 = kVec<T> / 2 > 1 ? kVec<T> / 2 : 1;
template <typename T>
constexpr int kW4 = kVec<T> / 4 > 1 ? kVec<T> / 4 : 1;

// The A tiles' cp.async ring has kStages<T> slots (cuda_common.cuh). Shared memory per block (fp32
// NDHWC, the largest): 4 A tiles of 5 KB and two 4.5 KB B tiles, 30 KB; two blocks fit an SM many times.

// The taps of one output frame f whose operand frame exists, as flat-K rows: row kk of the
// reduction is channel kk % red_ch of tap j = kk / red_ch, which reads operand frame af0 + j with
// weight tap kt0 + j * kt_step; k_eff = count * red_ch rows in all.
//   forward:    af = f*s - p + kt in [0, T_fast): a run of consecutive taps (kt_step = 1).
//   grad_input: af = (f + p - kt) / s for the kt with s | (f + p - kt) and af in [0, T_slow): every
//               s-th tap, taken in increasing af (kt_step = -s).
struct TapRun {
  int64_t af0;
  int64_t kt0;
  int64_t kt_step;
  uint32_t k_eff;
};

template <typename T>
__device__ __forceinline__ TapRun tap_run(const LateralGemmParams<T>& p, int64_t f) {
  int64_t af0, kt0, kt_step, count;
  if (!p.transposed) {
    const int64_t base = f * p.stride - p.pad;
    const int64_t lo = base < 0 ? -base : 0;
    const int64_t hi = p.k < p.av.frames - base ? p.k : p.av.frames - base;
    af0 = base + lo;
    kt0 = lo;
    kt_step = 1;
    count = hi - lo;
  } else {
    const int64_t q = f + p.pad;  // >= 0
    const int64_t first = q - p.k + 1;
    const int64_t a_lo = first > 0 ? (first + p.stride - 1) / p.stride : 0;
    const int64_t a_hi = p.av.frames - 1 < q / p.stride ? p.av.frames - 1 : q / p.stride;
    af0 = a_lo;
    kt0 = q - p.stride * a_lo;
    kt_step = -p.stride;
    count = a_hi - a_lo + 1;
  }
  return TapRun{af0, kt0, kt_step, static_cast<uint32_t>(count > 0 ? count * p.red_ch : 0)};
}

// Elements of the A tile (reduction rows x pixels) in shared memory: As[kk][m] (pitch kLds) for
// NCDHW, As[m][kk] (pitch lda_row_major<T>()) for NDHWC.
template <typename T, bool CL>
constexpr int a_tile_elems() {
  return CL ? kBM * lda_row_major<T>() : kBK * kLds;
}

constexpr int kBTileElems = kBK * kLds;  // Bs[kk][j]

// kStages A tiles, then two B tiles (double-buffered); the accumulator tile is staged over them
// after the K loop.
template <typename T, bool CL>
constexpr int lateral_smem_bytes() {
  using acc_t = typename AccType<T>::type;
  constexpr int operands = (kStages<T> * a_tile_elems<T, CL>() + 2 * kBTileElems) * static_cast<int>(sizeof(T));
  constexpr int staged = kBM * kLdc * static_cast<int>(sizeof(acc_t));
  return operands > staged ? operands : staged;
}

// One thread's share of the A tile of rows [k0, k0 + kBK) x pixels [p0, p0 + kBM) of one output
// frame, in two phases (see ActTileLoader): load() issues the global loads into registers, zero
// outside the valid rows and pixels; store() applies the optional ReLU mask (grad_input) and writes
// each access unit to shared memory as one store of the same width; or in one, issue(), with
// cp.async. Units run along the global tensor's contiguous side (pixels for NCDHW, reduction
// channels for NDHWC), which is also the contiguous side of the tile in shared memory.
template <typename T, bool CL>
struct LateralATile {
  static constexpr int V = kW16<T>;
  static constexpr int V8 = kW8<T>;  // 1 for fp64: its 8-byte access is the element path
  static constexpr int V4 = kW4<T>;  // 2-byte types only, else 1
  static constexpr int kElems = kBK * kBM;

  template <int W>
  static constexpr int units_per_thread() {
    return (kElems / W + kThreads - 1) / kThreads;
  }
  static constexpr int kRegElems = units_per_thread<V>() * V;  // the widest path holds the most
  static_assert(kRegElems >= units_per_thread<1>() && kRegElems >= units_per_thread<V8>() * V8 &&
                    kRegElems >= units_per_thread<V4>() * V4,
                "register share holds every path's units");
  static_assert((CL ? kBK : kBM) % V == 0, "tile's contiguous side must hold whole 16-byte units");
  union Regs {
    uint4 raw[kRegElems * sizeof(T) / 16];
    T e[kRegElems];
  };
  Regs val, msk;

  // (row of the step, pixel) of unit u of width W.
  template <int W>
  __device__ __forceinline__ static void unit_coords(int u, int& kl, int& px) {
    constexpr int kRun = (CL ? kBK : kBM) / W;  // units along the contiguous side
    const int o = u / kRun;
    const int r = (u % kRun) * W;
    kl = CL ? r : o;
    px = CL ? o : r;
  }

  template <int W>
  __device__ __forceinline__ void load_units(const LateralGemmParams<T>& p, int64_t n, const TapRun& taps,
                                             uint32_t k0, int64_t p0) {
    using U = Unit<T, W>;
    const uint32_t red_ch = static_cast<uint32_t>(p.red_ch);
#pragma unroll
    for (int i = 0; i < units_per_thread<W>(); ++i) {
      const int u = threadIdx.x + i * kThreads;
      int kl, px;
      unit_coords<W>(u, kl, px);
      const uint32_t kk = k0 + static_cast<uint32_t>(kl);
      U v{}, m{};
      if (u < kElems / W && kk < taps.k_eff && p0 + px < p.av.hw) {
        const uint32_t j = kk / red_ch;
        const int64_t off = act_offset<CL>(p.av, n, kk - j * red_ch, taps.af0 + j, p0 + px);
        v = *reinterpret_cast<const U*>(p.a + off);
        if (p.mask != nullptr) m = *reinterpret_cast<const U*>(p.mask + off);
      }
      *reinterpret_cast<U*>(val.e + i * W) = v;
      *reinterpret_cast<U*>(msk.e + i * W) = m;
    }
  }

  template <int W>
  __device__ __forceinline__ void store_units(T* As, bool masked) const {
    using U = Unit<T, W>;
#pragma unroll
    for (int i = 0; i < units_per_thread<W>(); ++i) {
      const int u = threadIdx.x + i * kThreads;
      if (u >= kElems / W) continue;
      int kl, px;
      unit_coords<W>(u, kl, px);
      union {
        U raw;
        T e[W];
      } x;
      x.raw = *reinterpret_cast<const U*>(val.e + i * W);
      if (masked) {
#pragma unroll
        for (int e = 0; e < W; ++e) {
          if (!relu_passes(msk.e[i * W + e])) x.e[e] = T(0);
        }
      }
      *reinterpret_cast<U*>(As + (CL ? px * lda_row_major<T>() + kl : kl * kLds + px)) = x.raw;
    }
  }

  __device__ __forceinline__ void load(const LateralGemmParams<T>& p, int64_t n, const TapRun& taps, uint32_t k0,
                                       int64_t p0) {
    if (p.a_width == V) load_units<V>(p, n, taps, k0, p0);
    else if (V8 > 1 && p.a_width == V8) load_units<V8>(p, n, taps, k0, p0);
    else if (V4 > 1 && p.a_width == V4) load_units<V4>(p, n, taps, k0, p0);
    else load_units<1>(p, n, taps, k0, p0);
  }

  __device__ __forceinline__ void store(T* As, bool masked, int width) const {
    if (width == V) store_units<V>(As, masked);
    else if (V8 > 1 && width == V8) store_units<V8>(As, masked);
    else if (V4 > 1 && width == V4) store_units<V4>(As, masked);
    else store_units<1>(As, masked);
  }

  // The asynchronous alternative to load() + store() (p.a_async): this thread's units of the tile
  // go straight to shared memory with cp.async (zero-filled outside the valid rows and pixels), in
  // the cp.async group the caller commits next.
  template <int W>
  __device__ __forceinline__ static void issue_units(const LateralGemmParams<T>& p, int64_t n, const TapRun& taps,
                                                     uint32_t k0, int64_t p0, T* As) {
    const uint32_t red_ch = static_cast<uint32_t>(p.red_ch);
#pragma unroll
    for (int i = 0; i < units_per_thread<W>(); ++i) {
      const int u = threadIdx.x + i * kThreads;
      if (u >= kElems / W) continue;
      int kl, px;
      unit_coords<W>(u, kl, px);
      const uint32_t kk = k0 + static_cast<uint32_t>(kl);
      const bool valid = kk < taps.k_eff && p0 + px < p.av.hw;
      const T* src = p.a;
      if (valid) {
        const uint32_t j = kk / red_ch;
        src = p.a + act_offset<CL>(p.av, n, kk - j * red_ch, taps.af0 + j, p0 + px);
      }
      cp_async<W * static_cast<int>(sizeof(T))>(As + (CL ? px * lda_row_major<T>() + kl : kl * kLds + px), src,
                                                valid);
    }
  }

  __device__ __forceinline__ static void issue(const LateralGemmParams<T>& p, int64_t n, const TapRun& taps,
                                               uint32_t k0, int64_t p0, T* As) {
    // The host sets a_async only for widths of at least 4 bytes.
    if (p.a_width == V) issue_units<V>(p, n, taps, k0, p0, As);
    else if (V8 > 1 && p.a_width == V8) issue_units<V8>(p, n, taps, k0, p0, As);
    else if constexpr (V4 > 1) issue_units<V4>(p, n, taps, k0, p0, As);
    else if constexpr (sizeof(T) >= 4) issue_units<1>(p, n, taps, k0, p0, As);
  }
};

template <typename T, typename acc_t>
__device__ __forceinline__ T epilogue(const LateralGemmParams<T>& p, acc_t v, int64_t oc) {
  if (p.scale != nullptr && !p.transposed) v *= static_cast<acc_t>(p.scale[oc]);
  if (p.shift != nullptr) v += static_cast<acc_t>(p.shift[oc]);
  if (p.relu && v < acc_t(0)) v = acc_t(0);  // NaN stays NaN, as torch.relu
  return static_cast<T>(v);
}

// Writes the staged tile along the output's contiguous dimension (pixels for NCDHW, Cs staged by
// column: Cs[j][m]; output channels for NDHWC, Cs[m][j]) in units of W elements.
template <typename T, bool CL, int W, typename acc_t>
__device__ __forceinline__ void store_tile_units(const LateralGemmParams<T>& p, const acc_t* Cs, int64_t n,
                                                 int64_t f, int64_t p0, int64_t j0) {
  constexpr int kRun = (CL ? kBN : kBM) / W;
  for (int u = threadIdx.x; u < kBM * kBN / W; u += kThreads) {
    const int o = u / kRun;
    const int r = (u % kRun) * W;
    const int m = CL ? o : r;
    const int j = CL ? r : o;
    if (p0 + m >= p.ov.hw || j0 + j >= p.out_ch) continue;  // a unit is wholly in range or wholly out
    union {
      Unit<T, W> raw;
      T e[W];
    } val;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const int cs = CL ? m * kLdc + j + e : j * kLdc + m + e;
      val.e[e] = epilogue(p, Cs[cs], j0 + (CL ? j + e : j));
    }
    store_global(reinterpret_cast<Unit<T, W>*>(p.out + act_offset<CL>(p.ov, n, j0 + j, f, p0 + m)), val.raw);
  }
}

template <typename T, bool CL, typename acc_t>
__device__ __forceinline__ void store_tile(const LateralGemmParams<T>& p, const acc_t* Cs, int64_t n, int64_t f,
                                           int64_t p0, int64_t j0) {
  constexpr int V = kW16<T>, V8 = kW8<T>, V4 = kW4<T>;
  if (p.out_width == V) store_tile_units<T, CL, V>(p, Cs, n, f, p0, j0);
  else if (V8 > 1 && p.out_width == V8) store_tile_units<T, CL, V8>(p, Cs, n, f, p0, j0);
  else if (V4 > 1 && p.out_width == V4) store_tile_units<T, CL, V4>(p, Cs, n, f, p0, j0);
  else store_tile_units<T, CL, 1>(p, Cs, n, f, p0, j0);
}

// One thread's share of the weight tile Bs[kk][j] for flat-K rows [k0, k0 + kBK), in the same two
// phases as LateralATile. forward: W[o = j, c_fast = c, kt]; grad_input: W[o = c, c_fast = j, kt] *
// scale[o], with (c, kt) the row's channel and tap.
template <typename T>
struct WeightTileLoader {
  static constexpr int kPerThread = kBK * kBN / kThreads;
  static_assert(kBK * kBN % kThreads == 0, "whole weight tile per block");
  T w[kPerThread];
  T s[kPerThread];

  __device__ __forceinline__ void load(const LateralGemmParams<T>& p, const TapRun& taps, uint32_t k0, int64_t j0) {
    const uint32_t red_ch = static_cast<uint32_t>(p.red_ch);
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int u = threadIdx.x + i * kThreads;
      const uint32_t kk = k0 + static_cast<uint32_t>(u / kBN);
      const int j = u % kBN;
      w[i] = T(0);
      s[i] = T(1);
      if (kk < taps.k_eff && j0 + j < p.out_ch) {
        const uint32_t tap = kk / red_ch;
        const int64_t c = kk - tap * red_ch;
        const int64_t kt = taps.kt0 + static_cast<int64_t>(tap) * taps.kt_step;
        const int64_t o = p.transposed ? c : j0 + j;
        const int64_t cf = p.transposed ? j0 + j : c;
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

// The K loop with cp.async (p.a_async): A tiles are fetched kStages - 1 steps ahead into a ring of
// shared buffers, the weight tile one step ahead through registers into one of two shared buffers;
// one barrier per step. Step i's A tile is complete for this thread after wait_group(kStages - 2)
// (groups 0..i of the (kStages - 1) + i committed so far) and for the block after the barrier; the
// ring slot refilled after that barrier, (i + kStages - 1) % kStages, was last read by step i - 1's
// MMA, which every thread finished before it. The B buffer step i writes, i % 2, was last read by
// step i - 2's MMA, before step i - 1's barrier.
template <typename T, bool CL, typename Mma>
__device__ __forceinline__ void k_loop_async(const LateralGemmParams<T>& p, Mma& mma, T* As, T* Bs, int64_t n,
                                             const TapRun& taps, int64_t p0, int64_t j0) {
  constexpr int S = kStages<T>;
  constexpr int kA = a_tile_elems<T, CL>();
  const uint32_t steps = (taps.k_eff + kBK - 1) / kBK;
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (static_cast<uint32_t>(s) < steps) LateralATile<T, CL>::issue(p, n, taps, s * kBK, p0, As + s * kA);
    cp_async_commit();  // empty groups too: the group count stays one per step
  }
  WeightTileLoader<T> w;
  if (steps > 0) w.load(p, taps, 0, j0);
  for (uint32_t i = 0; i < steps; ++i) {
    T* b = Bs + (i % 2) * kBTileElems;
    w.store(b);
    cp_async_wait<S - 2>();
    __syncthreads();
    const uint32_t ahead = i + S - 1;
    if (ahead < steps) LateralATile<T, CL>::issue(p, n, taps, ahead * kBK, p0, As + (ahead % S) * kA);
    cp_async_commit();
    if (i + 1 < steps) w.load(p, taps, (i + 1) * kBK, j0);
    mma.step(As + (i % S) * kA, b);
  }
  cp_async_wait<0>();  // only empty groups can be left; none outlives the tile
}

// The K loop through registers (a ReLU mask to apply, or 2-byte elements one at a time): the next
// step's loads are in flight during the current step's MMA; one A and one B buffer, two barriers.
template <typename T, bool CL, typename Mma>
__device__ __forceinline__ void k_loop_registers(const LateralGemmParams<T>& p, Mma& mma, T* As, T* Bs, int64_t n,
                                                 const TapRun& taps, int64_t p0, int64_t j0) {
  const bool masked = p.mask != nullptr;
  LateralATile<T, CL> a;
  WeightTileLoader<T> w;
  if (taps.k_eff > 0) {
    a.load(p, n, taps, 0, p0);
    w.load(p, taps, 0, j0);
  }
  for (uint32_t k0 = 0; k0 < taps.k_eff; k0 += kBK) {
    a.store(As, masked, p.a_width);
    w.store(Bs);
    __syncthreads();
    const uint32_t next = k0 + kBK;
    if (next < taps.k_eff) {
      a.load(p, n, taps, next, p0);
      w.load(p, taps, next, j0);
    }
    mma.step(As, Bs);
    __syncthreads();
  }
}

template <typename T, bool CL, bool kUseWmma>
__global__ void __launch_bounds__(kThreads, 2) lateral_gemm_kernel(const LateralGemmParams<T> p) {
  using Mma = BlockMma<T, kUseWmma, CL>;
  using acc_t = typename Mma::acc_t;
  __shared__ __align__(128) unsigned char smem[lateral_smem_bytes<T, CL>()];
  SLOWFAST_FAST_SHARED_POISON(smem);
  T* As = reinterpret_cast<T*>(smem);                       // ring of A tiles: NCDHW As[kk][m], NDHWC As[m][kk]
  T* Bs = As + kStages<T> * a_tile_elems<T, CL>();  // two B tiles Bs[kk][j]: reduction row x output channel
  acc_t* Cs = reinterpret_cast<acc_t*>(smem);

  const int64_t frames_out = p.ov.frames;
  const int64_t num_tiles = p.batch * frames_out * p.num_pt * p.num_jt;
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    // Output-channel tiles vary fastest so blocks sharing an input tile run together (L2 reuse).
    const int64_t jt = tile % p.num_jt;
    const int64_t pt = (tile / p.num_jt) % p.num_pt;
    const int64_t nf = tile / (p.num_jt * p.num_pt);
    const int64_t n = nf / frames_out;
    const int64_t f = nf % frames_out;
    const int64_t p0 = pt * kBM;
    const int64_t j0 = jt * kBN;
    const TapRun taps = tap_run(p, f);

    Mma mma;
    mma.zero();
    if (p.a_async) k_loop_async<T, CL>(p, mma, As, Bs, n, taps, p0, j0);
    else k_loop_registers<T, CL>(p, mma, As, Bs, n, taps, p0, j0);
    __syncthreads();  // the last MMA's reads before Cs overwrites the operands
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
      if (tc) SLOWFAST_FAST_LAUNCH(grid, kThreads, stream, lateral_gemm_kernel<T, true, true>)(p);
      else SLOWFAST_FAST_LAUNCH(grid, kThreads, stream, lateral_gemm_kernel<T, true, false>)(p);
    } else {
      if (tc) SLOWFAST_FAST_LAUNCH(grid, kThreads, stream, lateral_gemm_kernel<T, false, true>)(p);
      else SLOWFAST_FAST_LAUNCH(grid, kThreads, stream, lateral_gemm_kernel<T, false, false>)(p);
    }
  } else {
    constexpr bool kTc = !std::is_same_v<T, double>;
    if (channels_last) SLOWFAST_FAST_LAUNCH(grid, kThreads, stream, lateral_gemm_kernel<T, true, kTc>)(p);
    else SLOWFAST_FAST_LAUNCH(grid, kThreads, stream, lateral_gemm_kernel<T, false, kTc>)(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

extern template void launch_lateral_gemm<float>(const LateralGemmParams<float>&, bool, bool);
extern template void launch_lateral_gemm<double>(const LateralGemmParams<double>&, bool, bool);
extern template void launch_lateral_gemm<c10::Half>(const LateralGemmParams<c10::Half>&, bool, bool);
extern template void launch_lateral_gemm<c10::BFloat16>(const LateralGemmParams<c10::BFloat16>&, bool, bool);

}  // namespace cuda
}  // namespace slowfast_fast
