"""Helpers shared by the Triton launchers: interpreter detection, autotuning (configs, keys, the
on-disk cache, the fixed choice during CUDA-graph capture), the device guard, strides with H and W
merged into one spatial index, and dot precision/accumulator choices."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os

import torch
import triton
import triton.language as tl

from slowfast_fast._layout import output_memory_format
from slowfast_fast._precision import conv_allows_tf32

# Read once: Triton itself reads the flag when a kernel is decorated, so it cannot change later.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


# SLOWFAST_FAST_TRITON_AUTOTUNE=0 (read at import): every kernel runs its first (default) config and
# nothing is benchmarked: one JIT compile per kernel variant instead of one per config, and no tuning
# pause per new shape. For quick start-up and short GPU test runs; tuned configs are usually faster.
AUTOTUNE = os.environ.get("SLOWFAST_FAST_TRITON_AUTOTUNE", "1").strip() != "0"


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for the launchers' host arithmetic. ``triton.cdiv`` also works on the host, but as
    a constexpr function whose every host call goes through Triton's JIT front end (several µs each;
    the backward launcher used to make 13 such calls per call: ``benchmarks/host_overhead.py``)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= ``n`` (``triton.next_power_of_2`` on the host, without its JIT front
    end; 0 for 0, as Triton's)."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def autotune_configs(gpu: list[triton.Config], interpreted: triton.Config) -> list[triton.Config]:
    """``gpu`` on a GPU (only its first, the default, when autotuning is off); the single
    ``interpreted`` config under the interpreter, where benchmarking more than one config fails (no
    active driver) and small blocks keep the numpy emulation quick."""
    if INTERPRET:
        return [interpreted]
    return gpu if AUTOTUNE else gpu[:1]


def capturing() -> bool:
    """Whether the current CUDA stream is being captured into a CUDA graph."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def prune_while_capturing(configs: list[triton.Config], named_args, **kwargs) -> list[triton.Config]:
    """The autotuner's ``early_config_prune``: during CUDA-graph capture only the first (default)
    config, so a key that was never tuned runs it without benchmarking (benchmarking synchronizes,
    which capture forbids); otherwise every config."""
    return configs[:1] if capturing() else configs


# Triton >= 3.2 can keep autotune results on disk, keyed by the kernel's source, the GPU and the tuning
# key, so a new process does not re-benchmark shapes an earlier one tuned (seconds per kernel and
# shape). The interpreter ignores it.
_AUTOTUNE_CACHE = (
    {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
)


def autotune(configs: list[triton.Config], key: list[str], prune=prune_while_capturing, reset_to_zero=None):
    """``triton.autotune`` with this package's policy: results cached on disk across processes
    where Triton supports it, and a fixed default config for untuned keys during graph capture
    (see :func:`launch`; a custom ``prune`` must keep that by calling :func:`prune_while_capturing`).
    ``key`` should name the batch bucket and the constexpr flags: the best tiles differ between
    variants, which must not share one tuning result. ``reset_to_zero`` names the arguments a kernel
    accumulates into: timing a config runs the kernel several times."""
    return triton.autotune(
        configs=configs,
        key=key,
        prune_configs_by={"early_config_prune": prune},
        reset_to_zero=reset_to_zero,
        **_AUTOTUNE_CACHE,
    )


def launch(kernel, grid, *args, **kwargs) -> None:
    """Launches autotuned ``kernel``. During graph capture a key first seen there runs the default
    config (:func:`prune_while_capturing`) and is then forgotten, so that the next eager call still
    tunes it instead of keeping the untuned default for the rest of the process."""
    if not capturing():
        kernel[grid](*args, **kwargs)
        return
    known = set(kernel.cache)
    kernel[grid](*args, **kwargs)
    for key in set(kernel.cache) - known:
        del kernel.cache[key]


def batch_bucket(n: int) -> int:
    """A power-of-two bucket of the batch size for autotune keys: batch 1 and batch 8 fill the GPU
    differently and may want different tiles, but nearby sizes share a tuning result."""
    return min(next_power_of_2(max(n, 1)), 64)


def device_guard(device: torch.device):
    """A context making ``device`` the current CUDA device (a no-op off CUDA).

    Triton launches on the current device and its current stream; tensors on another GPU would be
    read through peer addresses, unordered with the work PyTorch queued for them, or fault."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def on_device_of_first_tensor(launcher):
    """Decorates a launcher so that it runs under :func:`device_guard` of its first argument's device."""

    @functools.wraps(launcher)
    def guarded(first: torch.Tensor, *args, **kwargs):
        with device_guard(first.device):
            return launcher(first, *args, **kwargs)

    return guarded


def max_block(configs: list[triton.Config], name: str) -> int:
    """The largest value of block size ``name`` among ``configs`` (sizes are powers of two)."""
    return max(c.kwargs[name] for c in configs)


def spatial_strides(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """``t`` (N, C, T, H, W) and its strides ``(n, c, t, hw)`` with H and W merged into one index.

    Kernels address a frame's pixels as ``hw * stride_hw``, which keeps the pixel dimension visibly
    contiguous to Triton (vectorised loads in NCDHW). That needs ``stride_h == W * stride_w`` (true for
    both dense layouts and for expanded tensors); any other tensor is first copied densely.
    """
    _, _, _, h, w = t.shape
    sn, sc, st, sh, sw = t.stride()
    if w == 1:
        return t, (sn, sc, st, sh)
    # Without elements nothing is read (and a copy would be the tensor itself: any layout is dense).
    if h == 1 or sh == w * sw or t.numel() == 0:
        return t, (sn, sc, st, sw)
    return spatial_strides(t.contiguous(memory_format=output_memory_format(t)))


def plan_key(t: torch.Tensor) -> tuple:
    """``(shape, strides, dtype)`` of ``t``: what a launcher's cached launch plan may depend on."""
    return t.shape, t.stride(), t.dtype


def affine_key(t: torch.Tensor | None) -> tuple | None:
    """``(shape, dtype)`` of a per-channel scale or shift (None for None): what a launch plan checks of
    it (the kernels read it densely, so its strides do not matter)."""
    return None if t is None else (t.shape, t.dtype)


def affine_like(key: tuple | None) -> torch.Tensor | None:
    """A meta tensor of an :func:`affine_key`'s shape and dtype (None for None)."""
    return None if key is None else torch.empty(key[0], dtype=key[1], device="meta")


def meta_like(key: tuple) -> torch.Tensor:
    """A meta tensor with exactly the shape, strides and dtype of a :func:`plan_key`, which launch plans
    are derived from (so a plan cannot read anything outside its key)."""
    shape, strides, dtype = key
    return torch.empty_strided(shape, strides, dtype=dtype, device="meta")


def run_length(*values: int, limit: int = 16) -> int:
    """The largest power of two up to ``limit`` dividing every one of ``values`` (0 counts as divisible).

    Launchers pass it to kernels as the length of aligned runs of contiguous elements that the kernel
    then tells the compiler about (``tl.multiple_of``/``tl.max_contiguous``/``tl.max_constancy``):
    offsets computed with ``//`` and ``%`` by runtime sizes hide that from Triton's analysis, and
    without it loads stay scalar. A wrong run length would make misaligned vector accesses, so it is
    only ever computed here, from every size and stride that the kernel's offsets are made of."""
    run = limit
    for v in values:
        while run > 1 and v % run:
            run //= 2
    return run


def vector_runs(strides: tuple[int, int, int, int], hw: int, channels: tuple[int, ...]) -> tuple[int, int]:
    """``(run along pixels, run along channels)`` for a tensor with merged ``(n, c, t, hw)`` ``strides``
    (:func:`spatial_strides`): along pixels when those are contiguous (NCDHW), along channels when
    those are (channels_last_3d), 1 along the other. ``channels`` are the channel counts and channel
    offsets a kernel's channel tiles start from or stop at, which the runs must not straddle."""
    sn, sc, st, shw = strides
    if shw == 1:
        return run_length(hw, sn, sc, st), 1
    if sc == 1:
        return 1, run_length(*channels, sn, st, shw)
    return 1, 1


def index_type(*tensors: torch.Tensor):
    """``tl.int32`` when every element offset of ``tensors`` (and of one row past the last, which
    masked tile rows may compute) fits in 32 bits, else ``tl.int64``. 32-bit offsets halve the
    registers a tile's addresses take."""
    for t in tensors:
        reach = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride(), strict=True))
        if reach + max(t.stride(), default=0) >= 2**31 - 2**24:
            return tl.int64
    return tl.int32


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: fp32 uses TF32 exactly when cuDNN's convolutions would
    (:func:`slowfast_fast._precision.conv_allows_tf32`), so the fused op rounds like the conv it
    replaces. The setting is ignored for 16-bit inputs; fp64 is always exact."""
    if dtype == torch.float32 and conv_allows_tf32():
        return "tf32"
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


# Widest output-channel tile and K step of a tl.dot that runs in IEEE fp32 (fp32 with TF32 off): no
# tensor cores, operands and accumulator live in registers. At R50's layers 1-3 on sm_90, 64-wide
# tiles spilled in the forward, and 32-wide K steps left grad_input a 4-byte spill (NCDHW).
IEEE_TILE = 32
IEEE_K_STEP = 16


def channel_tile(
    channels: int, dtype: torch.dtype, reduced: bool = False, precision: str | None = None
) -> int:
    """The widest tile a kernel may give ``channels`` channels: a power of two covering them, at least
    tl.dot's 16; where tl.dot runs in IEEE fp32 (:func:`dot_precision`, or ``precision`` when the
    launcher already read it: reading PyTorch's settings costs µs) at most :data:`IEEE_TILE`, or
    :data:`IEEE_K_STEP` for the ``reduced`` (K) dimension."""
    tile = max(16, next_power_of_2(channels))
    if dtype == torch.float32 and (precision or dot_precision(dtype)) == "ieee":
        return min(tile, IEEE_K_STEP if reduced else IEEE_TILE)
    return tile


def k_scale(dtype: torch.dtype) -> int:
    """How many times a config's ``BLOCK_K`` a GEMM's K step is for ``dtype``: 2 for 16-bit types, else
    1, so a K step is as many bytes (and a pipeline stage keeps as many bytes in flight) whatever the
    element size; the step is still capped by the kernel's own channel tile."""
    return max(1, 4 // dtype.itemsize)


def accumulator(dtype: torch.dtype):
    """Accumulate in fp64 for fp64 inputs (CPU gradcheck), else in fp32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def upcast_dot(dtype: torch.dtype) -> bool:
    """Whether kernels convert tl.dot's operands to fp32 first (their ``UPCAST`` flag).

    The interpreter multiplies bf16 operands as their raw uint16 bit patterns; converting them to fp32
    gives what the GPU computes (bf16 products are exact in fp32, accumulated in fp32). The GPU keeps
    bf16 operands. Kernels inline the check rather than call a helper: each nested jit call costs
    milliseconds under the interpreter."""
    return INTERPRET and dtype == torch.bfloat16


# The SM count work splits are sized for under torch.use_deterministic_algorithms(True), whatever
# the GPU: an H100/H200's, so the split count (and with it the summation order) depends on the
# shapes only, never on the machine.
DETERMINISTIC_SMS = 132


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors to fill; a small number under the interpreter so that tests still
    exercise work split across several programs."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2
