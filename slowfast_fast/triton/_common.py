"""Helpers shared by the Triton launchers: interpreter detection, autotune config lists, strides
with H and W merged into one spatial index, and dot precision/accumulator choices."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from slowfast_fast._layout import output_memory_format
from slowfast_fast._precision import conv_allows_tf32

# Read once: Triton itself reads the flag when a kernel is decorated, so it cannot change later.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def autotune_configs(gpu: list[triton.Config], interpreted: triton.Config) -> list[triton.Config]:
    """``gpu`` on a GPU; the single ``interpreted`` config under the interpreter, where benchmarking
    more than one config fails (no active driver) and small blocks keep the numpy emulation quick."""
    return [interpreted] if INTERPRET else gpu


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
    if h == 1 or sh == w * sw:
        return t, (sn, sc, st, sw)
    return spatial_strides(t.contiguous(memory_format=output_memory_format(t)))


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: fp32 uses TF32 exactly when cuDNN's convolutions would
    (:func:`slowfast_fast._precision.conv_allows_tf32`), so the fused op rounds like the conv it
    replaces. The setting is ignored for 16-bit inputs; fp64 is always exact."""
    if dtype == torch.float32 and conv_allows_tf32():
        return "tf32"
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


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


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors to fill; a small number under the interpreter so that tests still
    exercise work split across several programs."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2
