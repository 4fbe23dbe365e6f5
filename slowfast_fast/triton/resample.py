"""Nearest temporal resampling, the pathway split, and the resampling backward.

Nearest resampling maps output frames to source frames monotonically, so every source frame ``t``
feeds one contiguous run of output frames ``[first(t), first(t) + count(t))``. The forward's programs
are indexed by the source frames actually read, a compacted table ``(t, first1, count1, first2,
count2)`` of just those (a 1/8 downsampling of 32 frames launches 4 frames' programs, not 32, of
which 28 would only have checked that they had nothing to do): a program loads its piece of frame
``t`` once and stores it to every output frame of the run, for one or two outputs, so the pathway
split reads the clip once. The backward is the same walk in reverse over every source frame (each
writes its gradient: the sum of the gradient frames of its run, a gather with a fixed summation
order instead of a scatter-add with atomics, or zeros where no output used it).

Within a frame, a tile covers ``(rows, inner)`` pixels: ``(C, H*W)`` in NCDHW, and one row of
``H*W*C`` contiguous values in channels_last_3d, so both layouts load whole contiguous vectors
(16-byte accesses: tests/test_triton_sm90_static.py). A tile is 8 KiB (2048 fp32 or 4096 16-bit
values: 4 or 8 16-byte loads in flight per thread of 4 warps, 32 registers, 8 CTAs per SM).
The grid is one axis of (frame, tile) programs: a second axis would cap a frame at 65,535 tiles.

The run tables are built on the device by tensor ops (no host-to-device copy, no synchronization),
so every launch is legal inside CUDA-graph capture; only the number of frames read, which sizes the
grid, is computed on the host, by the same float32 index rule on the CPU.

Index rule, on every device: source frame ``min(floor(d * float32(1 / scale)), T_in - 1)`` with the
product in float32, and no special case when the lengths agree. That is what ``F.interpolate``
computes for 5-D inputs on CUDA, and on the CPU too (torch 2.14: its 3-D nearest kernel applies no
identity shortcut when a scale factor is given), so for a scale in (1, 1 + 1/T) the output has T
frames but repeats frame 0 and drops the last one, as the reference does on either device. The one
exception is float64 on the CPU (the interpreter), where PyTorch computes the product in double and
rounds it to float32 before the floor (``reference.double_index_rule``); the tables follow it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from slowfast_fast import reference
from slowfast_fast._layout import output_memory_format
from slowfast_fast.ops import _validate
from slowfast_fast.triton._common import (
    accumulator,
    capturing,
    cdiv,
    meta_like,
    next_power_of_2,
    on_device_of_first_tensor,
    plan_key,
    spatial_strides,
)

# Bytes one program moves per frame (see the module docstring).
_TILE_BYTES = 8192


@triton.jit
def _gather_frames_kernel(
    x_ptr, y1_ptr, y2_ptr, read_ptr,
    READ, ROWS, INNER, FRAME_TILES,
    x_sn, x_st, x_sr, x_si,
    y1_sn, y1_st, y1_sr, y1_si,
    y2_sn, y2_st, y2_sr, y2_si,
    TWO: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    # One axis (up to 2^31 - 1 programs): FRAME_TILES tiles of each (n, frame read), tiles fastest.
    pid = tl.program_id(0)
    frame = pid // FRAME_TILES
    tile = pid % FRAME_TILES
    n = (frame // READ).to(tl.int64)
    row = read_ptr + (frame % READ) * 5
    inner_tiles = tl.cdiv(INNER, BLOCK_I)
    r = (tile // inner_tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
    i = (tile % inner_tiles) * BLOCK_I + tl.arange(0, BLOCK_I)
    mask = (r < ROWS)[:, None] & (i < INNER)[None, :]
    r = r.to(tl.int64)[:, None]
    i = i.to(tl.int64)[None, :]

    t = tl.load(row)
    first1 = tl.load(row + 1)
    count1 = tl.load(row + 2)
    first2 = tl.load(row + 3)
    count2 = tl.load(row + 4)
    v = tl.load(x_ptr + n * x_sn + t.to(tl.int64) * x_st + r * x_sr + i * x_si, mask=mask)
    # Pointers advance frame by frame: 64-bit arithmetic without widening the loop counter.
    y1 = y1_ptr + n * y1_sn + first1.to(tl.int64) * y1_st + r * y1_sr + i * y1_si
    for _ in range(count1):
        tl.store(y1, v, mask=mask)
        y1 += y1_st
    if TWO:
        y2 = y2_ptr + n * y2_sn + first2.to(tl.int64) * y2_st + r * y2_sr + i * y2_si
        for _ in range(count2):
            tl.store(y2, v, mask=mask)
            y2 += y2_st


@triton.jit
def _sum_runs_kernel(
    gy_ptr, gx_ptr, runs_ptr,
    T_IN, ROWS, INNER, FRAME_TILES,
    gy_sn, gy_st, gy_sr, gy_si,
    gx_sn, gx_st, gx_sr, gx_si,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    frame = pid // FRAME_TILES
    tile = pid % FRAME_TILES
    n = (frame // T_IN).to(tl.int64)
    t = frame % T_IN
    inner_tiles = tl.cdiv(INNER, BLOCK_I)
    r = (tile // inner_tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
    i = (tile % inner_tiles) * BLOCK_I + tl.arange(0, BLOCK_I)
    mask = (r < ROWS)[:, None] & (i < INNER)[None, :]
    r = r.to(tl.int64)[:, None]
    i = i.to(tl.int64)[None, :]

    first = tl.load(runs_ptr + t * 4)
    count = tl.load(runs_ptr + t * 4 + 1)
    gy = gy_ptr + n * gy_sn + first.to(tl.int64) * gy_st + r * gy_sr + i * gy_si
    acc = tl.zeros((BLOCK_R, BLOCK_I), dtype=ACC)
    for _ in range(count):
        acc += tl.load(gy, mask=mask, other=0.0).to(ACC)
        gy += gy_st
    tl.store(
        gx_ptr + n * gx_sn + t.to(tl.int64) * gx_st + r * gx_sr + i * gx_si,
        acc.to(gx_ptr.dtype.element_ty),
        mask=mask,
    )


def _runs(t_in: int, scale_factor: float, device: torch.device, double_rule: bool) -> torch.Tensor:
    """``(first, count)`` of the output frames taken from each of ``t_in`` source frames, ``(t_in, 2)``.
    The source frames ascend, so both ends of each run are binary searches: no bincount (which reads
    its result size back to the host) and nothing copied from the host."""
    src = reference.source_frame_indices(t_in, scale_factor, device, double_rule)
    t = torch.arange(t_in, device=device)
    first = torch.searchsorted(src, t)
    return torch.stack((first, torch.searchsorted(src, t, right=True) - first), dim=1)


_TABLES: dict[tuple, torch.Tensor] = {}
_MAX_TABLES = 256


def _run_table(
    t_in: int, scale1: float, scale2: float | None, device: torch.device, double_rule: bool = False
) -> torch.Tensor:
    """int32 ``(t_in, 4)`` table ``(first1, count1, first2, count2)`` on ``device``, under PyTorch's
    index rule for the data (``double_rule``: :func:`reference.double_index_rule`).

    Built by device ops and kept per shape, so repeated calls launch nothing extra. A table first
    needed during CUDA-graph capture is built inside the graph (its ops replay with it) and not kept:
    its memory belongs to the graph and holds values only once the graph has run."""
    key = (t_in, scale1, scale2, device, double_rule)
    table = _TABLES.get(key)
    if table is not None:
        return table
    first = _runs(t_in, scale1, device, double_rule)
    second = _runs(t_in, scale2, device, double_rule) if scale2 is not None else torch.zeros_like(first)
    table = torch.cat((first, second), dim=1).to(torch.int32)
    if not capturing():
        if len(_TABLES) >= _MAX_TABLES:
            _TABLES.clear()
        _TABLES[key] = table
    return table


def _frames_read(t_in: int, scales: tuple[float, ...], double_rule: bool = False) -> int:
    """How many distinct source frames the outputs at ``scales`` read, computed on the host (the CPU
    applies the same float32 index rule), so the grid needs nothing from the device."""
    read = torch.zeros(t_in, dtype=torch.bool)
    for scale in scales:
        read[reference.source_frame_indices(t_in, scale, torch.device("cpu"), double_rule)] = True
    return int(read.sum())


def _read_table(
    t_in: int, scales: tuple[float, ...], device: torch.device, double_rule: bool = False
) -> torch.Tensor:
    """int32 ``(frames read, 5)`` table ``(t, first1, count1, first2, count2)`` of the source frames
    some output reads, ascending, on ``device``: :func:`_run_table`'s rows of those frames, selected
    by device ops (a stable sort puts them first) and kept per shape like it."""
    key = ("read", t_in, *scales, device, double_rule)
    table = _TABLES.get(key)
    if table is not None:
        return table
    runs = _run_table(t_in, scales[0], scales[1] if len(scales) == 2 else None, device, double_rule)
    unread = (runs[:, 1] + runs[:, 3] == 0).to(torch.int8)
    frames = torch.sort(unread, stable=True).indices[: _frames_read(t_in, scales, double_rule)]
    table = torch.cat((frames.to(torch.int32)[:, None], runs[frames]), dim=1).contiguous()
    if not capturing():
        if len(_TABLES) >= _MAX_TABLES:
            _TABLES.clear()
        _TABLES[key] = table
    return table


def frame_grid(
    batch: int, frames: int, rows: int, inner: int, block_r: int, block_i: int
) -> tuple[tuple[int], int]:
    """``((programs,), tiles_per_frame)``: one program per tile of each of ``frames`` frames of each
    sample, on one axis."""
    tiles = cdiv(rows, block_r) * cdiv(inner, block_i)
    return (batch * frames * tiles,), tiles


def _frame_view(t: torch.Tensor, other: torch.Tensor) -> tuple[tuple[int, int, int, int], int, int]:
    """Strides ``(n, t, row, inner)`` of ``t`` for a frame seen as ``rows x inner`` values.

    When both ``t`` and ``other`` (already spatially merged) hold each pixel's channels contiguously
    and pixels back to back, a frame is one row of H*W*C contiguous values; otherwise it is C rows
    of H*W pixels. Returns the strides and ``(rows, inner)``.
    """
    c, hw = t.shape[1], t.shape[3] * t.shape[4]
    _, (sn, sc, st, shw) = spatial_strides(t)
    _, (_, osc, _, oshw) = spatial_strides(other)
    if c > 1 and sc == 1 and osc == 1 and (hw == 1 or (shw == c and oshw == c)):
        return (sn, st, 0, 1), 1, hw * c
    return (sn, st, sc, shw), c, hw


def _tile(rows: int, inner: int, itemsize: int = 4) -> tuple[int, int]:
    """``(BLOCK_R, BLOCK_I)`` for ``itemsize``-byte values: as much of the contiguous inner extent as
    fits in one tile of :data:`_TILE_BYTES`, then rows."""
    values = _TILE_BYTES // itemsize
    block_i = min(values, next_power_of_2(inner))
    return min(next_power_of_2(rows), values // block_i), block_i


def _empty_frames(x: torch.Tensor, t: int, fmt: torch.memory_format) -> torch.Tensor:
    """An uninitialised ``(N, C, t, H, W)`` tensor like ``x`` in memory format ``fmt``."""
    n, c, _, h, w = x.shape
    return torch.empty((n, c, t, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)


class _GatherPlan(NamedTuple):
    """Everything a forward (gather) launch needs that the input's shape, strides and dtype and the
    scales decide."""

    out_shapes: tuple[tuple[int, ...], ...]
    fmt: torch.memory_format  # the outputs'
    launches: bool  # False when there is nothing to read or nothing to write
    x_copied: bool  # x's strides do not merge H and W: made dense (spatial_strides) first
    frames_read: int  # rows of the read table (computed on the host: the grid needs it)
    grid: tuple[int]
    sizes: tuple[int, ...]  # the kernel's integer arguments after READ, the table's length
    flags: dict  # its constexpr arguments


@functools.lru_cache(maxsize=1024)
def _gather_plan(x: tuple, scales: tuple[float, ...], double_rule: bool) -> _GatherPlan:
    """The launch plan of :func:`_gather` for an input of this ``(shape, stride, dtype)``
    (:func:`_common.plan_key`); cached per process. Made from a meta tensor of exactly that shape and
    those strides, so it cannot depend on anything outside its key. It first checks the input and the
    scales as the public ops do (a key that fails is not cached and fails again)."""
    x = meta_like(x)
    _validate.check_resample_input(x)
    names = ("slow_scale", "fast_scale") if len(scales) == 2 else ("scale_factor",)
    for scale, name in zip(scales, names, strict=True):
        _validate.check_resample_scale(x, scale, name)
    t_in = x.shape[2]
    fmt = output_memory_format(x)
    ys = tuple(_empty_frames(x, reference.resampled_length(t_in, s), fmt) for s in scales)
    shapes = tuple(tuple(y.shape) for y in ys)
    if x.numel() == 0 or all(y.numel() == 0 for y in ys):
        return _GatherPlan(shapes, fmt, False, False, 0, (0,), (), {})
    x_dense, _ = spatial_strides(x)
    x_strides, rows, inner = _frame_view(x_dense, ys[0])
    y_strides = [_frame_view(y, x_dense)[0] for y in ys]
    block_r, block_i = _tile(rows, inner, x.element_size())
    read = _frames_read(t_in, scales, double_rule)
    grid, tiles = frame_grid(x.shape[0], read, rows, inner, block_r, block_i)
    sizes = (rows, inner, tiles, *x_strides, *y_strides[0], *y_strides[-1])
    flags = dict(TWO=len(ys) == 2, BLOCK_R=block_r, BLOCK_I=block_i)
    return _GatherPlan(shapes, fmt, True, x_dense is not x, read, grid, sizes, flags)


def _gather(x: torch.Tensor, scales: tuple[float, ...]) -> tuple[torch.Tensor, ...]:
    double_rule = reference.double_index_rule(x.dtype, x.device)
    plan = _gather_plan(plan_key(x), scales, double_rule)
    ys = tuple(
        torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=plan.fmt)
        for shape in plan.out_shapes
    )
    if not plan.launches:
        return ys
    if plan.x_copied:  # the same (deterministic) copy that the plan's strides were taken from
        x, _ = spatial_strides(x)
    read = _read_table(x.shape[2], scales, x.device, double_rule)
    _gather_frames_kernel[plan.grid](x, ys[0], ys[-1], read, plan.frames_read, *plan.sizes, **plan.flags)
    return ys


@on_device_of_first_tensor
def temporal_resample(x: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """Nearest temporal resampling of ``(N, C, T, H, W)``, exactly ``F.interpolate``; always a new tensor."""
    return _gather(x, (scale_factor,))[0]


@on_device_of_first_tensor
def pathway_split(x: torch.Tensor, slow_scale: float, fast_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(temporal_resample(x, slow_scale), temporal_resample(x, fast_scale))`` from one read of x."""
    slow, fast = _gather(x, (slow_scale, fast_scale))
    return slow, fast


class _SumPlan(NamedTuple):
    """Everything a backward (sum of runs) launch needs that grad_out's shape, strides and dtype, t_in
    and the scale decide."""

    out_shape: tuple[int, ...]
    fmt: torch.memory_format
    launches: bool
    grad_copied: bool  # grad_out's strides do not merge H and W: made dense first
    grid: tuple[int]
    sizes: tuple[int, ...]  # the kernel's integer arguments after the three tensors
    flags: dict


@functools.lru_cache(maxsize=1024)
def _sum_plan(grad_out: tuple, t_in: int, scale_factor: float) -> _SumPlan:
    """The launch plan of :func:`temporal_resample_backward` (cached per process, from a meta tensor
    of exactly grad_out's ``(shape, stride, dtype)``, like :func:`_gather_plan`). Only its checks read
    the scale: grad_out must have the frames that resampling t_in frames by it gives."""
    grad_out = meta_like(grad_out)
    _validate.check_resample_backward(grad_out, t_in, scale_factor)
    fmt = output_memory_format(grad_out)
    grad_x = _empty_frames(grad_out, t_in, fmt)
    if grad_x.numel() == 0:
        return _SumPlan(tuple(grad_x.shape), fmt, False, False, (0,), (), {})
    dense, _ = spatial_strides(grad_out)
    gy_strides, rows, inner = _frame_view(dense, grad_x)
    gx_strides = _frame_view(grad_x, dense)[0]
    block_r, block_i = _tile(rows, inner, grad_out.element_size())
    grid, tiles = frame_grid(grad_out.shape[0], t_in, rows, inner, block_r, block_i)
    sizes = (t_in, rows, inner, tiles, *gy_strides, *gx_strides)
    flags = dict(ACC=accumulator(grad_out.dtype), BLOCK_R=block_r, BLOCK_I=block_i)
    return _SumPlan(tuple(grad_x.shape), fmt, True, dense is not grad_out, grid, sizes, flags)


@on_device_of_first_tensor
def temporal_resample_backward(grad_out: torch.Tensor, t_in: int, scale_factor: float) -> torch.Tensor:
    """Gradient of :func:`temporal_resample`: ``(N, C, t_in, H, W)`` whose frame ``t`` is the sum of the
    gradient frames copied from ``t`` (zeros where none was), in grad_out's memory format."""
    plan = _sum_plan(plan_key(grad_out), t_in, scale_factor)
    grad_x = torch.empty(plan.out_shape, dtype=grad_out.dtype, device=grad_out.device, memory_format=plan.fmt)
    if not plan.launches:
        return grad_x
    if plan.grad_copied:
        grad_out, _ = spatial_strides(grad_out)
    runs = _run_table(
        t_in,
        scale_factor,
        None,
        grad_out.device,
        reference.double_index_rule(grad_out.dtype, grad_out.device),
    )
    _sum_runs_kernel[plan.grid](grad_out, grad_x, runs, *plan.sizes, **plan.flags)
    return grad_x
