// A CPU emulator for the CUDA kernels of csrc/cuda, so that CI (no GPU) runs the very code nvcc compiles:
// the .cu files are compiled by the host compiler with SLOWFAST_FAST_CUDA_EMULATION defined, which
// makes csrc/cuda/cuda_common.cuh include this header instead of the CUDA ones.
//
// What is emulated, and how faithfully:
// * A launch runs its blocks one after another on the calling OS thread (at most `max_blocks` of them
//   when configure() caps the grid: every kernel here loops over its tiles with a grid stride, so a
//   capped grid runs each block's loop several times, as large inputs do on a GPU). A block's threads
//   are fibers (stacks with a guard page, switched with _setjmp/_longjmp) scheduled cooperatively:
//   every ready thread runs until it reaches a barrier (__syncthreads, or the warp-level exchange of a
//   shuffle) or exits; a barrier is released only when every thread it covers waits there.
//   Run-to-barrier is the most hostile schedule for a missing __syncthreads where the thread that
//   should wait runs first in the phase: it runs its whole phase before the others start. The order of
//   the threads within a phase is forward, reverse or alternating between phases (configure()); a
//   hazard shows only in an order that runs its victim first.
// * __shared__ variables are function statics: one copy shared by the block's fibers (blocks never
//   overlap). Kernels name their __shared__ variables in SLOWFAST_FAST_SHARED_POISON(var) (a no-op
//   under nvcc; a test checks that every declaration has one): the first thread of each block to get
//   there fills the variable with 0xff bytes (NaN in every floating type), so reading shared memory the
//   block has not written (uninitialized on a GPU) gives NaN, not zeros or an earlier block's values.
// * cp.async: the destination is filled with 0xff when the copy is issued (its contents are undefined
//   until the copy completes, so a thread still reading the old contents of a slot being refilled reads
//   NaN), and the copy lands only when the issuing thread's cp.async.wait_group retires its group (the
//   latest moment the hardware may complete it, so reading before the wait reads NaN). Copies still in
//   flight when a thread exits, and misaligned cp.async, are errors.
// * wmma: every lane holds the whole fragment (elementwise fragment code is layout-agnostic, as the
//   CUDA documentation requires of it); mma_sync accumulates in fp32 and, for TF32, uses the top 10
//   mantissa bits of each input (the kernels round with __float_to_tf32 first, so this changes nothing
//   for them). load/store_matrix_sync check the 32-byte alignment and 16-byte ldm multiple the
//   hardware requires. Each lane computes and stores the whole tile itself (the last lane's store
//   wins); that every lane of the warp makes each wmma call (warp-collective on the GPU) is checked by
//   count: at every __syncthreads and at the block's end, all lanes of a warp must have made the same
//   number of wmma and shuffle calls (a lane that skips one, or makes an extra one, fails the launch).
// * Global memory is the CPU tensors' memory. 16-byte accesses are uint4 (alignas(16)); the compiler
//   may use aligned vector instructions for them, so a misaligned one can crash the process as on a
//   GPU, but that is not guaranteed.
// Not emulated: timing, occupancy, registers, memory coalescing, FMA contraction (results differ from a
// GPU's in the last bits), inter-block concurrency (no kernel here uses atomics or inter-block
// communication), and memory safety in the default build: an out-of-bounds global or shared access
// reads or corrupts neighbouring host memory undetected. Built with -fsanitize=address (and run with
// libasan preloaded: tests/_cuda_emulation.py, SLOWFAST_FAST_EMULATION_ASAN=1), AddressSanitizer checks
// every access of the kernels: tensors are heap blocks with redzones, __shared__ variables globals
// with redzones, cp.async copies memcpy's from their sources when they land. The fiber switches tell
// it which stack is live (__sanitizer_start/finish_switch_fiber). On a GPU, compute-sanitizer in
// benchmarks/gpu_check.sh checks the same.
#pragma once

// glibc's fortified longjmp (_FORTIFY_SOURCE, on by default in some distributions' compilers) aborts on
// a jump to another stack, which is how fibers switch: tests/_cuda_emulation.py builds with
// -U_FORTIFY_SOURCE.
#if defined(_FORTIFY_SOURCE) && _FORTIFY_SOURCE > 0 && defined(__OPTIMIZE__)
#error "build the CUDA emulator with -U_FORTIFY_SOURCE (fibers switch stacks with _longjmp)"
#endif

#include <c10/core/Device.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define SLOWFAST_FAST_EMULATION_ASAN 1
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // filled with NaN per block by SLOWFAST_FAST_SHARED_POISON (see above)
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  return uint4{x, y, z, w};
}
using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

// The CUDA runtime and c10::cuda pieces the host code uses.
using cudaStream_t = struct CUstream_st*;
enum cudaError_t { cudaSuccess = 0 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
#define C10_CUDA_CHECK(expr) TORCH_CHECK((expr) == cudaSuccess, #expr " failed")
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)

namespace slowfast_fast {
namespace emulation {

// configure(): the thread order within a phase, and the multiprocessor count the host code reads.
enum Order : int { kForward = 0, kReverse = 1, kAlternate = 2 };

struct Settings {
  int order = kForward;
  int sms = 132;         // an H200's, so that split counts match the GPU's
  unsigned max_blocks = 0;  // 0: every block of the grid
  int64_t launches = 0;
  int64_t blocks = 0;
  int64_t barriers = 0;  // block-wide barriers released
  int64_t async_copies = 0;
};

inline Settings& settings() {
  static Settings s;
  return s;
}

struct Copy {
  void* dst;
  const void* src;
  int bytes;
  bool valid;
};

enum class Wait { kNone, kBlock, kWarp, kDone };

// A fiber starts with swapcontext (makecontext gives it its own stack) and is switched afterwards with
// _setjmp/_longjmp, which unlike swapcontext make no system call (the signal mask never changes here):
// a block switches threads hundreds of thousands of times.
struct Fiber {
  ucontext_t ctx;
  jmp_buf jb;
  void* fake_stack = nullptr;  // AddressSanitizer's, saved while suspended
  uint64_t collectives = 0;    // warp-collective calls made (wmma loads, stores, products; shuffles)
  bool started = false;
  Wait wait = Wait::kNone;
  std::vector<Copy> open;                 // cp.async issued since the last commit
  std::vector<std::vector<Copy>> groups;  // committed, oldest first
};

struct Block {
  unsigned threads = 0;
  std::vector<Fiber> fibers;
  ucontext_t main;
  jmp_buf main_jb;
  void* main_fake_stack = nullptr;  // AddressSanitizer's view of the launching thread's stack
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
  unsigned current = 0;
  const std::function<void()>* body = nullptr;
  std::string error;
  alignas(16) unsigned char exchange[1024][16];  // warp shuffles: one slot per thread
  // Per warp, the last mma_sync's operands and result (see nvcuda::wmma::mma_sync).
  std::vector<std::vector<unsigned char>> mma_memo;
  std::vector<const void*> poisoned;  // __shared__ variables filled with NaN in this block
};

inline thread_local Block* tls_block = nullptr;

constexpr size_t kStackBytes = 256 * 1024;

// Fiber stacks, mmap'ed with an inaccessible page below each, so that an overflow faults instead of
// corrupting a neighbour. Kept for the process (one per thread a block has had).
struct Stack {
  char* base = nullptr;  // the usable part, kStackBytes
  Stack() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("CUDA emulation: cannot map a fiber stack");
    mprotect(p, page, PROT_NONE);
    base = static_cast<char*>(p) + page;
  }
};

inline std::vector<std::unique_ptr<Stack>>& stacks() {
  static thread_local std::vector<std::unique_ptr<Stack>> s;
  return s;
}

[[noreturn]] inline void fail(const std::string& what) {
  throw std::runtime_error("CUDA emulation: " + what);
}

inline Block& block() {
  if (tls_block == nullptr) fail("a device function ran outside a kernel launch");
  return *tls_block;
}

inline Fiber& this_thread() {
  Block& b = block();
  return b.fibers[b.current];
}

// AddressSanitizer must know which stack runs: a switch is announced before the jump
// (start_switch: the stack being entered, and where to keep the one being left; nullptr for a thread
// that never comes back) and completed after it (finish_switch, on the new stack). No-ops otherwise.
inline void start_switch(void** fake_stack_save, const void* bottom, size_t size) {
#ifdef SLOWFAST_FAST_EMULATION_ASAN
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

inline void finish_switch(void* fake_stack_save, const void** bottom_old, size_t* size_old) {
#ifdef SLOWFAST_FAST_EMULATION_ASAN
  __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
  (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

// Suspends the running thread until the scheduler releases `w` (or forever, for kDone).
inline void suspend(Wait w) {
  Block& b = block();
  Fiber& f = b.fibers[b.current];
  f.wait = w;
  if (_setjmp(f.jb) == 0) {
    start_switch(w == Wait::kDone ? nullptr : &f.fake_stack, b.main_stack_bottom, b.main_stack_size);
    _longjmp(b.main_jb, 1);
  }
  finish_switch(f.fake_stack, &b.main_stack_bottom, &b.main_stack_size);  // resumed
}

// Runs fiber i until it suspends.
inline void resume(Block& b, unsigned i) {
  Fiber& f = b.fibers[i];
  if (_setjmp(b.main_jb) != 0) {  // the fiber suspended
    finish_switch(b.main_fake_stack, nullptr, nullptr);
    return;
  }
  start_switch(&b.main_fake_stack, f.ctx.uc_stack.ss_sp, f.ctx.uc_stack.ss_size);
  if (f.started) _longjmp(f.jb, 1);
  f.started = true;
  swapcontext(&b.main, &f.ctx);  // never returns: the fiber comes back through main_jb
}

inline void fiber_entry() {
  Block& b = *tls_block;
  finish_switch(nullptr, &b.main_stack_bottom, &b.main_stack_size);  // first entry
  const unsigned self = b.current;
  try {
    (*b.body)();
  } catch (const std::exception& e) {
    if (b.error.empty()) b.error = std::string("thread ") + std::to_string(self) + ": " + e.what();
  } catch (...) {
    if (b.error.empty()) b.error = "thread " + std::to_string(self) + ": unknown exception";
  }
  Fiber& f = b.fibers[self];
  if (b.error.empty() && (!f.open.empty() || !f.groups.empty())) {
    b.error = "thread " + std::to_string(self) + " exited with cp.async copies in flight";
  }
  suspend(Wait::kDone);  // never resumed
}

// Warp-collective calls (wmma load/store/mma_sync, shuffles) must be made by every lane of the warp:
// checked at every block-wide barrier and when the block ends, by the number each lane has made.
inline void note_collective() {
  ++this_thread().collectives;
}

inline void check_collectives(const Block& b) {
  for (unsigned w0 = 0; w0 < b.threads; w0 += 32) {
    const unsigned w1 = std::min(b.threads, w0 + 32);
    for (unsigned i = w0 + 1; i < w1; ++i) {
      if (b.fibers[i].collectives != b.fibers[w0].collectives) {
        fail("lanes of warp " + std::to_string(w0 / 32) + " made different numbers of warp-collective calls " +
             "(wmma, shuffles): thread " + std::to_string(w0) + " " + std::to_string(b.fibers[w0].collectives) +
             ", thread " + std::to_string(i) + " " + std::to_string(b.fibers[i].collectives));
      }
    }
  }
}

inline void release_or_fail(Block& b) {
  bool released = false;
  for (unsigned w0 = 0; w0 < b.threads; w0 += 32) {
    const unsigned w1 = std::min(b.threads, w0 + 32);
    unsigned warp = 0, done = 0;
    for (unsigned i = w0; i < w1; ++i) {
      warp += b.fibers[i].wait == Wait::kWarp;
      done += b.fibers[i].wait == Wait::kDone;
    }
    if (warp > 0 && warp + done == w1 - w0) {
      if (done > 0) fail("a warp shuffle with lanes that have exited");
      for (unsigned i = w0; i < w1; ++i) b.fibers[i].wait = Wait::kNone;
      released = true;
    }
  }
  if (released) return;
  unsigned at_block = 0, done = 0;
  for (const Fiber& f : b.fibers) {
    at_block += f.wait == Wait::kBlock;
    done += f.wait == Wait::kDone;
  }
  if (at_block > 0 && at_block + done == b.threads) {
    if (done > 0) fail("__syncthreads reached by some threads of a block after others exited");
    check_collectives(b);
    for (Fiber& f : b.fibers) f.wait = Wait::kNone;
    ++settings().barriers;
    return;
  }
  fail("deadlock: the threads of a block wait at different barriers");
}

// Runs one block of `threads` threads to completion.
inline void run_block(Block& b) {
  auto& pool = stacks();
  while (pool.size() < b.threads) pool.emplace_back(new Stack());
  b.poisoned.clear();
  b.fibers.assign(b.threads, Fiber{});
  b.mma_memo.assign((b.threads + 31) / 32, {});
  for (unsigned i = 0; i < b.threads; ++i) {
    Fiber& f = b.fibers[i];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = pool[i]->base;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  bool forward = settings().order != kReverse;
  for (;;) {
    for (unsigned j = 0; j < b.threads; ++j) {
      const unsigned i = forward ? j : b.threads - 1 - j;
      if (b.fibers[i].wait != Wait::kNone) continue;
      b.current = i;
      threadIdx = dim3(i);
      resume(b, i);
      if (!b.error.empty()) fail(b.error);
    }
    if (settings().order == kAlternate) forward = !forward;
    bool all_done = true;
    for (const Fiber& f : b.fibers) all_done = all_done && f.wait == Wait::kDone;
    if (all_done) {
      check_collectives(b);
      return;
    }
    release_or_fail(b);
  }
}

// Runs kernel body `body` over a 1-D grid of 1-D blocks.
inline void run_kernel(dim3 grid, dim3 threads, const std::function<void()>& body) {
  if (tls_block != nullptr) fail("a kernel launched from inside a kernel");
  if (grid.y != 1 || grid.z != 1 || threads.y != 1 || threads.z != 1) fail("only 1-D grids and blocks");
  if (threads.x == 0 || threads.x > 1024) fail("block of " + std::to_string(threads.x) + " threads");
  if (grid.x == 0) fail("empty grid");
  ++settings().launches;
  if (settings().max_blocks > 0 && grid.x > settings().max_blocks) grid.x = settings().max_blocks;
  auto b = std::make_unique<Block>();
  b->threads = threads.x;
  b->body = &body;
  gridDim = grid;
  blockDim = threads;
  tls_block = b.get();
  try {
    for (unsigned x = 0; x < grid.x; ++x) {
      blockIdx = dim3(x);
      ++settings().blocks;
      run_block(*b);
    }
  } catch (...) {
    tls_block = nullptr;
    throw;
  }
  tls_block = nullptr;
}

// SLOWFAST_FAST_LAUNCH(grid, block, stream, kernel)(args...): the arguments are converted to the
// kernel's parameter types once, as a launch copies them, and every thread calls the kernel with them.
template <typename... P>
auto launch(dim3 grid, dim3 threads, void (*kernel)(P...)) {
  return [grid, threads, kernel](auto&&... args) {
    const std::tuple<std::decay_t<P>...> params(std::forward<decltype(args)>(args)...);
    const std::function<void()> body = [&] { std::apply(kernel, params); };
    run_kernel(grid, threads, body);
  };
}

inline void check_aligned(const void* p, size_t bytes, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % bytes != 0) {
    fail(std::string(what) + ": address not aligned to " + std::to_string(bytes) + " bytes");
  }
}

inline void cp_async(void* dst, const void* src, int bytes, bool valid) {
  check_aligned(dst, bytes, "cp.async destination");
  if (valid) check_aligned(src, bytes, "cp.async source");
  ++settings().async_copies;
  std::memset(dst, 0xff, bytes);  // undefined until the copy completes
  this_thread().open.push_back(Copy{dst, src, bytes, valid});
}

// SLOWFAST_FAST_SHARED_POISON(var): the first thread of the block to get here fills var with 0xff.
inline void poison_shared(void* p, size_t bytes) {
  Block& b = block();
  for (const void* q : b.poisoned)
    if (q == p) return;
  b.poisoned.push_back(p);
  std::memset(p, 0xff, bytes);
}

inline void cp_async_commit() {
  Fiber& f = this_thread();
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}

inline void cp_async_wait(int pending) {
  Fiber& f = this_thread();
  while (static_cast<int>(f.groups.size()) > pending) {
    for (const Copy& c : f.groups.front()) {
      if (c.valid) std::memcpy(c.dst, c.src, c.bytes);
      else std::memset(c.dst, 0, c.bytes);
    }
    f.groups.erase(f.groups.begin());
  }
}

}  // namespace emulation
}  // namespace slowfast_fast

inline void __syncthreads() {
  slowfast_fast::emulation::suspend(slowfast_fast::emulation::Wait::kBlock);
}

// Lane i gets lane i + delta's v (its own where i + delta is past the warp), as the hardware does.
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
  namespace emu = slowfast_fast::emulation;
  static_assert(sizeof(T) <= 16 && std::is_trivially_copyable_v<T>, "shuffled values are at most 16 bytes");
  if (mask != 0xffffffffu) emu::fail("__shfl_down_sync with a partial mask is not emulated");
  emu::Block& b = emu::block();
  const unsigned self = b.current;
  emu::note_collective();
  std::memcpy(b.exchange[self], &v, sizeof(T));
  emu::suspend(emu::Wait::kWarp);  // every lane has published its value
  const unsigned lane = self % 32;
  const unsigned src = lane + delta < 32 && self + delta < b.threads ? self + delta : self;
  T out;
  std::memcpy(&out, b.exchange[src], sizeof(T));
  emu::suspend(emu::Wait::kWarp);  // every lane has read before the slots are reused
  return out;
}

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  if (attr != cudaDevAttrMultiProcessorCount) return static_cast<cudaError_t>(1);
  *value = slowfast_fast::emulation::settings().sms;
  return cudaSuccess;
}

namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
inline cudaStream_t getCurrentCUDAStream() {
  return nullptr;
}
}  // namespace cuda
}  // namespace c10

// wmma: see the file comment.
namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int kRows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int kCols = std::is_same_v<Use, matrix_a> ? K : N;
  using storage_element_type = std::conditional_t<std::is_same_v<T, precision::tf32>, float, T>;
  static constexpr int num_elements = kRows * kCols;
  storage_element_type x[num_elements];  // the whole tile, row-major
};

// cvt.rna.tf32.f32: round to 10 mantissa bits, ties away from zero; kept in an fp32 container.
inline float __float_to_tf32(float f) {
  if (!std::isfinite(f)) return f;
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits = (bits + 0x1000u) & 0xffffe000u;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename Frag, typename V>
void fill_fragment(Frag& f, const V& v) {
  for (auto& e : f.x) e = static_cast<typename Frag::storage_element_type>(v);
}

inline void check_matrix_pointer(const void* p, unsigned ldm, size_t elem) {
  slowfast_fast::emulation::check_aligned(p, 32, "wmma matrix pointer");
  if (ldm * elem % 16 != 0) slowfast_fast::emulation::fail("wmma ldm is not a multiple of 16 bytes");
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename P>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  static_assert(!std::is_void_v<Layout>, "matrix_a/matrix_b fragments have a layout");
  static_assert(std::is_same_v<P, typename F::storage_element_type>, "pointer type matches the fragment");
  check_matrix_pointer(p, ldm, sizeof(P));
  slowfast_fast::emulation::note_collective();
  for (int r = 0; r < F::kRows; ++r)
    for (int c = 0; c < F::kCols; ++c)
      f.x[r * F::kCols + c] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
}

template <typename T>
float tensor_core_input(T v) {
  if constexpr (std::is_same_v<T, float>) {  // TF32: the tensor cores read 10 mantissa bits
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if (std::isfinite(v)) bits &= 0xffffe000u;
    float out;
    std::memcpy(&out, &bits, 4);
    return out;
  } else {
    return static_cast<float>(v);
  }
}

// Every lane of a warp computes the same product from the same fragments, so the emulator keeps each
// warp's last operands and result and a lane whose operands are byte-for-byte the same takes that
// result: exact, and 32 times less arithmetic.
template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  namespace emu = slowfast_fast::emulation;
  constexpr size_t kA = sizeof(a.x), kB = sizeof(b.x), kC = sizeof(c.x);
  // The memo's key starts with the shape and operand type, so products of other shapes or types whose
  // operands happen to have the same bytes never match.
  const int tag[4] = {M, N, K, std::is_same_v<T, precision::tf32> ? 4 : static_cast<int>(sizeof(T)) + 8 * std::is_same_v<T, __nv_bfloat16>};
  constexpr size_t kT = sizeof(tag);
  emu::Block& blk = emu::block();
  emu::note_collective();
  std::vector<unsigned char>& memo = blk.mma_memo[blk.current / 32];
  if (memo.size() == kT + kA + kB + 2 * kC && std::memcmp(memo.data(), tag, kT) == 0 &&
      std::memcmp(memo.data() + kT, a.x, kA) == 0 && std::memcmp(memo.data() + kT + kA, b.x, kB) == 0 &&
      std::memcmp(memo.data() + kT + kA + kB, c.x, kC) == 0) {
    std::memcpy(d.x, memo.data() + kT + kA + kB + kC, kC);
    return;
  }
  float fa[M * K], fb[K * N], out[M * N];
  for (int e = 0; e < M * K; ++e) fa[e] = tensor_core_input(a.x[e]);
  for (int e = 0; e < K * N; ++e) fb[e] = tensor_core_input(b.x[e]);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k) acc += fa[i * K + k] * fb[k * N + j];
      out[i * N + j] = acc;
    }
  memo.resize(kT + kA + kB + 2 * kC);
  std::memcpy(memo.data(), tag, kT);
  std::memcpy(memo.data() + kT, a.x, kA);
  std::memcpy(memo.data() + kT + kA, b.x, kB);
  std::memcpy(memo.data() + kT + kA + kB, c.x, kC);
  std::memcpy(memo.data() + kT + kA + kB + kC, out, kC);
  std::memcpy(d.x, out, kC);
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  check_matrix_pointer(p, ldm, sizeof(float));
  slowfast_fast::emulation::note_collective();
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) (layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.x[i * N + j];
}

}  // namespace wmma
}  // namespace nvcuda
