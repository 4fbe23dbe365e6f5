// Device helpers shared by the CUDA kernels of slowfast_fast: alignment tests, grid sizing,
// activation-tile loaders for both memory formats, and one 64x64x16 tile MMA that runs on tensor
// cores (wmma) for fp16/bf16 and TF32, or on CUDA cores (fp32/fp64 math).
#pragma once

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

// SLOWFAST_FAST_CUDA_EMULATION: these sources compiled by a host C++ compiler for the CPU emulator of
// tests/cuda_emulation (threads as fibers, shared memory, barriers, cp.async groups, warp shuffles and
// wmma emulated), which runs the kernels in CI without a GPU. Never set by setup.py.
#ifdef SLOWFAST_FAST_CUDA_EMULATION
#include "cuda_emulation.h"
// Launches run the kernel's blocks one after another on the calling thread, their threads as fibers.
#define SLOWFAST_FAST_LAUNCH(grid, block, stream, ...) ::slowfast_fast::emulation::launch(grid, block, __VA_ARGS__)
// The emulated kernels take CPU tensors and register as the CPU kernels of their own namespace.
#define SLOWFAST_FAST_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(slowfast_fast_cudaemu, CPU, m)
// Each block's first thread fills the __shared__ variable with NaN (uninitialized on a GPU).
#define SLOWFAST_FAST_SHARED_POISON(var) ::slowfast_fast::emulation::poison_shared(&(var), sizeof(var))
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

// kernel<<<grid, block, 0, stream>>> as SLOWFAST_FAST_LAUNCH(grid, block, stream, kernel)(args...), so
// that the emulator can run the same launch (a template kernel's commas stay in __VA_ARGS__).
#define SLOWFAST_FAST_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<grid, block, 0, stream>>>
#define SLOWFAST_FAST_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(slowfast_fast, CUDA, m)
// Every __shared__ declaration names its variable here: nothing on the GPU; the emulator fills it with
// NaN at the start of each block, so a read of shared memory the block has not written shows.
#define SLOWFAST_FAST_SHARED_POISON(var) ((void)0)
#endif

// wmma for bf16 and TF32 needs sm_80; older targets (only if someone lists them) fall back to SIMT.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define SLOWFAST_FAST_HAS_WMMA 1
#else
#define SLOWFAST_FAST_HAS_WMMA 0
#endif

namespace slowfast_fast {
namespace cuda {

// Whether t is on the device these kernels run on: a CUDA tensor (a CPU tensor under the emulator).
inline bool on_kernel_device(const at::Tensor& t) {
#ifdef SLOWFAST_FAST_CUDA_EMULATION
  return t.is_cpu();
#else
  return t.is_cuda();
#endif
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

inline std::uintptr_t address_bits(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Kernels loop over their work items with a grid stride, so the grid only needs capping.
inline unsigned int grid_size(int64_t blocks) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 1 << 30)));
}

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements in one 16-byte access

// The unsigned type of a kBytes-wide memory access (one load or store instruction).
template <int kBytes>
struct UnitType;
template <>
struct UnitType<16> {
  using type = uint4;
};
template <>
struct UnitType<8> {
  using type = uint2;
};
template <>
struct UnitType<4> {
  using type = uint32_t;
};
template <>
struct UnitType<2> {
  using type = uint16_t;
};
template <typename T, int W>  // W elements of T
using Unit = typename UnitType<W * static_cast<int>(sizeof(T))>::type;

// *p = v as one global store instruction. A unit assembled element by element (an epilogue's
// results) is otherwise stored as one 4-byte store per component: the compiler does not keep the
// union it was assembled in as one vector.
template <typename U>
__device__ __forceinline__ void store_global(U* p, const U& v) {
  *p = v;
}
#ifndef SLOWFAST_FAST_CUDA_EMULATION
__device__ __forceinline__ void store_global(uint4* p, const uint4& v) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void store_global(uint2* p, const uint2& v) {
  asm volatile("st.global.v2.b32 [%0], {%1, %2};" ::"l"(p), "r"(v.x), "r"(v.y) : "memory");
}
#endif

// cp.async of kBytes from global to shared memory, zero-filled when !valid (then nothing is read from
// src, which must still be a valid address). sm_80+; older targets copy synchronously.
template <int kBytes>
__device__ __forceinline__ void cp_async(void* dst, const void* src, bool valid) {
#if defined(SLOWFAST_FAST_CUDA_EMULATION)
  ::slowfast_fast::emulation::cp_async(dst, src, kBytes, valid);
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const int src_bytes = valid ? kBytes : 0;
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes) : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(src), "n"(kBytes), "r"(src_bytes)
                 : "memory");
  }
#else
  using U = typename UnitType<kBytes>::type;
  *static_cast<U*>(dst) = valid ? *static_cast<const U*>(src) : U{};
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(SLOWFAST_FAST_CUDA_EMULATION)
  ::slowfast_fast::emulation::cp_async_commit();
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Slots of a cp.async ring of 16 x 64-element tiles (the lateral GEMM's A tiles, grad_weight's g and
// x_fast tiles): the tile being multiplied and kStages - 1 being fetched. A tile is 16 x 64 elements
// whatever the type, so the stages are counted in bytes: 3 tiles in flight in fp32 (12 KB per block and
// operand, 24 KB per SM at 2 blocks), 5 in 16-bit types (10 KB; with 3 they had only 6 KB: Little's law
// at ~700 ns DRAM latency and 132 SMs wants ~20 KB per SM for copy bandwidth). fp64 keeps two stages,
// so the kernels' static shared memory stays under 48 KB.
template <typename T>
constexpr int kStages = sizeof(T) == 8 ? 2 : sizeof(T) == 4 ? 4 : 6;

// Waits until at most kPending of this thread's committed cp.async groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(SLOWFAST_FAST_CUDA_EMULATION)
  ::slowfast_fast::emulation::cp_async_wait(kPending);
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Whether the ReLU gradient passes at forward output v: torch's threshold_backward zeroes it only
// where v <= 0, so it passes where v is NaN (v > 0 would block it there and hide the divergence).
template <typename T>
__device__ __forceinline__ bool relu_passes(T v) {
  return !(static_cast<typename AccType<T>::type>(v) <= 0);
}

// Where an activation tensor's tile lives: element (channel ctot_off + c, frame f, pixel px) of
// sample n, with `ctot` channels, `frames` frames and `hw` pixels per frame.
struct ActView {
  int64_t ctot;
  int64_t coff;
  int64_t frames;
  int64_t hw;
};

template <bool CL>
__device__ __forceinline__ int64_t act_offset(const ActView& v, int64_t n, int64_t c, int64_t f,
                                              int64_t px) {
  if (CL) return ((n * v.frames + f) * v.hw + px) * v.ctot + v.coff + c;
  return ((n * v.ctot + v.coff + c) * v.frames + f) * v.hw + px;
}

// One thread's share of a tile of channels [c0, c0+BC) x pixels [p0, p0+BP) of frame f of sample
// n, fetched in two phases so that a block can issue the next tile's global loads and then run the
// MMA on the current one while they are in flight: load() only issues loads into registers (zero
// outside c >= ccount, px >= hw); store() writes the tile to shared memory at s[c * sc + p * sp],
// applying the optional `mask` (same view: keep where !(mask <= 0), the ReLU gradient) only then, so
// no loaded value is waited for before the MMA. Global reads run along the contiguous dimension
// (pixels for NCDHW, channels for NDHWC), 16 bytes at a time when `vec` (the caller checked
// alignment and divisibility, so a vector is either wholly in range or wholly out) else one
// element at a time.
template <typename T, bool CL, int BC, int BP, int NT>
struct ActTileLoader {
  static constexpr int V = kVec<T>;
  static_assert((CL ? BC : BP) % V == 0, "tile's contiguous side must hold whole vectors");
  static constexpr int kRun = CL ? BC : BP;  // contiguous side of the tile
  static constexpr int kVecUnits = BC * BP / V;
  static constexpr int kVecPerThread = (kVecUnits + NT - 1) / NT;
  static constexpr int kScalarPerThread = (BC * BP + NT - 1) / NT;
  union Vec {
    uint4 raw;
    T e[V];
  };
  Vec val[kVecPerThread], msk[kVecPerThread];
  T sval[kScalarPerThread], smsk[kScalarPerThread];

  // Tile coordinates (c, p) of unit u: runs of `run` units along the contiguous side.
  __device__ __forceinline__ static void unit_coords(int u, int run, int width, int& c, int& p) {
    const int o = u / run;
    const int r = (u % run) * width;
    c = CL ? r : o;
    p = CL ? o : r;
  }

  __device__ __forceinline__ void load(const T* __restrict__ g, const T* __restrict__ mask, const ActView& v,
                                       int64_t n, int64_t f, int64_t c0, int64_t ccount, int64_t p0, bool vec) {
    if (vec) {
#pragma unroll
      for (int i = 0; i < kVecPerThread; ++i) {
        const int u = threadIdx.x + i * NT;
        val[i].raw = make_uint4(0, 0, 0, 0);
        msk[i].raw = make_uint4(0, 0, 0, 0);
        int c, p;
        unit_coords(u, kRun / V, V, c, p);
        if (u < kVecUnits && c0 + c < ccount && p0 + p < v.hw) {
          const int64_t off = act_offset<CL>(v, n, c0 + c, f, p0 + p);
          val[i].raw = *reinterpret_cast<const uint4*>(g + off);
          if (mask != nullptr) msk[i].raw = *reinterpret_cast<const uint4*>(mask + off);
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < kScalarPerThread; ++i) {
        const int u = threadIdx.x + i * NT;
        sval[i] = T(0);
        smsk[i] = T(0);
        int c, p;
        unit_coords(u, kRun, 1, c, p);
        if (u < BC * BP && c0 + c < ccount && p0 + p < v.hw) {
          const int64_t off = act_offset<CL>(v, n, c0 + c, f, p0 + p);
          sval[i] = g[off];
          if (mask != nullptr) smsk[i] = mask[off];
        }
      }
    }
  }

  __device__ __forceinline__ void store(T* s, int sc, int sp, bool masked, bool vec) const {
    if (vec) {
#pragma unroll
      for (int i = 0; i < kVecPerThread; ++i) {
        const int u = threadIdx.x + i * NT;
        if (u >= kVecUnits) continue;
        int c, p;
        unit_coords(u, kRun / V, V, c, p);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const T x = masked && !relu_passes(msk[i].e[e]) ? T(0) : val[i].e[e];
          s[(CL ? c + e : c) * sc + (CL ? p : p + e) * sp] = x;
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < kScalarPerThread; ++i) {
        const int u = threadIdx.x + i * NT;
        if (u >= BC * BP) continue;
        int c, p;
        unit_coords(u, kRun, 1, c, p);
        s[c * sc + p * sp] = masked && !relu_passes(smsk[i]) ? T(0) : sval[i];
      }
    }
  }
};

// Block tile of the GEMMs: C[BM][BN] += sum over BK of A[k][m] * B[k][n]. B is k-major in shared
// memory with leading dimension kLds; A is k-major too (As[k * kLds + m]) or, with kARowMajor,
// m-major (As[m * lda_row_major<T>() + k]) so that a tile of a channels-last tensor lands in shared
// memory in its global order, 16 bytes per store. C is staged through shared memory (kLdc), by row or
// by column, so that the layout-aware epilogues read it without bank conflicts.
constexpr int kBM = 64;
constexpr int kBN = 64;
constexpr int kBK = 16;
constexpr int kThreads = 256;
constexpr int kLds = kBM + 8;  // keeps wmma pointers 32-byte aligned, spreads banks
constexpr int kLdc = kBN + 4;
static_assert(kBM == kBN, "kLds serves both operands");

// Row pitch of an m-major A tile: kBK plus 16 bytes, so every row starts 16-byte aligned (vector
// stores, wmma's 32-byte-aligned 16-row slabs) and consecutive rows start on different banks.
template <typename T>
constexpr int lda_row_major() {
  return kBK + 16 / static_cast<int>(sizeof(T));
}

template <typename T>
constexpr int tile_smem_bytes() {
  using acc_t = typename AccType<T>::type;
  constexpr int operands = 2 * kBK * kLds * static_cast<int>(sizeof(T));
  constexpr int staged = kBM * kLdc * static_cast<int>(sizeof(acc_t));
  return operands > staged ? operands : staged;
}

// CUDA-core tile: each thread owns a 4x4 strided sub-tile (rows tm + 16i, cols tn + 16j), which
// makes every shared-memory read a broadcast or conflict-free with a k-major A. An m-major A (NDHWC)
// costs 2-way conflicts on its reads (fp32: 16 rows 20 words apart hit 8 banks); this path only runs
// fp32 with TF32 off and fp64, and the 16-byte stores the layout buys are on every path.
template <typename T, bool kWmma, bool kARowMajor = false>
struct TileMma {
  using acc_t = typename AccType<T>::type;
  acc_t c[4][4];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) c[i][j] = acc_t(0);
  }

  __device__ __forceinline__ void step(const T* As, const T* Bs) {
    const int tm = threadIdx.x % 16;
    const int tn = threadIdx.x / 16;
#pragma unroll 4
    for (int k = 0; k < kBK; ++k) {
      acc_t a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = tm + 16 * i;
        a[i] = static_cast<acc_t>(As[kARowMajor ? m * lda_row_major<T>() + k : k * kLds + m]);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = static_cast<acc_t>(Bs[k * kLds + tn + 16 * j]);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) c[i][j] += a[i] * b[j];
    }
  }

  // kByColumn stores element (m, n) at Cs[n * kLdc + m], else at Cs[m * kLdc + n].
  template <bool kByColumn>
  __device__ __forceinline__ void store(acc_t* Cs) const {
    const int tm = threadIdx.x % 16;
    const int tn = threadIdx.x / 16;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int m = tm + 16 * i, n = tn + 16 * j;
        Cs[kByColumn ? n * kLdc + m : m * kLdc + n] = c[i][j];
      }
  }
};

#if SLOWFAST_FAST_HAS_WMMA
template <typename T>
struct WmmaOperand;
template <>
struct WmmaOperand<c10::Half> {
  using elem = __half;
  using frag = __half;
  static constexpr int K = 16;
};
template <>
struct WmmaOperand<c10::BFloat16> {
  using elem = __nv_bfloat16;
  using frag = __nv_bfloat16;
  static constexpr int K = 16;
};
template <>
struct WmmaOperand<float> {  // TF32: fp32 in shared memory, rounded when loaded into fragments
  using elem = float;
  using frag = nvcuda::wmma::precision::tf32;
  static constexpr int K = 8;
};

// Tensor-core tile: 8 warps as 4 (m) x 2 (n), each a 16x32 slab of two 16x16 fp32 accumulators.
template <typename T, bool kARowMajor>
struct TileMma<T, true, kARowMajor> {
  using acc_t = float;
  using Op = WmmaOperand<T>;
  static constexpr int K = Op::K;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, K, float> c[2];

  __device__ __forceinline__ void zero() {
    nvcuda::wmma::fill_fragment(c[0], 0.0f);
    nvcuda::wmma::fill_fragment(c[1], 0.0f);
  }

  __device__ __forceinline__ void step(const T* As, const T* Bs) {
    using namespace nvcuda;
    const int warp = threadIdx.x / 32;
    const int m0 = (warp % 4) * 16;
    const int n0 = (warp / 4) * 32;
    const auto* a_ptr = reinterpret_cast<const typename Op::elem*>(As);
    const auto* b_ptr = reinterpret_cast<const typename Op::elem*>(Bs);
#pragma unroll
    for (int k0 = 0; k0 < kBK; k0 += K) {
      using ALayout = std::conditional_t<kARowMajor, wmma::row_major, wmma::col_major>;
      wmma::fragment<wmma::matrix_a, 16, 16, K, typename Op::frag, ALayout> a;
      if constexpr (kARowMajor) wmma::load_matrix_sync(a, a_ptr + m0 * lda_row_major<T>() + k0, lda_row_major<T>());
      else wmma::load_matrix_sync(a, a_ptr + k0 * kLds + m0, kLds);
      if constexpr (std::is_same_v<T, float>) {
#pragma unroll
        for (int e = 0; e < a.num_elements; ++e) a.x[e] = wmma::__float_to_tf32(a.x[e]);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, K, typename Op::frag, wmma::row_major> b;
        wmma::load_matrix_sync(b, b_ptr + k0 * kLds + n0 + 16 * j, kLds);
        if constexpr (std::is_same_v<T, float>) {
#pragma unroll
          for (int e = 0; e < b.num_elements; ++e) b.x[e] = wmma::__float_to_tf32(b.x[e]);
        }
        wmma::mma_sync(c[j], a, b, c[j]);
      }
    }
  }

  template <bool kByColumn>
  __device__ __forceinline__ void store(float* Cs) const {
    using namespace nvcuda;
    const int warp = threadIdx.x / 32;
    const int m0 = (warp % 4) * 16;
    const int n0 = (warp / 4) * 32;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int n = n0 + 16 * j;
      if constexpr (kByColumn) wmma::store_matrix_sync(Cs + n * kLdc + m0, c[j], kLdc, wmma::mem_col_major);
      else wmma::store_matrix_sync(Cs + m0 * kLdc + n, c[j], kLdc, wmma::mem_row_major);
    }
  }
};
#endif

// The tile MMA a kernel instantiated with `kUseWmma` really uses on the architecture being compiled.
template <typename T, bool kUseWmma, bool kARowMajor = false>
using BlockMma = TileMma<T, kUseWmma && SLOWFAST_FAST_HAS_WMMA && !std::is_same_v<T, double>, kARowMajor>;

// The lateral conv's geometry against the slow pathway's length, checked exactly as the Python
// validation and the CPU kernels check it: a (k, 1, 1) kernel with 0 <= padding < k, stride >= 1, and
// an output length floor((t_fast + 2p - k) / s) + 1 equal to t_slow, with t_fast + 2p >= k first (C++
// division truncates toward zero, so a negative numerator would otherwise count as one frame).
inline void check_conv_geometry(int64_t t_fast, int64_t k, int64_t stride, int64_t padding, int64_t t_slow,
                                const char* slow_name) {
  TORCH_CHECK(k >= 1, "weight's temporal kernel size must be at least 1, got ", k);
  TORCH_CHECK(stride >= 1, "stride must be >= 1, got ", stride);
  TORCH_CHECK(padding >= 0 && padding < k, "padding must be in [0, k-1] = [0, ", k - 1, "], got ", padding);
  TORCH_CHECK(t_fast + 2 * padding >= k, "empty temporal output: T_fast=", t_fast, ", k=", k, ", padding=",
              padding);
  const int64_t t_out = (t_fast + 2 * padding - k) / stride + 1;
  TORCH_CHECK(t_out == t_slow, "the lateral conv gives ", t_out, " frames (T_fast=", t_fast, ", k=", k,
              ", stride=", stride, ", padding=", padding, ") but ", slow_name, " has ", t_slow);
}

// Whether fp32 convolutions may use TF32 now, read exactly as cuDNN's convolutions read it: the
// operator-aware getter resolves torch.backends.cudnn.conv.fp32_precision, then the cuDNN-wide and the
// generic settings (or the legacy allow_tf32 they mirror). The argument-less allowTF32CuDNN() throws
// once conv and RNN settings differ, which PyTorch's documented way to turn TF32 off causes.
// (at::Float32Op and this overload exist in every torch this package supports, >= 2.11.)
inline bool conv_allows_tf32() {
  return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
}

// Whether T's lateral GEMMs run on tensor cores: always for fp16/bf16, for fp32 when cuDNN convs
// may use TF32 (the caller passes conv_allows_tf32()), never for fp64.
template <typename T>
inline bool use_tensor_cores(bool allow_tf32) {
  if constexpr (std::is_same_v<T, double>) return false;
  if constexpr (std::is_same_v<T, float>) return allow_tf32;
  return true;
}

}  // namespace cuda
}  // namespace slowfast_fast
