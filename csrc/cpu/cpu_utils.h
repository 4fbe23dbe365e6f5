// Helpers shared by the CPU kernels: strided matrix views, a GEMM that writes straight into strided
// tensor slices, and a loop over such matrices.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/OpMathType.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <type_traits>

// The BLAS that libtorch_cpu carries (MKL on x86 wheels, OpenBLAS elsewhere) exports the Fortran
// GEMMs; they are declared weak so that a build without them still loads and takes the ATen path.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}

namespace slowfast_fast::cpu {

// A rows x cols matrix at `ptr` with element (i, j) at ptr[i * rs + j * cs]; one stride is 1.
template <typename T>
struct Mat {
  T* ptr;
  int64_t rs;
  int64_t cs;
  Mat<T> transposed() const { return {ptr, cs, rs}; }
  operator Mat<const T>() const { return {ptr, rs, cs}; }
};

// Channels [c0, c0 + C) of frame t of sample n of a dense 5-D tensor, as a (C x H*W) matrix: in
// NCDHW a channel row is an H*W plane (rows T*H*W apart); in channels_last_3d a channel is a column.
template <typename T>
Mat<T> frame(T* base, int64_t channels, int64_t frames, int64_t hw, bool channels_last, int64_t n,
             int64_t t, int64_t c0 = 0) {
  if (channels_last) return {base + (n * frames + t) * hw * channels + c0, 1, channels};
  return {base + ((n * channels + c0) * frames + t) * hw, frames * hw, 1};
}

namespace detail {

// BLAS wants one unit stride and a leading dimension at least the contiguous extent; a dimension
// of size 1 may carry any stride, so give it one BLAS accepts.
template <typename T>
Mat<T> normalized(Mat<T> m, int64_t rows, int64_t cols) {
  if (cols == 1) m.cs = 1;
  if (rows == 1) m.rs = m.cs == 1 ? cols : 1;
  TORCH_INTERNAL_ASSERT((m.cs == 1 && m.rs >= cols) || (m.rs == 1 && m.cs >= rows));
  return m;
}

inline bool fits_int(int64_t v) { return v <= INT_MAX; }

template <typename T>
at::Tensor view(Mat<T> m, int64_t rows, int64_t cols) {
  using U = std::remove_const_t<T>;
  return at::from_blob(const_cast<U*>(m.ptr), {rows, cols}, {m.rs, m.cs},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<U>::value));
}

}  // namespace detail

// c = a @ b + beta * c for (m x k) a, (k x n) b, (m x n) c; T is float or double. beta == 0
// ignores c's old contents. Called from inside parallel regions: BLAS runs single-threaded there.
template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, Mat<const T> a, Mat<const T> b, T beta, Mat<T> c) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  if (m == 0 || n == 0) return;
  c = detail::normalized(c, m, n);
  if (c.cs != 1) {  // column-major c: compute its transpose, which is row-major
    gemm<T>(n, m, k, b.transposed(), a.transposed(), beta, c.transposed());
    return;
  }
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) {
      T* row = c.ptr + i * c.rs;
      for (int64_t j = 0; j < n; ++j) row[j] = beta == T(0) ? T(0) : beta * row[j];
    }
    return;
  }
  a = detail::normalized(a, m, k);
  b = detail::normalized(b, k, n);
  // Row-major c = a @ b is column-major c^T = b^T a^T, where a row-major operand read as
  // column-major is its own transpose ('N') and a column-major one needs 'T'.
  const char tb = b.cs == 1 ? 'N' : 'T';
  const char ta = a.cs == 1 ? 'N' : 'T';
  const int64_t ldb = b.cs == 1 ? b.rs : b.cs;
  const int64_t lda = a.cs == 1 ? a.rs : a.cs;
  const int64_t ldc = c.rs;
  auto* blas = [] {
    if constexpr (std::is_same_v<T, float>) {
      return &sgemm_;
    } else {
      return &dgemm_;
    }
  }();
  if (blas != nullptr && detail::fits_int(m) && detail::fits_int(n) && detail::fits_int(k) &&
      detail::fits_int(lda) && detail::fits_int(ldb) && detail::fits_int(ldc)) {
    const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
    const int ilda = static_cast<int>(lda), ildb = static_cast<int>(ldb),
              ildc = static_cast<int>(ldc);
    const T one = 1;
    blas(&tb, &ta, &in, &im, &ik, &one, b.ptr, &ildb, a.ptr, &ilda, &beta, c.ptr, &ildc);
    return;
  }
  // No BLAS symbol, or sizes past 32-bit BLAS: ATen's addmm on views of the same memory.
  at::Tensor cv = detail::view(c, m, n);
  cv.addmm_(detail::view(a, m, k), detail::view(b, k, n), beta, 1);
}

// Runs f(i, j) over a (rows x cols) matrix with the unit-stride dimension of `m` innermost.
template <typename T, typename F>
void for_each(Mat<T> m, int64_t rows, int64_t cols, const F& f) {
  if (m.cs == 1) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) f(i, j);
  } else {
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t i = 0; i < rows; ++i) f(i, j);
  }
}

inline void check_cpu_5d(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.dim() == 5, name, " must be 5-D, got ", t.dim(), "-D");
}

}  // namespace slowfast_fast::cpu
