// The lateral conv of one output frame, out[o, p] = sum_(kt, c) W[o, kt, c] * x[c, tf(kt), p], as
// a register-blocked micro-kernel: a block of R x VV vector accumulators stays in registers while
// the whole reduction over (kt, c) streams through it, then the affine/ReLU epilogue writes it to
// the output once. MKL's sgemm on these skinny problems (K = k*C_fast = 40..640, 16 to 256 output
// channels, 16 to 196 pixels per frame) measured slower than oneDNN's conv3d, and needed `cols`
// gathered first; this kernel reads x_fast where it lies and skips the taps that fall in the
// temporal padding (they would only add zeros).
//
// The vectorized dimension is the one that is contiguous in both x_fast and the output:
//   NCDHW            pixels: VV vectors of pixels, R output channels (weights broadcast);
//   channels_last_3d output channels: VV vectors of channels, R pixels (x_fast values broadcast).
// A dimension that is not a multiple of the block ends with one block shifted back to overlap the
// previous one (it recomputes a few values and writes the same results again) rather than with
// masked or scalar code; LateralSimd::supported requires at least one vector along it.
//
// The vector code is written with GCC/Clang vector extensions inside functions compiled for AVX2
// or AVX-512 by target attributes, chosen at run time: this file needs no special compiler flags,
// and nothing in it is shared with code compiled for the baseline ISA (no ODR hazard on CPUs
// without AVX-512, such as the AMD EPYC machines these kernels are measured on).
#include "cpu/lateral_simd.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SLOWFAST_FAST_X86_SIMD 1
#endif

namespace slowfast_fast::cpu {
namespace {

#if defined(SLOWFAST_FAST_X86_SIMD)

#define SFF_INLINE inline __attribute__((always_inline))

// The helpers below pass vectors by value, which GCC notes as an ABI change for a baseline-ISA
// caller; they are always inlined into the AVX2/AVX-512 functions, so no such call exists.
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec16 __attribute__((vector_size(64)));

template <typename V>
constexpr int kLanes = sizeof(V) / sizeof(float);

template <typename V>
SFF_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename V, typename out_t>
SFF_INLINE void store(out_t* p, V v) {
  if constexpr (std::is_same_v<out_t, float>) {
    std::memcpy(p, &v, sizeof v);
  } else {
    float tmp[kLanes<V>];
    std::memcpy(tmp, &v, sizeof v);
    for (int i = 0; i < kLanes<V>; ++i) p[i] = static_cast<out_t>(tmp[i]);
  }
}

// The epilogue of the reference: conv * scale + shift, then ReLU as torch.relu computes it (x < 0 ?
// 0 : x, as the scalar CPU path does): a NaN lane compares false and stays NaN, so a diverging
// activation shows in the output instead of being hidden as 0; -0.0 stays -0.0 as in torch.
template <typename V>
SFF_INLINE V affine(V acc, V a, V b, bool relu) {
  V v = acc * a + b;
  if (relu) v = v < V{} ? V{} : v;
  return v;
}

// One output frame as seen by the blocks. Element strides, all in floats.
template <typename out_t>
struct Tile {
  const float* x;    // x_fast at tap kt_lo's frame, channel 0, pixel 0
  int64_t taps;      // taps that land inside [0, T_fast)
  int64_t tap_step;  // to the next tap's frame
  int64_t c_step;    // to the next channel of x_fast
  int64_t px_step;   // to the next pixel of x_fast
  const float* w;    // packed weight at row (kt_lo, 0)
  int64_t c_fast, c_lat;
  const float* alpha;
  const float* beta;
  bool relu;
  out_t* y;          // the output's lateral channel 0, pixel 0 of this frame
  int64_t o_step;    // to the next output channel
  int64_t px_out;    // to the next output pixel
};

// NCDHW: R output channels from o0, VV vectors of pixels from j0.
template <typename V, int R, int VV, typename out_t>
SFF_INLINE void pixel_block(const Tile<out_t>& t, int64_t o0, int64_t j0) {
  constexpr int L = kLanes<V>;
  V acc[R][VV];
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < VV; ++v) acc[r][v] = V{};
  for (int64_t tap = 0; tap < t.taps; ++tap) {
    const float* xt = t.x + tap * t.tap_step + j0;
    const float* wt = t.w + tap * t.c_fast * t.c_lat + o0;
    for (int64_t c = 0; c < t.c_fast; ++c) {
      V xv[VV];
#pragma GCC unroll 4
      for (int v = 0; v < VV; ++v) xv[v] = load<V>(xt + c * t.c_step + v * L);
      const float* wc = wt + c * t.c_lat;
#pragma GCC unroll 32
      for (int r = 0; r < R; ++r) {
        const float b = wc[r];
#pragma GCC unroll 4
        for (int v = 0; v < VV; ++v) acc[r][v] += xv[v] * b;
      }
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r) {
    const V a = V{} + t.alpha[o0 + r], b = V{} + t.beta[o0 + r];
#pragma GCC unroll 4
    for (int v = 0; v < VV; ++v)
      store<V>(t.y + (o0 + r) * t.o_step + j0 + v * L, affine(acc[r][v], a, b, t.relu));
  }
}

// All output channels of the pixel vectors at j0: blocks of R, the last one overlapping.
template <typename V, int R, int VV, typename out_t>
SFF_INLINE void pixel_column(const Tile<out_t>& t, int64_t j0) {
  if (t.c_lat < R) {
    for (int64_t o = 0; o < t.c_lat; ++o) pixel_block<V, 1, VV>(t, o, j0);
    return;
  }
  int64_t o0 = 0;
  for (; o0 + R <= t.c_lat; o0 += R) pixel_block<V, R, VV>(t, o0, j0);
  if (o0 < t.c_lat) pixel_block<V, R, VV>(t, t.c_lat - R, j0);
}

// A whole NCDHW frame: blocks of VV vectors (R channels), single vectors (R1 channels) for the
// rest, and a last vector ending at the frame's last pixel.
template <typename V, int R, int VV, int R1, typename out_t>
SFF_INLINE void pixel_frame(const Tile<out_t>& t, int64_t hw) {
  constexpr int L = kLanes<V>;
  const int64_t full = hw / L;
  int64_t v0 = 0;
  for (; v0 + VV <= full; v0 += VV) pixel_column<V, R, VV>(t, v0 * L);
  for (; v0 < full; ++v0) pixel_column<V, R1, 1>(t, v0 * L);
  if (hw % L != 0) pixel_column<V, R1, 1>(t, hw - L);
}

// channels_last_3d: R pixels from j0, VV vectors of output channels from o0.
template <typename V, int R, int VV, typename out_t>
SFF_INLINE void channel_block(const Tile<out_t>& t, int64_t j0, int64_t o0) {
  constexpr int L = kLanes<V>;
  V acc[R][VV];
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < VV; ++v) acc[r][v] = V{};
  for (int64_t tap = 0; tap < t.taps; ++tap) {
    const float* xt = t.x + tap * t.tap_step + j0 * t.px_step;
    const float* wt = t.w + tap * t.c_fast * t.c_lat + o0;
    for (int64_t c = 0; c < t.c_fast; ++c) {
      V wv[VV];
#pragma GCC unroll 4
      for (int v = 0; v < VV; ++v) wv[v] = load<V>(wt + c * t.c_lat + v * L);
      const float* xc = xt + c * t.c_step;
#pragma GCC unroll 32
      for (int r = 0; r < R; ++r) {
        const float b = xc[r * t.px_step];
#pragma GCC unroll 4
        for (int v = 0; v < VV; ++v) acc[r][v] += wv[v] * b;
      }
    }
  }
  V a[VV], b[VV];
#pragma GCC unroll 4
  for (int v = 0; v < VV; ++v) {
    a[v] = load<V>(t.alpha + o0 + v * L);
    b[v] = load<V>(t.beta + o0 + v * L);
  }
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < VV; ++v)
      store<V>(t.y + (j0 + r) * t.px_out + o0 + v * L, affine(acc[r][v], a[v], b[v], t.relu));
}

// All pixels of the channel vectors at o0: blocks of R, the last one overlapping.
template <typename V, int R, int VV, typename out_t>
SFF_INLINE void channel_row(const Tile<out_t>& t, int64_t hw, int64_t o0) {
  if (hw < R) {
    for (int64_t j = 0; j < hw; ++j) channel_block<V, 1, VV>(t, j, o0);
    return;
  }
  int64_t j0 = 0;
  for (; j0 + R <= hw; j0 += R) channel_block<V, R, VV>(t, j0, o0);
  if (j0 < hw) channel_block<V, R, VV>(t, hw - R, o0);
}

template <typename V, int R, int VV, int R1, typename out_t>
SFF_INLINE void channel_frame(const Tile<out_t>& t, int64_t hw) {
  constexpr int L = kLanes<V>;
  const int64_t full = t.c_lat / L;
  int64_t v0 = 0;
  for (; v0 + VV <= full; v0 += VV) channel_row<V, R, VV>(t, hw, v0 * L);
  for (; v0 < full; ++v0) channel_row<V, R1, 1>(t, hw, v0 * L);
  if (t.c_lat % L != 0) channel_row<V, R1, 1>(t, hw, t.c_lat - L);
}

template <typename out_t>
Tile<out_t> make_tile(const LateralSimdProblem& p, const float* packed, int64_t n, int64_t t,
                      out_t* out) {
  const int64_t tf0 = t * p.stride - p.padding;  // frame of tap 0, maybe in the padding
  const int64_t kt_lo = std::max<int64_t>(0, -tf0);
  const int64_t kt_hi = std::min<int64_t>(p.k - 1, p.t_fast - 1 - tf0);
  const int64_t hw = p.hw;
  Tile<out_t> tile;
  tile.taps = std::max<int64_t>(0, kt_hi - kt_lo + 1);
  tile.w = packed + kt_lo * p.c_fast * p.c_lat;
  tile.c_fast = p.c_fast;
  tile.c_lat = p.c_lat;
  tile.alpha = p.alpha;
  tile.beta = p.beta;
  tile.relu = p.relu;
  if (p.channels_last) {
    tile.x = p.x_fast + (n * p.t_fast + tf0 + kt_lo) * hw * p.c_fast;
    tile.tap_step = hw * p.c_fast;
    tile.c_step = 1;
    tile.px_step = p.c_fast;
    tile.y = out + (n * p.t_slow + t) * hw * p.c_total + p.c_slow;
    tile.o_step = 1;
    tile.px_out = p.c_total;
  } else {
    tile.x = p.x_fast + (n * p.c_fast * p.t_fast + tf0 + kt_lo) * hw;
    tile.tap_step = hw;
    tile.c_step = p.t_fast * hw;
    tile.px_step = 1;
    tile.y = out + ((n * p.c_total + p.c_slow) * p.t_slow + t) * hw;
    tile.o_step = p.t_slow * hw;
    tile.px_out = 1;
  }
  if (tile.taps == 0) tile.x = p.x_fast;  // no tap is read; keep the pointer inside the tensor
  return tile;
}

// Block shapes: R x VV accumulators fill most of the vector registers (32 with AVX-512, 16 with
// AVX2) and leave room for the VV loaded vectors and one broadcast; R1 is the channel (NCDHW) or
// pixel (channels_last_3d) count used with a single vector, where loads and broadcasts per FMA
// are highest.
template <typename out_t>
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma"))) void frame_avx512(
    const LateralSimdProblem& p, const float* packed, int64_t n, int64_t t, out_t* out) {
  const Tile<out_t> tile = make_tile(p, packed, n, t, out);
  if (p.channels_last) {
    channel_frame<Vec16, 6, 4, 12>(tile, p.hw);
  } else {
    pixel_frame<Vec16, 8, 3, 16>(tile, p.hw);
  }
}

template <typename out_t>
__attribute__((target("avx2,fma"))) void frame_avx2(const LateralSimdProblem& p, const float* packed,
                                                    int64_t n, int64_t t, out_t* out) {
  const Tile<out_t> tile = make_tile(p, packed, n, t, out);
  if (p.channels_last) {
    channel_frame<Vec8, 6, 2, 12>(tile, p.hw);
  } else {
    pixel_frame<Vec8, 4, 3, 8>(tile, p.hw);
  }
}

// The widest vector unit to use: the CPU's, lowered by ATEN_CPU_CAPABILITY as ATen lowers its own
// kernels ("default", "avx2"), which is also how the tests reach the AVX2 path on an AVX-512 CPU.
// ATen's own capability query is not exported to extensions, hence the CPU check here.
int cpu_lanes() {
  static const int lanes = [] {
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    const char* env = std::getenv("ATEN_CPU_CAPABILITY");
    const std::string cap = env == nullptr ? "" : env;
    if (cap == "default") return 0;
    if (cap == "avx2") return avx2 ? 8 : 0;
    return avx512 ? 16 : avx2 ? 8 : 0;
  }();
  return lanes;
}

// Lanes of the widest usable vector unit for this problem, or 0: the vectorized dimension must
// hold at least one vector.
int choose_lanes(const LateralSimdProblem& p) {
  const int64_t extent = p.channels_last ? p.c_lat : p.hw;
  const int lanes = cpu_lanes();
  if (lanes == 16 && extent >= 16) return 16;
  if (lanes >= 8 && extent >= 8) return 8;
  return 0;
}

#else  // no x86 vector kernels: every problem takes the BLAS path

int choose_lanes(const LateralSimdProblem&) { return 0; }

#endif

template <typename out_t>
void run_frame(int lanes, const LateralSimdProblem& p, const float* packed, int64_t n, int64_t t,
               out_t* out) {
#if defined(SLOWFAST_FAST_X86_SIMD)
  if (lanes == 16) return frame_avx512(p, packed, n, t, out);
  if (lanes == 8) return frame_avx2(p, packed, n, t, out);
#endif
  TORCH_INTERNAL_ASSERT(false, "LateralSimd used on a problem it does not support");
}

}  // namespace

bool LateralSimd::supported(const LateralSimdProblem& p) { return choose_lanes(p) != 0; }

LateralSimd::LateralSimd(const LateralSimdProblem& p) : p_(p), lanes_(choose_lanes(p)) {
  TORCH_INTERNAL_ASSERT(lanes_ != 0, "LateralSimd used on a problem it does not support");
  const int64_t c_lat = p.c_lat, c_fast = p.c_fast, k = p.k;
  packed_.resize(k * c_fast * c_lat);
  for (int64_t o = 0; o < c_lat; ++o)
    for (int64_t c = 0; c < c_fast; ++c)
      for (int64_t kt = 0; kt < k; ++kt)
        packed_[(kt * c_fast + c) * c_lat + o] = p.weight[(o * c_fast + c) * k + kt];
}

void LateralSimd::frame(int64_t n, int64_t t, float* out) const {
  run_frame(lanes_, p_, packed_.data(), n, t, out);
}
void LateralSimd::frame(int64_t n, int64_t t, c10::BFloat16* out) const {
  run_frame(lanes_, p_, packed_.data(), n, t, out);
}
void LateralSimd::frame(int64_t n, int64_t t, c10::Half* out) const {
  run_frame(lanes_, p_, packed_.data(), n, t, out);
}

}  // namespace slowfast_fast::cpu
