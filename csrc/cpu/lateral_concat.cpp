// CPU kernels of lateral_concat and its two gradient ops.
//
// The lateral conv has a (k, 1, 1) kernel. For sample n and a run of consecutive output frames
// [t0, t1) it is one GEMM: W (C_lat x k*C_fast) @ cols (k*C_fast x (t1-t0)*H*W), where `cols`
// gathers, for each tap kt and output frame t, fast frame t*s - p + kt (zeros in the padding).
// Consecutive frames of one sample are one strided matrix in both layouts (see cpu_utils.h
// `frame`), so the GEMM writes straight into the output's lateral channels while the same task
// copies x_slow's channels: no intermediate lateral tensor, no separate cat, and fast frames that
// no tap needs (stride > k) are never read. fp16/bf16 are widened to fp32 while `cols` is
// gathered, and the fp32 result is rounded once on the way out.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common.h"
#include "cpu/cpu_utils.h"
#include "cpu/lateral_simd.h"

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
  // Only the batch and C_slow may be 0 (as in the Python checks: the reference refuses the rest).
  TORCH_CHECK(x_fast.size(1) >= 1 && weight.size(0) >= 1, "the lateral conv needs channels: C_fast=",
              x_fast.size(1), ", C_lat=", weight.size(0));
  TORCH_CHECK(x_fast.size(2) >= 1, "x_fast has no frames (T_fast=0)");
  TORCH_CHECK(h >= 1 && w >= 1, "frames must have pixels, got H x W = ", h, " x ", w);
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

// The weight as a dense acc_t (C_lat, C_fast, k) tensor, i.e. a row-major (C_lat x k*C_fast)
// matrix with columns ordered (c, kt), each row o multiplied by scale[o] when there is a scale. No
// copy for a dense fp32/fp64 weight without scale.
template <typename scalar_t, typename acc_t>
Tensor scaled_weight(const Tensor& weight, const std::optional<Tensor>& scale) {
  Tensor w = weight.contiguous().to(c10::CppTypeToScalarType<acc_t>::value);
  if (!scale.has_value()) return w;
  const std::vector<acc_t> s = channel_vector<scalar_t, acc_t>(scale, weight.size(0), acc_t(1));
  Tensor scaled = at::empty(w.sizes(), w.options());
  const int64_t rows = w.size(0), cols = w.numel() / std::max<int64_t>(1, rows);
  const acc_t* src = w.const_data_ptr<acc_t>();
  acc_t* dst = scaled.mutable_data_ptr<acc_t>();
  for (int64_t o = 0; o < rows; ++o)
    for (int64_t r = 0; r < cols; ++r) dst[o * cols + r] = src[o * cols + r] * s[o];
  return scaled;
}

// The BLAS forward processes output frames in runs of `frames` per task: enough tasks for every
// thread, and per-task buffers of at most `budget` elements of k*C_fast x frames*H*W, L2-sized
// (the gathered columns are written and read back at once).
constexpr int64_t kForwardBudget = int64_t{1} << 19;

struct Runs {
  int64_t per_sample, frames;
  int64_t count(int64_t batch) const { return batch * per_sample; }
};

Runs frame_runs(const Conv& cv, int64_t budget) {
  const int64_t threads = at::get_num_threads();
  const int64_t pieces = std::max<int64_t>(1, (threads + cv.batch - 1) / std::max<int64_t>(1, cv.batch));
  const int64_t wanted = (cv.t_slow + pieces - 1) / pieces;
  const int64_t fit = budget / std::max<int64_t>(1, cv.k * cv.c_fast * cv.hw);
  const int64_t frames = std::clamp<int64_t>(fit, 1, wanted);
  return {(cv.t_slow + frames - 1) / frames, frames};
}

// An uninitialized per-thread buffer (std::vector would zero it: a memset of up to megabytes per call).
template <typename T>
std::unique_ptr<T[]> scratch(int64_t elements) {
  return std::unique_ptr<T[]>(new T[std::max<int64_t>(1, elements)]);
}

template <typename acc_t, typename scalar_t>
void copy_row(acc_t* dst, const scalar_t* src, int64_t len) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    // Rows are often one small frame (H*W = 16 or 49 at layer3/layer2): an inline loop costs a few
    // ns where a memcpy call costs ~15 (thousands of rows per call).
    if (len <= 64) {
      for (int64_t i = 0; i < len; ++i) dst[i] = src[i];
    } else {
      std::memcpy(dst, src, len * sizeof(acc_t));
    }
  } else {
    for (int64_t i = 0; i < len; ++i) dst[i] = static_cast<acc_t>(src[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward

// x_slow's channels of output frames [t0, t0 + nt) of sample n. In channels_last_3d those are
// nt*H*W pixels of C_slow values. In NCDHW x_slow's sample n and the output's first C_slow channels
// of it are both one contiguous block (C_slow*T_slow*H*W elements), so the frames' share of it,
// the elements [block*t0/T_slow, block*(t0+nt)/T_slow) (consecutive runs tile the block), is one
// memcpy instead of one per channel row (H*W can be as short as 16).
template <typename scalar_t>
void copy_slow_frames(const scalar_t* xs, scalar_t* y, int64_t c_slow, int64_t c_total, int64_t t_slow,
                      int64_t hw, bool cl, int64_t n, int64_t t0, int64_t nt) {
  if (cl) {
    const scalar_t* src = xs + (n * t_slow + t0) * hw * c_slow;
    scalar_t* dst = y + (n * t_slow + t0) * hw * c_total;
    for (int64_t i = 0; i < nt * hw; ++i)
      std::memcpy(dst + i * c_total, src + i * c_slow, c_slow * sizeof(scalar_t));
  } else {
    const int64_t block = c_slow * t_slow * hw;
    const int64_t lo = block * t0 / t_slow, hi = block * (t0 + nt) / t_slow;
    std::memcpy(y + n * c_total * t_slow * hw + lo, xs + n * block + lo, (hi - lo) * sizeof(scalar_t));
  }
}

// The forward with the SIMD micro-kernel (lateral_simd.h), one task per output frame that copies
// x_slow's channels of the frame and computes the lateral ones. fp16/bf16 inputs are widened to fp32
// first and the result is rounded once when stored. Returns false, computing nothing, where the kernel does
// not apply: fp64, x_fast and x_slow in different layouts, or a CPU without AVX2.
template <typename scalar_t>
bool lateral_forward_simd(const Tensor& x_slow, const Tensor& x_fast, const Tensor& weight,
                          const std::optional<Tensor>& scale, const std::optional<Tensor>& shift,
                          bool relu, const Conv& cv, Tensor& out) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return false;
  } else {
    const bool cl = is_channels_last(out);
    if (is_channels_last(x_fast) != cl) return false;
    const Tensor xf = x_fast.to(at::kFloat);  // no copy for fp32; keeps the memory format
    const Tensor w = weight.contiguous().to(at::kFloat);
    const std::vector<float> alpha = channel_vector<scalar_t, float>(scale, cv.c_lat, 1.f);
    const std::vector<float> beta = channel_vector<scalar_t, float>(shift, cv.c_lat, 0.f);
    const int64_t c_slow = x_slow.size(1), c_total = out.size(1);
    const LateralSimdProblem problem{xf.const_data_ptr<float>(), cl, w.const_data_ptr<float>(),
                                     alpha.data(), beta.data(), relu, cv.c_fast, cv.t_fast, cv.c_lat,
                                     cv.t_slow, cv.hw, cv.k, cv.stride, cv.padding, c_total, c_slow};
    if (!LateralSimd::supported(problem)) return false;
    const LateralSimd kernel(problem);
    const scalar_t* xs = x_slow.const_data_ptr<scalar_t>();
    scalar_t* y = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, cv.batch * cv.t_slow, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / cv.t_slow, t = task % cv.t_slow;
        copy_slow_frames(xs, y, c_slow, c_total, cv.t_slow, cv.hw, cl, n, t, 1);
        kernel.frame(n, t, y);
      }
    });
    return true;
  }
}

// A task of the BLAS forward: output frames [t0, t0 + nt) of sample n, pixels [p0, p0 + np) of
// each. Frames whose gathered columns exceed the budget are split into pixel blocks (then nt == 1).
struct Block {
  int64_t n, t0, nt, p0, np;
  int64_t m() const { return nt * np; }
  bool whole_frames(int64_t hw) const { return np == hw; }
};

struct Blocks {
  int64_t runs, frames, pixel_blocks, pixels;
  int64_t count(int64_t batch) const { return batch * runs * pixel_blocks; }
  Block at(int64_t task, const Conv& cv) const {
    const int64_t pb = task % pixel_blocks, rest = task / pixel_blocks;
    const int64_t n = rest / runs, t0 = (rest % runs) * frames;
    const int64_t p0 = pb * pixels;
    return {n, t0, std::min(frames, cv.t_slow - t0), p0, std::min(pixels, cv.hw - p0)};
  }
};

Blocks forward_blocks(const Conv& cv, int64_t budget) {
  const int64_t kc = std::max<int64_t>(1, cv.k * cv.c_fast);
  if (kc * cv.hw <= budget) {
    const Runs r = frame_runs(cv, budget);
    return {r.per_sample, r.frames, 1, cv.hw};
  }
  // Pixel blocks of a multiple of 16 (whole cache lines of fp32 rows in NCDHW), at least 64.
  const int64_t pixels = std::min(cv.hw, std::max<int64_t>(64, budget / kc / 16 * 16));
  return {cv.t_slow, 1, (cv.hw + pixels - 1) / pixels, pixels};
}

// The columns of block b as a (k*C_fast x m) matrix. When x_fast is NCDHW: row-major in `buf`,
// rows ordered (c, kt), the order of the weight's own (C_lat, C_fast, k) storage (so the stored
// weight is the GEMM's other operand as it is), each row pieces of H*W-plane rows. When it is
// channels_last_3d: column-major, each pixel's k*C_fast values with rows ordered (kt, c), so a
// tap's C_fast channels are one contiguous copy (in (c, kt) order they would land k apart: a
// scattered store per value); the weight is then repacked to match (lateral_forward_blas).
template <typename scalar_t, typename acc_t>
Mat<const acc_t> gather_block(const scalar_t* xf, bool cl, const Conv& cv, const Block& b, acc_t* buf) {
  const int64_t c_fast = cv.c_fast, k = cv.k, kc = k * c_fast, m = b.m(), hw = cv.hw;
  if (!cl) {
    for (int64_t c = 0; c < c_fast; ++c) {
      const scalar_t* plane = xf + (b.n * c_fast + c) * cv.t_fast * hw + b.p0;
      for (int64_t kt = 0; kt < k; ++kt) {
        acc_t* row = buf + (c * k + kt) * m;
        for (int64_t tt = 0; tt < b.nt; ++tt) {
          const int64_t tf = cv.source(b.t0 + tt, kt);
          if (cv.in_range(tf)) {
            copy_row(row + tt * b.np, plane + tf * hw, b.np);
          } else {
            std::fill(row + tt * b.np, row + (tt + 1) * b.np, acc_t(0));
          }
        }
      }
    }
    return Mat<const acc_t>{buf, m, 1};
  }
  for (int64_t tt = 0; tt < b.nt; ++tt)
    for (int64_t kt = 0; kt < k; ++kt) {
      const int64_t tf = cv.source(b.t0 + tt, kt);
      acc_t* dst = buf + tt * b.np * kc + kt * c_fast;
      if (!cv.in_range(tf)) {
        for (int64_t j = 0; j < b.np; ++j) std::fill(dst + j * kc, dst + j * kc + c_fast, acc_t(0));
        continue;
      }
      const scalar_t* src = xf + ((b.n * cv.t_fast + tf) * hw + b.p0) * c_fast;
      for (int64_t j = 0; j < b.np; ++j) copy_row(dst + j * kc, src + j * c_fast, c_fast);
    }
  return Mat<const acc_t>{buf, 1, kc};
}

// x_slow's channels of block b, copied into the front of the output.
template <typename scalar_t>
void copy_slow_block(const scalar_t* xs, scalar_t* y, int64_t c_slow, int64_t c_total, int64_t t_slow,
                     int64_t hw, bool cl, const Block& b) {
  if (b.whole_frames(hw)) return copy_slow_frames(xs, y, c_slow, c_total, t_slow, hw, cl, b.n, b.t0, b.nt);
  if (cl) {
    const int64_t pixel = (b.n * t_slow + b.t0) * hw + b.p0;
    for (int64_t j = 0; j < b.np; ++j)
      std::memcpy(y + (pixel + j) * c_total, xs + (pixel + j) * c_slow, c_slow * sizeof(scalar_t));
    return;
  }
  for (int64_t c = 0; c < c_slow; ++c)
    std::memcpy(y + ((b.n * c_total + c) * t_slow + b.t0) * hw + b.p0,
                xs + ((b.n * c_slow + c) * t_slow + b.t0) * hw + b.p0, b.np * sizeof(scalar_t));
}

// The forward as BLAS GEMMs, one per block: out[lateral channels of the block] =
// W (C_lat x k*C_fast, the stored weight) @ cols (gather_block), written straight into the output
// (fp32/fp64 without affine or ReLU) or through an acc_t buffer and the epilogue. The same task
// copies the block's x_slow channels. fp16/bf16 are widened to fp32 in the gather and rounded once.
template <typename scalar_t>
void lateral_forward_blas(const Tensor& x_slow, const Tensor& x_fast, const Tensor& weight,
                          const std::optional<Tensor>& scale, const std::optional<Tensor>& shift,
                          bool relu, const Conv& cv, Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const bool affine = scale.has_value() || shift.has_value();
  const bool direct = std::is_same_v<acc_t, scalar_t> && !affine && !relu;  // GEMM into the output
  const int64_t c_slow = x_slow.size(1), c_total = out.size(1), c_lat = cv.c_lat;
  const int64_t kc = cv.k * cv.c_fast;
  const bool cl_out = is_channels_last(out), cl_fast = is_channels_last(x_fast);
  const std::vector<acc_t> alpha = channel_vector<scalar_t, acc_t>(scale, c_lat, acc_t(1));
  const std::vector<acc_t> beta = channel_vector<scalar_t, acc_t>(shift, c_lat, acc_t(0));
  // The weight in the gathered columns' order: as stored, (c, kt), for NCDHW; for channels_last_3d
  // repacked (C_lat*k*C_fast moves, against a scattered store per gathered value) to (kt, c) and
  // transposed, so that the GEMM, which there computes out^T = cols^T @ W^T, gets both operands
  // row-major (MKL runs a transposed operand at about half speed at these sizes).
  Tensor w = scaled_weight<scalar_t, acc_t>(weight, std::nullopt);
  if (cl_fast) w = w.reshape({c_lat, cv.c_fast, cv.k}).permute({2, 1, 0}).contiguous();
  const Mat<const acc_t> w_mat = cl_fast ? Mat<const acc_t>{w.const_data_ptr<acc_t>(), 1, c_lat}
                                         : Mat<const acc_t>{w.const_data_ptr<acc_t>(), kc, 1};
  const scalar_t* xs = x_slow.const_data_ptr<scalar_t>();
  const scalar_t* xf = x_fast.const_data_ptr<scalar_t>();
  scalar_t* y = out.mutable_data_ptr<scalar_t>();
  const Blocks blocks = forward_blocks(cv, kForwardBudget);
  const int64_t max_m = blocks.frames * blocks.pixels;

  at::parallel_for(0, blocks.count(cv.batch), 1, [&](int64_t begin, int64_t end) {
    const auto cols_buf = scratch<acc_t>(kc * max_m);
    const auto acc_buf = scratch<acc_t>(direct ? 0 : c_lat * max_m);
    for (int64_t task = begin; task < end; ++task) {
      const Block b = blocks.at(task, cv);
      const int64_t m = b.m();
      copy_slow_block(xs, y, c_slow, c_total, cv.t_slow, cv.hw, cl_out, b);
      const Mat<const acc_t> cols = gather_block<scalar_t, acc_t>(xf, cl_fast, cv, b, cols_buf.get());
      Mat<scalar_t> dst = frame(y, c_total, cv.t_slow, cv.hw, cl_out, b.n, b.t0, c_slow);
      dst.ptr += b.p0 * (cl_out ? c_total : 1);
      Mat<acc_t> acc;
      if (direct) {
        acc = Mat<acc_t>{reinterpret_cast<acc_t*>(dst.ptr), dst.rs, dst.cs};
      } else {
        acc = cl_out ? Mat<acc_t>{acc_buf.get(), 1, c_lat} : Mat<acc_t>{acc_buf.get(), m, 1};
      }
      gemm<acc_t>(c_lat, m, kc, w_mat, cols, acc_t(0), acc);
      if (!direct) {
        for_each(dst, c_lat, m, [&](int64_t o, int64_t i) {
          acc_t v = acc.ptr[o * acc.rs + i * acc.cs] * alpha[o] + beta[o];
          // torch.relu: zero only below 0, so NaN propagates (and -0.0 stays -0.0).
          if (relu) v = v < acc_t(0) ? acc_t(0) : v;
          dst.ptr[o * dst.rs + i * dst.cs] = static_cast<scalar_t>(v);
        });
      }
    }
  });
}

// Which forward runs, from benchmarks/cpu_lateral_paths.py (RESULTS.md, "CPU lateral paths",
// 2026-11-30: both paths timed interleaved against the reference at the R50 4x16 and 8x8 fusion
// points, batch 2, two threads, of a 56x56 clip (frames of 196/196/49/16 pixels) and of a 224x224
// clip (3136/3136/784/196), on an Intel Xeon with AVX-512, AVX512-BF16/FP16 and AMX):
//   fp32, fp16   the SIMD kernel at k*C_fast <= 256 (conv1 and layer1: 40-224), the fastest path
//                at every size and layout (1.2-4.6x the reference, BLAS 0.8-3.4x); in NCDHW also
//                up to 384 on frames of at least 256 pixels (4x16 layer2 at 28x28: SIMD 1.45x,
//                BLAS 1.31x; on 7x7 frames BLAS 2.0x, SIMD 1.35x); in channels_last_3d up to 448
//                (layer2: SIMD 1.07-1.40x, BLAS 0.90-1.33x) and beyond on frames of at least 128
//                pixels (layer3 at 14x14: SIMD 1.06-1.08x, BLAS 1.01-1.02x; on 4x4 frames BLAS
//                1.1x, SIMD 0.8x). BLAS elsewhere: there the SIMD kernel's register blocks run out
//                of reuse (0.6-0.9x) and MKL's GEMM is the best here (1.1-2.0x);
//   bf16         BLAS: with AVX512-BF16 the SIMD kernel's bf16 loads and stores cost more than they
//                save (``auto`` sends the cases the reference wins to it, see
//                slowfast_fast/backend.py);
//   fp64         BLAS (exact, for gradcheck).
// Two other forwards were measured earlier and removed: one GEMM per tap reading x_fast in place
// (no gather; within noise of BLAS or slower) and PyTorch's conv3d followed by a cat into the
// output (0.96-0.99x the reference, never the best).
enum class Forward { kSimd, kBlas };

Forward choose_forward(at::ScalarType dtype, const Conv& cv, bool channels_last) {
  if (dtype == at::kDouble || dtype == at::kBFloat16) return Forward::kBlas;
  const int64_t kc = cv.k * cv.c_fast;
  const bool simd = channels_last ? (kc <= 448 || cv.hw >= 128) : (kc <= 256 || (kc <= 384 && cv.hw >= 256));
  return simd ? Forward::kSimd : Forward::kBlas;
}

// SLOWFAST_FAST_CPU_LATERAL=simd|blas overrides the rule above, read at every call: for the
// tests of each path and for timing them against each other. "simd" where the kernel does not
// apply (lateral_forward_simd) falls through to "blas".
std::string forced_forward() {
  const char* env = std::getenv("SLOWFAST_FAST_CPU_LATERAL");
  return env == nullptr ? "" : env;
}

template <typename scalar_t>
void lateral_forward(const Tensor& x_slow, const Tensor& x_fast, const Tensor& weight,
                     const std::optional<Tensor>& scale, const std::optional<Tensor>& shift,
                     bool relu, const Conv& cv, Tensor& out) {
  const std::string forced = forced_forward();
  const Forward path = forced == "simd"   ? Forward::kSimd
                       : forced == "blas" ? Forward::kBlas
                                          : choose_forward(x_fast.scalar_type(), cv, is_channels_last(out));
  if (path == Forward::kSimd &&
      lateral_forward_simd<scalar_t>(x_slow, x_fast, weight, scale, shift, relu, cv, out))
    return;
  lateral_forward_blas<scalar_t>(x_slow, x_fast, weight, scale, shift, relu, cv, out);
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
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x_slow.scalar_type(), "lateral_concat", [&] {
    lateral_forward<scalar_t>(x_slow, x_fast, weight, scale, shift, relu, cv, out);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Backward: g = grad_out[:, c_slow:] * (relu ? !(out[:, c_slow:] <= 0) : 1), torch's
// threshold_backward: the gradient passes where the output is NaN.

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

// The lateral gradient of sample n as a (C_lat x m) matrix, its columns m consecutive pixels from
// pixel p0 of output frame t (consecutive frames continue the columns):
// grad_out's own memory when no mask or widening is needed, else a masked acc_t copy in `buf` in
// grad_out's orientation.
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

  Mat<const acc_t> get(int64_t n, int64_t t, int64_t p0, int64_t m, acc_t* buf) const {
    Mat<const scalar_t> g = frame(go_, c_total_, t_slow_, hw_, cl_go_, n, t, c_slow_);
    g.ptr += p0 * g.cs;
    if constexpr (!kWiden) {
      if (mask_ == nullptr) return g;
    }
    const Mat<acc_t> d = cl_go_ ? Mat<acc_t>{buf, 1, c_lat_} : Mat<acc_t>{buf, m, 1};
    if (mask_ == nullptr) {
      for_each(d, c_lat_, m, [&](int64_t o, int64_t i) {
        d.ptr[o * d.rs + i * d.cs] = static_cast<acc_t>(g.ptr[o * g.rs + i * g.cs]);
      });
    } else {
      Mat<const scalar_t> mk = frame(mask_, c_total_, t_slow_, hw_, cl_mask_, n, t, c_slow_);
      mk.ptr += p0 * mk.cs;
      for_each(d, c_lat_, m, [&](int64_t o, int64_t i) {
        // !(out <= 0), not out > 0: torch's ReLU backward passes the gradient where out is NaN.
        const bool pass = !(static_cast<acc_t>(mk.ptr[o * mk.rs + i * mk.cs]) <= acc_t(0));
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

// d = s (or d += s) over a rows x cols block, d and s unit-stride in the same dimension; s is
// rounded to d's type on the way (fp32 -> fp16/bf16).
template <bool kAdd, typename D, typename S>
void move_block(Mat<D> d, Mat<const S> s, int64_t rows, int64_t cols) {
  if (d.cs != 1) {  // unit stride along rows: walk the transposed block
    d = d.transposed();
    s = s.transposed();
    std::swap(rows, cols);
  }
  for (int64_t r = 0; r < rows; ++r) {
    D* dr = d.ptr + r * d.rs;
    const S* sr = s.ptr + r * s.rs;
    if constexpr (kAdd) {
      for (int64_t j = 0; j < cols; ++j) dr[j] += sr[j];
    } else {
      for (int64_t j = 0; j < cols; ++j) dr[j] = static_cast<D>(sr[j]);
    }
  }
}

// d = s for the first contribution, d += s for the later ones.
template <typename D, typename S>
void store_or_add(bool first, Mat<D> d, Mat<const S> s, int64_t rows, int64_t cols) {
  if (first) {
    move_block<false>(d, s, rows, cols);
  } else {
    move_block<true>(d, s, rows, cols);
  }
}

template <typename D>
void zero_block(Mat<D> d, int64_t rows, int64_t cols) {
  if (d.cs != 1) {
    d = d.transposed();
    std::swap(rows, cols);
  }
  for (int64_t r = 0; r < rows; ++r) std::fill(d.ptr + r * d.rs, d.ptr + r * d.rs + cols, D(0));
}

// The pixel blocks grad_input's tasks own: pixels [p0, p0 + size) of every frame of one sample,
// `size` a multiple of 16 (whole cache lines of fp32 rows in NCDHW) chosen so a task's
// k*C_fast x size buffers stay L2-sized, with at least one task per thread. When a block is a
// whole frame, `frames` consecutive output frames share one GEMM (small frames, 16 or 49 pixels,
// would leave it a narrow matrix).
struct PixelBlocks {
  int64_t per_frame, size, frames;
  int64_t count(int64_t batch) const { return batch * per_frame; }
};

PixelBlocks pixel_blocks(const Conv& cv, int64_t budget) {
  const int64_t kc = std::max<int64_t>(1, cv.k * cv.c_fast);
  const int64_t threads = at::get_num_threads();
  int64_t per_frame = std::max<int64_t>(1, (cv.hw * kc + budget - 1) / budget);
  per_frame = std::max(per_frame, (threads + cv.batch - 1) / cv.batch);
  int64_t size = (cv.hw + per_frame - 1) / per_frame;
  size = std::min(cv.hw, (size + 15) / 16 * 16);
  const int64_t frames = size < cv.hw ? 1 : std::clamp<int64_t>(budget / (kc * std::max<int64_t>(1, cv.hw)), 1, cv.t_slow);
  return {(cv.hw + size - 1) / size, size, frames};
}
constexpr int64_t kGradInputBudget = int64_t{1} << 16;

// The transposed conv: for each output frame t, Y (k*C_fast x pixels) = (W * scale)^T @ g[t],
// then tap kt's C_fast rows of Y are the contribution of t to fast frame t*s - p + kt. A task owns
// one pixel block of every frame of a sample and walks t upwards, so each fast frame's
// contributions (at most ceil(k/s)) arrive in order within one task: the first is stored, the
// others added, no atomics, and Y stays in L2 (no tensor of all of Y's values). Fast frames no tap
// reads (stride > k, or past the last tap) are zeroed. fp16/bf16 keep a frame that more than one
// output frame reaches in an fp32 ring slot until its last contribution, so each value is rounded
// once. Y's rows are ordered (c, kt) in NCDHW (a tap's rows k apart, each a run of pixels) and
// (kt, c) in channels_last_3d (a pixel's C_fast values of one tap contiguous).
template <typename scalar_t>
void lateral_grad_input(const GradArgs& a, const Tensor& weight, const std::optional<Tensor>& scale,
                        Tensor& grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool direct = std::is_same_v<acc_t, scalar_t>;
  const Conv& cv = a.cv;
  const int64_t c_lat = cv.c_lat, c_fast = cv.c_fast, hw = cv.hw, k = cv.k, kc = k * c_fast;
  const bool cl = is_channels_last(grad_x);
  if (grad_x.numel() == 0) return;
  // W * scale repacked so that every GEMM operand is row-major in BLAS's eyes (MKL's small-matrix
  // kernels run a transposed operand at about half speed, measured at layer3): NCDHW computes
  // Y = W'^T @ g with W'^T (k*C_fast x C_lat) row-major, rows (c, kt); channels_last_3d computes
  // Y^T (pixels x k*C_fast) = g^T @ W'' with W'' (C_lat x k*C_fast) row-major, columns (kt, c).
  const Tensor w_scaled = scaled_weight<scalar_t, acc_t>(weight, scale).reshape({c_lat, c_fast, k});
  const Tensor w_packed = cl ? w_scaled.permute({0, 2, 1}).contiguous()
                             : w_scaled.reshape({c_lat, kc}).t().contiguous();
  const acc_t* wp = w_packed.const_data_ptr<acc_t>();
  const LateralGrad<scalar_t, acc_t> lateral(a);
  const PixelBlocks blocks = pixel_blocks(cv, kGradInputBudget);
  const int64_t cap = blocks.size, run = blocks.frames;
  std::vector<char> reached(cv.t_fast, 0);
  for (int64_t t = 0; t < cv.t_slow; ++t)
    for (int64_t kt = 0; kt < k; ++kt)
      if (cv.in_range(cv.source(t, kt))) reached[cv.source(t, kt)] = 1;
  scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();

  at::parallel_for(0, blocks.count(cv.batch), 1, [&](int64_t begin, int64_t end) {
    const auto y = scratch<acc_t>(kc * run * cap);
    const auto ring = scratch<acc_t>(direct ? 0 : kc * cap);  // k slots of C_fast x cap
    const auto g_buf = scratch<acc_t>(lateral.needs_copy() ? c_lat * run * cap : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks.per_frame, p0 = (task % blocks.per_frame) * cap;
      const int64_t np = std::min(cap, hw - p0);
      auto gx_block = [&](int64_t tf) {
        Mat<scalar_t> m = frame(gx, c_fast, cv.t_fast, hw, cl, n, tf);
        m.ptr += p0 * m.cs;
        return m;
      };
      for (int64_t tf = 0; tf < cv.t_fast; ++tf)
        if (!reached[tf]) zero_block(gx_block(tf), c_fast, np);
      for (int64_t t0 = 0; t0 < cv.t_slow; t0 += run) {
        // One GEMM for output frames [t0, t0 + nt) (nt > 1 only when the block is whole frames,
        // whose columns then continue from one frame to the next).
        const int64_t nt = std::min(run, cv.t_slow - t0), m = nt * np;
        const Mat<const acc_t> g = lateral.get(n, t0, p0, m, g_buf.get());
        if (cl) {
          gemm<acc_t>(m, kc, c_lat, g.transposed(), Mat<const acc_t>{wp, kc, 1}, acc_t(0),
                      Mat<acc_t>{y.get(), kc, 1});
        } else {
          gemm<acc_t>(kc, m, c_lat, Mat<const acc_t>{wp, c_lat, 1}, g, acc_t(0), Mat<acc_t>{y.get(), m, 1});
        }
        for (int64_t t = t0; t < t0 + nt; ++t) {
          for (int64_t kt = 0; kt < k; ++kt) {
            const int64_t tf = cv.source(t, kt);
            if (!cv.in_range(tf)) continue;
            // Tap kt's C_fast rows of frame t's columns of Y.
            const int64_t i = t - t0;
            const Mat<const acc_t> src = cl ? Mat<const acc_t>{y.get() + i * np * kc + kt * c_fast, 1, kc}
                                            : Mat<const acc_t>{y.get() + kt * m + i * np, k * m, 1};
            const bool first = t == 0 || tf > cv.source(t - 1, k - 1);
            const bool last = t == cv.t_slow - 1 || tf < cv.source(t + 1, 0);
            if constexpr (direct) {
              store_or_add(first, gx_block(tf), src, c_fast, np);
            } else if (first && last) {
              move_block<false>(gx_block(tf), src, c_fast, np);
            } else {
              acc_t* slot = ring.get() + (tf % k) * c_fast * cap;
              const Mat<acc_t> acc = cl ? Mat<acc_t>{slot, 1, c_fast} : Mat<acc_t>{slot, np, 1};
              store_or_add(first, acc, src, c_fast, np);
              if (last) move_block<false>(gx_block(tf), Mat<const acc_t>(acc), c_fast, np);
            }
          }
        }
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
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x_fast.scalar_type(), "lateral_concat_grad_input", [&] {
    lateral_grad_input<scalar_t>(a, weight, scale, grad_x);
  });
  return grad_x;
}

// G (C_lat x k*C_fast) = sum over output frames t and taps kt of g[t] (C_lat x H*W) @
// x_fast[t*s - p + kt]^T (H*W x C_fast), in one of two ways:
// - frames of at least kInPlaceMinPixels pixels: one GEMM per (output frame, tap) that reads the
//   fast frame in place (fp16/bf16 frames are widened into a buffer first) into G's block of tap
//   kt, G's columns ordered (kt, c) so that block is a plain matrix;
// - smaller frames (16 or 49 pixels, where such a GEMM would reduce over a few dozen values per
//   call): the columns of a run of output frames gathered (gather_block, as the forward does) and
//   one GEMM per run, G's columns in the gathered rows' order ((c, kt) in NCDHW, (kt, c) in
//   channels_last_3d).
// G is put in the weight's (c, kt) order at the end. sum_g[o] = sum of g[o, :] is a GEMM with a
// ones vector (the same sum as a loop is a serial chain of adds). Each thread accumulates its
// tasks into its own acc_t partial sums, which are then added in thread order: a real reduction,
// deterministic for a given thread count.
constexpr int64_t kInPlaceMinPixels = 128;
constexpr int64_t kGatherBudget = int64_t{1} << 19;

template <typename scalar_t>
void lateral_grad_weight(const GradArgs& a, const Tensor& weight, const std::optional<Tensor>& scale,
                         Tensor& grad_w, Tensor& grad_scale, Tensor& grad_shift) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool direct = std::is_same_v<acc_t, scalar_t>;
  const Conv& cv = a.cv;
  const int64_t c_lat = cv.c_lat, c_fast = cv.c_fast, hw = cv.hw, k = cv.k, kc = k * c_fast;
  const int64_t slot = c_lat * kc + c_lat;
  const int64_t threads = at::get_num_threads();
  std::vector<acc_t> partial(threads * slot, acc_t(0));
  const LateralGrad<scalar_t, acc_t> lateral(a);
  const bool cl = is_channels_last(a.x_fast);
  const scalar_t* xf = a.x_fast.const_data_ptr<scalar_t>();
  const bool in_place = hw >= kInPlaceMinPixels;
  const bool ct_order = !in_place && !cl;  // G's columns in (c, kt) order, else (kt, c)
  const Runs runs = in_place ? Runs{cv.t_slow, 1} : frame_runs(cv, kGatherBudget);
  const std::vector<acc_t> ones(runs.frames * hw, acc_t(1));

  at::parallel_for(0, runs.count(cv.batch), 1, [&](int64_t begin, int64_t end) {
    const int64_t thread = at::get_thread_num();
    TORCH_INTERNAL_ASSERT(thread < threads);
    acc_t* G = partial.data() + thread * slot;
    acc_t* sum_g = G + c_lat * kc;
    const auto g_buf = scratch<acc_t>(lateral.needs_copy() ? c_lat * runs.frames * hw : 0);
    const auto x_buf = scratch<acc_t>(in_place ? (direct ? 0 : c_fast * hw) : kc * runs.frames * hw);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / runs.per_sample, t = (task % runs.per_sample) * runs.frames;
      const int64_t nt = std::min(runs.frames, cv.t_slow - t), m = nt * hw;
      const Mat<const acc_t> g = lateral.get(n, t, 0, m, g_buf.get());
      gemm<acc_t>(c_lat, 1, m, g, Mat<const acc_t>{ones.data(), 1, 1}, acc_t(1), Mat<acc_t>{sum_g, 1, 1});
      if (!in_place) {
        const Mat<const acc_t> cols = gather_block<scalar_t, acc_t>(xf, cl, cv, Block{n, t, nt, 0, hw}, x_buf.get());
        gemm<acc_t>(c_lat, kc, m, g, cols.transposed(), acc_t(1), Mat<acc_t>{G, kc, 1});
        continue;
      }
      for (int64_t kt = 0; kt < k; ++kt) {
        const int64_t tf = cv.source(t, kt);
        if (!cv.in_range(tf)) continue;
        const Mat<const scalar_t> x = frame(xf, c_fast, cv.t_fast, hw, cl, n, tf);
        Mat<const acc_t> xa;
        if constexpr (direct) {
          xa = x;
        } else {
          const Mat<acc_t> w = cl ? Mat<acc_t>{x_buf.get(), 1, c_fast} : Mat<acc_t>{x_buf.get(), hw, 1};
          move_block<false>(w, x, c_fast, hw);
          xa = w;
        }
        gemm<acc_t>(c_lat, c_fast, hw, g, xa.transposed(), acc_t(1), Mat<acc_t>{G + kt * c_fast, kc, 1});
      }
    }
  });
  for (int64_t t = 1; t < threads; ++t)
    for (int64_t i = 0; i < slot; ++i) partial[i] += partial[t * slot + i];

  const acc_t* G = partial.data();
  const std::vector<acc_t> s = channel_vector<scalar_t, acc_t>(scale, c_lat, acc_t(1));
  const Tensor w = weight.contiguous();
  const scalar_t* wp = w.const_data_ptr<scalar_t>();
  scalar_t* gw = grad_w.mutable_data_ptr<scalar_t>();
  scalar_t* gs = grad_scale.mutable_data_ptr<scalar_t>();
  scalar_t* gb = grad_shift.mutable_data_ptr<scalar_t>();
  // The weight's (C_lat, C_fast, k) order: element r = c*k + kt of row o is G[o, r] in (c, kt)
  // order, else G[o, kt*C_fast + c].
  // The dot products keep 8 partial sums: one running sum is a serial chain of adds (about 1 ns
  // per element, 160 us at layer3's 164K weights) that the compiler may not reorder.
  for (int64_t o = 0; o < c_lat; ++o) {
    acc_t part[8] = {};
    const acc_t* g_row = G + o * kc;
    const scalar_t* w_row = wp + o * kc;
    scalar_t* gw_row = gw + o * kc;
    for (int64_t c = 0; c < c_fast; ++c)
      for (int64_t kt = 0; kt < k; ++kt) {
        const int64_t r = c * k + kt;
        const acc_t v = g_row[ct_order ? r : kt * c_fast + c];
        gw_row[r] = static_cast<scalar_t>(v * s[o]);
        part[r & 7] += static_cast<acc_t>(w_row[r]) * v;
      }
    gs[o] = static_cast<scalar_t>(((part[0] + part[1]) + (part[2] + part[3])) +
                                  ((part[4] + part[5]) + (part[6] + part[7])));
    gb[o] = static_cast<scalar_t>(G[c_lat * kc + o]);
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
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x_fast.scalar_type(), "lateral_concat_grad_weight", [&] {
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
