// The two passes of lateral_concat_grad_weight (see lateral_concat_grad_weight.cu for the math):
// the partial-sum kernel, the reduction kernel, and grad_weight_impl<T>, which sizes the splits and
// launches both. grad_weight_impl<T> is instantiated once per dtype, each in its own translation unit
// (grad_weight_<dtype>.cu), so that a parallel build compiles the kernels side by side; the extern
// declarations below keep every other file from instantiating them again.
#pragma once

#include "cuda_common.cuh"

#include <ATen/ops/empty.h>

#include <limits>
#include <optional>

namespace slowfast_fast {
namespace cuda {

// The SM count splits are sized for under deterministic algorithms (as the Triton backend's).
constexpr int kDeterministicSms = 132;

template <typename T, typename acc_t>
struct GradWeightParams {
  const T* g;     // grad_out
  const T* mask;  // forward output (ReLU mask) or nullptr
  ActView gv;     // lateral channels of grad_out: coff = C_s
  const T* x;     // x_fast
  ActView xv;
  int64_t c_lat;
  int64_t c_fast;
  int64_t k;
  int64_t stride;
  int64_t pad;
  int64_t batch;
  int64_t num_ptk;  // 16-pixel tiles per frame
  int64_t num_ot;   // 64-lateral-channel tiles
  int64_t num_ct;   // 64-fast-channel tiles
  int64_t splits;
  bool g_vec;
  bool x_vec;
  // channels_last_3d without a ReLU mask and with 16-byte units in both operands: the tiles go to
  // shared memory by cp.async, kStages - 1 pixel tiles ahead (partial_loop_async), else through
  // registers one tile ahead.
  bool async;
  acc_t* partial;        // [splits][C_lat][k][C_fast]
  acc_t* partial_shift;  // [splits][C_lat]
};

// The cp.async ring of pixel tiles has kStages<T> slots (cuda_common.cuh: 3 / 5 in flight in fp32 /
// 16-bit types, 48 KB / 40 KB of g and x_fast per SM at 2 blocks; the register path keeps one tile,
// 16 KB / 8 KB). A slot is a g tile As[px][o] then an x_fast tile Bs[px][c].
template <typename T>
constexpr int gw_smem_bytes() {
  constexpr int ring = kStages<T> * 2 * kBK * kLds * static_cast<int>(sizeof(T));
  return ring > tile_smem_bytes<T>() ? ring : tile_smem_bytes<T>();
}

// cp.async of an NDHWC tile, channels [c0, c0 + 64) x pixels [px0, px0 + kBK) of frame f of sample n,
// into s[px * kLds + c], 16 bytes per copy (the host checked that the channel counts, the channel
// offset and the base address are multiples of 16 bytes, so a unit is wholly in range or wholly out),
// zero-filled outside the channels and pixels.
template <typename T>
__device__ __forceinline__ void issue_channels_last_tile(const T* g, const ActView& v, int64_t n, int64_t f,
                                                         int64_t c0, int64_t ccount, int64_t px0, T* s) {
  constexpr int V = kVec<T>;
  constexpr int kRun = kBM / V;  // units along one pixel's 64 channels
  for (int u = threadIdx.x; u < kBK * kRun; u += kThreads) {
    const int px = u / kRun;
    const int c = (u % kRun) * V;
    const bool valid = c0 + c < ccount && px0 + px < v.hw;
    const T* src = valid ? g + act_offset<true>(v, n, c0 + c, f, px0 + px) : g;
    cp_async<16>(s + px * kLds + c, src, valid);
  }
}

// The pixel loop of one tile with cp.async (p.async): the tiles of the next kStages - 1 needed pixel
// tiles are in flight while one is multiplied; one barrier per step. The ring invariants are
// k_loop_async's (lateral_gemm.cuh): one cp.async group committed per step, empty ones included, so
// after wait_group(S - 2) step i's group is complete; the slot refilled after step i's barrier was last
// read by step i - 1. `next` is the tile's next_needed; every thread walks the same pixel tiles.
template <typename T, typename acc_t, typename Mma, typename Next>
__device__ __forceinline__ void partial_loop_async(const GradWeightParams<T, acc_t>& p, Mma& mma, acc_t& shift_sum,
                                                   T* ring, int64_t q_begin, int64_t q_end, int64_t o0, int64_t c0,
                                                   bool sums_shift, const Next& next) {
  constexpr int S = kStages<T>;
  constexpr int kSlot = 2 * kBK * kLds;
  uint32_t taps = 0;  // bit (step % S): the step's pixel tile has an x_fast frame
  int64_t n = 0, to = 0, t = 0, px0 = 0;
  bool tap = false;
  int64_t q = next(q_begin, n, to, t, px0, tap);
  uint32_t fetched = 0;
  const auto fetch = [&]() {
    const uint32_t slot = fetched % S;
    T* dst = ring + slot * kSlot;
    issue_channels_last_tile(p.g, p.gv, n, to, o0, p.c_lat, px0, dst);
    if (tap) issue_channels_last_tile(p.x, p.xv, n, t, c0, p.c_fast, px0, dst + kBK * kLds);
    taps = (taps & ~(1u << slot)) | (static_cast<uint32_t>(tap) << slot);
    ++fetched;
    q = next(q + 1, n, to, t, px0, tap);
  };
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (q < q_end) fetch();
    cp_async_commit();
  }
  for (uint32_t i = 0; i < fetched; ++i) {
    cp_async_wait<S - 2>();
    __syncthreads();
    if (q < q_end) fetch();  // into slot (i + S - 1) % S
    cp_async_commit();
    const T* As = ring + (i % S) * kSlot;
    if (sums_shift && threadIdx.x < kBM) {
#pragma unroll
      for (int px = 0; px < kBK; ++px) shift_sum += static_cast<acc_t>(As[px * kLds + threadIdx.x]);
    }
    if ((taps >> (i % S)) & 1u) mma.step(As, As + kBK * kLds);
  }
  cp_async_wait<0>();  // only empty groups can be left
  __syncthreads();     // the last step's reads before the accumulator is staged over the ring
}

// Writes a tile's partial sums (staged through shared memory, which the caller's last barrier freed)
// and its grad_shift partial; ends with a barrier, so the next tile may refill shared memory.
template <typename T, typename acc_t, typename Mma>
__device__ __forceinline__ void stage_partial(const GradWeightParams<T, acc_t>& p, const Mma& mma, acc_t shift_sum,
                                              acc_t* Cs, int64_t split, int64_t kt, int64_t o0, int64_t c0,
                                              bool sums_shift) {
  mma.template store<false>(Cs);
  __syncthreads();
  for (int u = threadIdx.x; u < kBM * kBN; u += kThreads) {
    const int o = u / kBN;
    const int c = u % kBN;  // fast channels are contiguous in the workspace
    if (o0 + o < p.c_lat && c0 + c < p.c_fast)
      p.partial[((split * p.c_lat + o0 + o) * p.k + kt) * p.c_fast + c0 + c] = Cs[o * kLdc + c];
  }
  if (sums_shift && threadIdx.x < kBM && o0 + threadIdx.x < p.c_lat)
    p.partial_shift[split * p.c_lat + o0 + threadIdx.x] = shift_sum;
  __syncthreads();
}

template <typename T, bool CL, bool kUseWmma>
__global__ void __launch_bounds__(kThreads, 2)
    grad_weight_partial_kernel(const GradWeightParams<T, typename BlockMma<T, kUseWmma>::acc_t> p) {
  using Mma = BlockMma<T, kUseWmma>;
  using acc_t = typename Mma::acc_t;
  __shared__ __align__(128) unsigned char smem[gw_smem_bytes<T>()];
  SLOWFAST_FAST_SHARED_POISON(smem);
  T* As = reinterpret_cast<T*>(smem);  // As[px][o]
  T* Bs = As + kBK * kLds;             // Bs[px][c]
  acc_t* Cs = reinterpret_cast<acc_t*>(smem);

  const int64_t frames = p.gv.frames;  // T_slow
  const int64_t pixel_tiles = p.batch * frames * p.num_ptk;
  const int64_t num_tiles = p.splits * p.k * p.num_ot * p.num_ct;
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    const int64_t ct = tile % p.num_ct;
    const int64_t ot = (tile / p.num_ct) % p.num_ot;
    const int64_t kt = (tile / (p.num_ct * p.num_ot)) % p.k;
    const int64_t split = tile / (p.num_ct * p.num_ot * p.k);
    const int64_t o0 = ot * kBM;
    const int64_t c0 = ct * kBN;
    const bool sums_shift = kt == 0 && ct == 0;
    const int64_t q_begin = split * pixel_tiles / p.splits;
    const int64_t q_end = (split + 1) * pixel_tiles / p.splits;
    const bool masked = p.mask != nullptr;

    // Pixel tile q pairs g at frame `to` with x_fast at frame to*s - p + kt; a q whose x frame is
    // padding is skipped unless this block also sums g for grad_shift. The next q's loads are
    // issued before the current q's MMA (one shared buffer, two barriers).
    const auto frame_of = [&](int64_t q, int64_t& n, int64_t& to, int64_t& t, int64_t& px0) {
      px0 = (q % p.num_ptk) * kBK;
      const int64_t nt = q / p.num_ptk;
      n = nt / frames;
      to = nt % frames;
      t = to * p.stride - p.pad + kt;
      return t >= 0 && t < p.xv.frames;
    };
    const auto next_needed = [&](int64_t q, int64_t& n, int64_t& to, int64_t& t, int64_t& px0, bool& tap) {
      for (; q < q_end; ++q) {
        tap = frame_of(q, n, to, t, px0);
        if (tap || sums_shift) return q;
      }
      return q;
    };

    Mma mma;
    mma.zero();
    acc_t shift_sum = acc_t(0);
    if constexpr (CL) {
      if (p.async) {
        partial_loop_async(p, mma, shift_sum, As, q_begin, q_end, o0, c0, sums_shift, next_needed);
        stage_partial(p, mma, shift_sum, Cs, split, kt, o0, c0, sums_shift);
        continue;
      }
    }
    ActTileLoader<T, CL, kBM, kBK, kThreads> ga;
    ActTileLoader<T, CL, kBN, kBK, kThreads> xa;
    int64_t n = 0, to = 0, t = 0, px0 = 0;
    bool tap = false;
    int64_t q = next_needed(q_begin, n, to, t, px0, tap);
    if (q < q_end) {
      ga.load(p.g, p.mask, p.gv, n, to, o0, p.c_lat, px0, p.g_vec);
      if (tap) xa.load(p.x, nullptr, p.xv, n, t, c0, p.c_fast, px0, p.x_vec);
    }
    while (q < q_end) {
      ga.store(As, 1, kLds, masked, p.g_vec);
      if (tap) xa.store(Bs, 1, kLds, false, p.x_vec);
      __syncthreads();
      bool next_tap = false;
      const int64_t next_q = next_needed(q + 1, n, to, t, px0, next_tap);
      if (next_q < q_end) {
        ga.load(p.g, p.mask, p.gv, n, to, o0, p.c_lat, px0, p.g_vec);
        if (next_tap) xa.load(p.x, nullptr, p.xv, n, t, c0, p.c_fast, px0, p.x_vec);
      }
      if (sums_shift && threadIdx.x < kBM) {
#pragma unroll
        for (int px = 0; px < kBK; ++px) shift_sum += static_cast<acc_t>(As[px * kLds + threadIdx.x]);
      }
      if (tap) mma.step(As, Bs);
      __syncthreads();
      q = next_q;
      tap = next_tap;
    }
    stage_partial(p, mma, shift_sum, Cs, split, kt, o0, c0, sums_shift);
  }
}

// Sums v over the block (kThreads threads); the result is valid in thread 0.
template <typename acc_t>
__device__ acc_t block_sum(acc_t v, acc_t* scratch) {
#pragma unroll
  for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  acc_t total = acc_t(0);
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

template <typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    grad_weight_finish_kernel(const acc_t* __restrict__ partial, const acc_t* __restrict__ partial_shift,
                              const T* __restrict__ weight, const T* __restrict__ scale, T* __restrict__ grad_w,
                              T* __restrict__ grad_scale, T* __restrict__ grad_shift, int64_t c_lat,
                              int64_t c_fast, int64_t k, int64_t splits) {
  __shared__ acc_t scratch[kThreads / 32];
  SLOWFAST_FAST_SHARED_POISON(scratch);
  // (kt, c) of entry e with 32-bit division (the host checked k * c_fast < 2^31): a 64-bit division is
  // a subroutine call, whose saved registers gave this kernel a stack frame.
  const uint32_t per_o = static_cast<uint32_t>(k * c_fast);
  const uint32_t c_fast32 = static_cast<uint32_t>(c_fast);
  for (int64_t o = blockIdx.x; o < c_lat; o += gridDim.x) {
    const acc_t s = scale != nullptr ? static_cast<acc_t>(scale[o]) : acc_t(1);
    acc_t dot = acc_t(0);
    for (uint32_t e = threadIdx.x; e < per_o; e += kThreads) {
      acc_t g = acc_t(0);
      for (int64_t sp = 0; sp < splits; ++sp) g += partial[(sp * c_lat + o) * per_o + e];
      const uint32_t kt = e / c_fast32;
      const uint32_t c = e - kt * c_fast32;
      const int64_t wi = (o * c_fast + c) * k + kt;
      grad_w[wi] = static_cast<T>(g * s);
      dot += static_cast<acc_t>(weight[wi]) * g;
    }
    acc_t sh = acc_t(0);
    for (int64_t sp = threadIdx.x; sp < splits; sp += kThreads) sh += partial_shift[sp * c_lat + o];
    dot = block_sum(dot, scratch);
    sh = block_sum(sh, scratch);
    if (threadIdx.x == 0) {
      grad_scale[o] = static_cast<T>(dot);
      grad_shift[o] = static_cast<T>(sh);
    }
  }
}

template <typename T, bool CL, bool kUseWmma, typename acc_t>
void launch_partial(const GradWeightParams<T, acc_t>& p, int64_t tiles, cudaStream_t stream) {
  SLOWFAST_FAST_LAUNCH(grid_size(tiles), kThreads, stream, grad_weight_partial_kernel<T, CL, kUseWmma>)(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void grad_weight_impl(const at::Tensor& go, const std::optional<at::Tensor>& mask, const at::Tensor& xf,
                      const at::Tensor& wc, const std::optional<at::Tensor>& sc, int64_t stride, int64_t padding,
                      bool cl, at::Tensor& grad_w, at::Tensor& grad_scale, at::Tensor& grad_shift) {
  using acc_t = typename AccType<T>::type;
  constexpr int V = kVec<T>;
  const int64_t n = xf.size(0), c_fast = xf.size(1), t_fast = xf.size(2), hw = xf.size(3) * xf.size(4);
  const int64_t c_lat = wc.size(0), k = wc.size(2);
  const int64_t c_tot = go.size(1), t_slow = go.size(2);
  const bool tc = use_tensor_cores<T>(conv_allows_tf32());
  TORCH_CHECK(k * c_fast <= std::numeric_limits<int32_t>::max(), "k * C_fast is too large for grad_weight");

  GradWeightParams<T, acc_t> p{};
  p.g = go.data_ptr<T>();
  p.mask = mask.has_value() ? mask->data_ptr<T>() : nullptr;
  p.gv = ActView{c_tot, c_tot - c_lat, t_slow, hw};
  p.x = xf.data_ptr<T>();
  p.xv = ActView{c_fast, 0, t_fast, hw};
  p.c_lat = c_lat;
  p.c_fast = c_fast;
  p.k = k;
  p.stride = stride;
  p.pad = padding;
  p.batch = n;
  p.num_ptk = ceil_div(hw, kBK);
  p.num_ot = ceil_div(c_lat, kBM);
  p.num_ct = std::max<int64_t>(1, ceil_div(c_fast, kBN));  // one tile even without fast channels: shift
  const bool ptrs = aligned16(p.g) && aligned16(p.x) && (p.mask == nullptr || aligned16(p.mask));
  if (cl) {
    p.g_vec = ptrs && c_tot % V == 0 && c_lat % V == 0;
    p.x_vec = ptrs && c_fast % V == 0;
  } else {
    p.g_vec = p.x_vec = ptrs && hw % V == 0;
  }
  p.async = cl && p.mask == nullptr && p.g_vec && p.x_vec;

  // Enough splits for about four blocks per SM, each still reducing at least 8 pixel tiles. The
  // split count fixes the order the partials are added in; under torch.use_deterministic_algorithms
  // it is sized for a fixed SM count (an H100/H200's), so the bits depend on the shapes only.
  const int64_t pixel_tiles = n * t_slow * p.num_ptk;
  const int64_t base_tiles = k * p.num_ot * p.num_ct;
  int sms = kDeterministicSms;
  if (!at::globalContext().deterministicAlgorithms()) {
    int device = 0;
    C10_CUDA_CHECK(cudaGetDevice(&device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  }
  int64_t splits = ceil_div(4 * static_cast<int64_t>(sms), base_tiles);
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, ceil_div(pixel_tiles, 8)));
  p.splits = splits;

  const auto acc_dtype = std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat;
  at::Tensor workspace = at::empty({splits * c_lat * (k * c_fast + 1)}, go.options().dtype(acc_dtype));
  p.partial = workspace.data_ptr<acc_t>();
  p.partial_shift = p.partial + splits * c_lat * k * c_fast;

  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t tiles = splits * base_tiles;
  if constexpr (std::is_same_v<T, float>) {
    if (cl) {
      tc ? launch_partial<T, true, true>(p, tiles, stream) : launch_partial<T, true, false>(p, tiles, stream);
    } else {
      tc ? launch_partial<T, false, true>(p, tiles, stream) : launch_partial<T, false, false>(p, tiles, stream);
    }
  } else {
    constexpr bool kTc = !std::is_same_v<T, double>;
    cl ? launch_partial<T, true, kTc>(p, tiles, stream) : launch_partial<T, false, kTc>(p, tiles, stream);
  }

  SLOWFAST_FAST_LAUNCH(grid_size(c_lat), kThreads, stream, grad_weight_finish_kernel<T, acc_t>)(
      p.partial, p.partial_shift, wc.data_ptr<T>(), sc.has_value() ? sc->data_ptr<T>() : nullptr,
      grad_w.data_ptr<T>(), grad_scale.data_ptr<T>(), grad_shift.data_ptr<T>(), c_lat, c_fast, k, splits);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// grad_weight_impl's parameters: grad_out, ReLU mask (the forward output) or nullopt, x_fast, weight,
// scale or nullopt (all dense in one memory format), stride, padding, channels_last, and the three
// outputs to fill.
#define SLOWFAST_FAST_GRAD_WEIGHT_ARGS                                                                    \
  const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,            \
      const std::optional<at::Tensor>&, int64_t, int64_t, bool, at::Tensor&, at::Tensor&, at::Tensor&
extern template void grad_weight_impl<float>(SLOWFAST_FAST_GRAD_WEIGHT_ARGS);
extern template void grad_weight_impl<double>(SLOWFAST_FAST_GRAD_WEIGHT_ARGS);
extern template void grad_weight_impl<c10::Half>(SLOWFAST_FAST_GRAD_WEIGHT_ARGS);
extern template void grad_weight_impl<c10::BFloat16>(SLOWFAST_FAST_GRAD_WEIGHT_ARGS);

}  // namespace cuda
}  // namespace slowfast_fast
