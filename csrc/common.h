// Helpers shared by the CPU and CUDA kernels: the resampling input check, the memory-format rule (mirrors
// slowfast_fast/_layout.py) and PyTorch's nearest source-index rule (mirrors reference.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace slowfast_fast {

// channels_last_3d exactly when `t` is densely channels_last_3d and not also plainly contiguous.
inline at::MemoryFormat output_memory_format(const at::Tensor& t) {
  if (t.dim() == 5 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast3d)) {
    return at::MemoryFormat::ChannelsLast3d;
  }
  return at::MemoryFormat::Contiguous;
}

// A resampling input as F.interpolate (the reference) accepts it: only the batch may be empty.
inline void check_resample_content(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.size(1) >= 1 && x.size(3) >= 1 && x.size(4) >= 1, name,
              " needs channels and pixels (only the batch may be 0), got C=", x.size(1), ", H x W = ",
              x.size(3), " x ", x.size(4));
}

// floor(t_in * scale_factor) as F.interpolate computes the output size (in double).
inline int64_t resampled_length(int64_t t_in, double scale_factor) {
  return static_cast<int64_t>(std::floor(static_cast<double>(t_in) * scale_factor));
}

// PyTorch's nearest rule for 5-D inputs given a scale factor: min(floor(dst * float(1/scale)), t_in-1)
// with the product in float, so odd rates agree with F.interpolate bit for bit; on the CPU for double
// data (`wide`) the scale and the product are in double and only the product is rounded to float
// before the floor (at::opmath_type<double> in PyTorch's CPU kernel; T=65 at 6/7: frame 54 reads 63
// where the float rule reads 62). CUDA uses the float rule for every dtype. No identity special case:
// for a scale in (1, 1 + 1/T) the lengths agree but frame 0 repeats and the last frame is dropped, as
// F.interpolate does.
struct NearestIndex {
  int64_t t_in;
  int64_t t_out;
  float scale;
  double wide_scale;  // 0 for the float rule
  NearestIndex(int64_t t_in_, double scale_factor, bool wide = false)
      : t_in(t_in_), t_out(resampled_length(t_in_, scale_factor)),
        scale(static_cast<float>(1.0 / scale_factor)), wide_scale(wide ? 1.0 / scale_factor : 0.0) {}
#if defined(__CUDACC__)
  __host__ __device__
#endif
  inline int64_t operator()(int64_t dst) const {
    float product = static_cast<float>(dst) * scale;
#if !defined(__CUDA_ARCH__)  // the CUDA kernels use the float rule only: no double math on the device
    if (wide_scale != 0.0) product = static_cast<float>(static_cast<double>(dst) * wide_scale);
#endif
    int64_t src = static_cast<int64_t>(floorf(product));
    return src < t_in - 1 ? src : t_in - 1;
  }
};

}  // namespace slowfast_fast
