"""``lateral_concat`` forward: one kernel writes the whole concatenated output, two kinds of programs.

Programs ``[0, gemm_programs)`` compute the lateral conv as an implicit GEMM. A program owns
``BLOCK_M`` output pixels and ``BN`` lateral channels. Pixels are flattened over ``(n, t_out, hw)`` so
small frames (14x14, 7x7) still fill a tile; the reduction is one flat loop over ``k`` (``K = KT *
C_fast``): ``A[m, k] = x_fast[n, c, t_out*stride - padding + kt, hw]``, zero outside ``[0, T_fast)``
(a masked load moves no bytes, so padding taps and, when stride > k, the frames between windows are
never read). One flat loop with loads that depend only on ``k`` is what Triton's software pipeliner
overlaps: ``num_stages`` tiles of A and B are in flight (cp.async) while the tensor cores (wgmma on
sm_90) work on an earlier one. The k order follows x_fast's layout: with pixels contiguous (NCDHW)
``k = c * KT + kt``, the weight's own order, so B tiles are read straight from the weight, contiguous
along k, and the call launches nothing but this kernel; with channels contiguous (channels_last_3d)
``k = kt * C_fast + c``, so A loads run along channels, and the weight is first reordered into that
order (one small copy kernel). B loads are masked past K (no padded weight copy). Tiles are sized to
the problem: ``BN = min(BLOCK_N, C_lat rounded up to a power of two >= 16)`` (conv1's 16 lateral
channels get 16-wide tiles, not 64), ``BK = min(BLOCK_K x 2 for 16-bit types, C_fast likewise)`` (a K
step and a pipeline stage are as many bytes in every dtype; 16, the smallest tl.dot K, where C_fast
is 8: its 40-long K runs in 3 steps across taps). The widest config covers R50 layer3's 256 lateral
channels in one program, so x_fast is read once per pixel tile.

The remaining programs copy x_slow into the output's first C_slow channels, with copy-shaped tiles of
16 KiB (no accumulator, no shared memory use of their own): x_slow is dense in the output's memory
format, so the copy is ``rows x inner`` with unit inner stride: N rows of ``C_slow*T*H*W`` in NCDHW, one
row of ``C_slow`` channels per pixel in channels_last_3d. GEMM programs come first so that the long
ones start first and the copies fill in behind them.

Vector accesses: offsets built with ``//`` and ``%`` by runtime sizes hide their contiguity from
Triton, so the launcher computes the aligned run lengths (:func:`_common.run_length`) and the kernel
states them with ``tl.multiple_of``/``tl.max_contiguous``/``tl.max_constancy``: A and the output runs
along pixels in NCDHW, along channels in channels_last_3d; copies along the inner extent. Every run
of 16 bytes is then one 16-byte access: copies and output stores, and A's cp.async in 16-bit types
and in channels_last_3d. fp32 NCDHW A tiles go by 4-byte cp.async (still coalesced, a warp covers
128 contiguous bytes): TF32 wgmma reads A K-major from shared memory, so that copy transposes.
Integer sizes and strides are not specialized by the JIT (the run lengths carry what matters), so
one compiled variant serves many shapes. With TF32 off (IEEE fp32 on CUDA cores) tiles are capped at
32 lateral channels and K steps at 16 (``_common.channel_tile``): wider ones spill there.

sm_90 resources (tests/test_triton_sm90_static.py compiles every config at the R50 4x16 and 8x8
fusion points, batch 8): no spills; designed for 2 CTAs per SM (4 warps: <= 255 registers; the
8-warp 256-channel config: <= 128; <= 113 KiB of shared memory per CTA; measured at most 185
registers with 4 warps, 128 with 8, and 96 KiB). At 2 CTAs/SM a copy program keeps 16 KiB of loads in
flight, 32 KiB per SM against the ~21 KiB that 4 TB/s x ~0.7 us of latency over 132 SMs needs; a GEMM
program keeps ``num_stages - 1`` A tiles in flight: with the first config 2 x 128 pixels x 128 bytes
of channels = 32 KiB per CTA in every dtype where C_fast fills the K step (>= 32 channels in fp32,
>= 64 in 16-bit types); the 256-channel config keeps 3 x 64 pixels x 64 bytes = 12 KiB.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from slowfast_fast._layout import output_memory_format
from slowfast_fast.ops import _validate
from slowfast_fast.triton._common import (
    accumulator,
    affine_key,
    affine_like,
    autotune,
    autotune_configs,
    batch_bucket,
    cdiv,
    channel_tile,
    dot_precision,
    index_type,
    k_scale,
    launch,
    meta_like,
    next_power_of_2,
    on_device_of_first_tensor,
    plan_key,
    run_length,
    spatial_strides,
    upcast_dot,
    vector_runs,
)

# Few configs: every one is compiled per dtype/epilogue variant before the first call can run.
# The first is also the fixed default during CUDA-graph capture and must be a safe all-rounder.
# BLOCK_N and BLOCK_K are caps: the kernel shrinks them to the channel counts, and doubles BLOCK_K for
# 16-bit types (see the docstring). The second config covers up to 128 lateral channels per program
# with half the pixels (x_fast is read by half as many programs at layer2), its accumulator the same
# 64 registers per thread, one more stage to keep as many bytes in flight. The third covers all 256
# lateral channels of R50's layer3 in one program of 8 warps (x_fast read once), again 64 accumulator
# registers per thread; its K steps are half as deep so that 4 stages of its 256-wide weight tiles
# fit two CTAs per SM.
GPU_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 16}, num_warps=8, num_stages=4),
]
_CONFIGS = autotune_configs(
    GPU_CONFIGS, triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1)
)
# Widest lateral tile when the output is fp32 channels_last_3d: there the 256-wide tile's epilogue
# (the accumulator re-laid along channels for 16-byte stores) took 170 registers on sm_90, over the
# 128 that two 8-warp CTAs per SM allow; at 128 channels it takes at most 111.
_CL_FP32_LAT_TILE = 128
# Bytes one copy program moves: 16 KiB is 8 16-byte loads in flight per thread of 4 warps.
_COPY_BYTES = 16384

_SIZES = ["C_SLOW", "C_FAST", "C_LAT", "T_SLOW", "T_FAST", "HW", "KT", "STRIDE", "PAD", "M_TOTAL"]
_STRIDES = ["COPY_ROWS", "COPY_INNER", "xs_srow", "o_srow", "xf_sn", "xf_sc", "xf_st", "xf_shw"]
_STRIDES += ["o_sn", "o_sc", "o_st", "o_shw"]


@autotune(
    _CONFIGS,
    key=["C_SLOW", "C_FAST", "C_LAT", "KT", "HW", "CHANNELS_LAST", "BATCH_BUCKET"]
    + ["HAS_SCALE", "HAS_SHIFT", "RELU", "PRECISION", "UPCAST"]
    + ["A_RUN_M", "A_RUN_K", "O_RUN_M", "O_RUN_N", "COPY_RUN", "LAT_TILE", "K_TILE", "INDEX"]
    + ["TAP_FASTEST", "W_RUN", "K_SCALE"],
)
@triton.jit(do_not_specialize=_SIZES + _STRIDES + ["CHANNELS_LAST", "BATCH_BUCKET"])
def _lateral_concat_kernel(
    xs_ptr, xf_ptr, w_ptr, scale_ptr, shift_ptr, out_ptr,
    C_SLOW, C_FAST, C_LAT, T_SLOW, T_FAST, HW, KT, STRIDE, PAD, M_TOTAL, K_TOTAL,
    COPY_ROWS, COPY_INNER, xs_srow, o_srow,
    xf_sn, xf_sc, xf_st, xf_shw,
    o_sn, o_sc, o_st, o_shw,
    CHANNELS_LAST,  # only an autotune key: the best tiles differ between the two layouts
    BATCH_BUCKET,  # only an autotune key
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    A_RUN_M: tl.constexpr, A_RUN_K: tl.constexpr, O_RUN_M: tl.constexpr, O_RUN_N: tl.constexpr,
    COPY_RUN: tl.constexpr, LAT_TILE: tl.constexpr, K_TILE: tl.constexpr, INDEX: tl.constexpr,
    TAP_FASTEST: tl.constexpr, W_RUN: tl.constexpr, K_SCALE: tl.constexpr,
    BLOCK_COPY_R: tl.constexpr, BLOCK_COPY_I: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    BN: tl.constexpr = min(BLOCK_N, LAT_TILE)
    BK: tl.constexpr = min(BLOCK_K * K_SCALE, K_TILE)
    A_ALIGN: tl.constexpr = A_RUN_M * A_RUN_K  # one of the two is 1
    O_ALIGN: tl.constexpr = O_RUN_M * O_RUN_N
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(C_LAT, BN)
    gemm_programs = tl.cdiv(M_TOTAL, BLOCK_M) * n_tiles
    if pid < gemm_programs:
        # Channel tiles vary fastest: the programs sharing one pixel tile (and its x_fast rows) run together.
        tile_n = pid % n_tiles
        m = (pid // n_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = m < M_TOTAL
        frame = m // HW
        hw = (m % HW).to(INDEX)
        n = (frame // T_SLOW).to(INDEX)
        to = frame % T_SLOW
        t0 = to * STRIDE - PAD
        a_row = n * xf_sn + t0.to(INDEX) * xf_st + hw * xf_shw
        a_row = tl.max_contiguous(tl.multiple_of(a_row, A_ALIGN), A_RUN_M)
        o = tile_n * BN + tl.arange(0, BN)
        o_ok = o < C_LAT
        w_row = tl.multiple_of(o.to(INDEX) * K_TOTAL, W_RUN)[None, :]

        acc = tl.zeros((BLOCK_M, BN), dtype=ACC)
        for k0 in range(0, K_TOTAL, BK):
            k = k0 + tl.arange(0, BK)
            if TAP_FASTEST:  # k = c * KT + kt: the weight's own order
                c = k // KT
                kt = k % KT
            else:  # k = kt * C_FAST + c: channels contiguous along k (channels_last_3d x_fast)
                kt = k // C_FAST
                c = k % C_FAST
            a_col = c.to(INDEX) * xf_sc + kt.to(INDEX) * xf_st
            a_col = tl.max_contiguous(tl.multiple_of(a_col, A_ALIGN), A_RUN_K)
            t = t0[:, None] + kt[None, :]
            k_ok = k < K_TOTAL
            a_mask = m_ok[:, None] & k_ok[None, :] & (t >= 0) & (t < T_FAST)
            a_mask = tl.max_constancy(a_mask, [A_RUN_M, A_RUN_K])
            a = tl.load(xf_ptr + (a_row[:, None] + a_col[None, :]), mask=a_mask, other=0.0)
            b_k = tl.max_contiguous(tl.multiple_of(k, W_RUN), W_RUN)[:, None]
            b_mask = tl.max_constancy(k_ok[:, None] & o_ok[None, :], [W_RUN, 1])
            b = tl.load(w_ptr + (w_row + b_k), mask=b_mask, other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc=acc, input_precision=PRECISION, out_dtype=ACC)

        if HAS_SCALE:
            acc = acc * tl.load(scale_ptr + o, mask=o_ok, other=0.0).to(ACC)[None, :]
        if HAS_SHIFT:
            acc = acc + tl.load(shift_ptr + o, mask=o_ok, other=0.0).to(ACC)[None, :]
        if RELU:
            # torch.relu: zero only below 0. tl.maximum (propagate_nan=NONE, maxnum) gives 0 for a
            # NaN and would hide a diverging activation; a NaN fails acc < 0 and is kept.
            acc = tl.where(acc < 0, 0.0, acc)
        o_row = n * o_sn + to.to(INDEX) * o_st + hw * o_shw
        o_row = tl.max_contiguous(tl.multiple_of(o_row, O_ALIGN), O_RUN_M)
        o_col = (C_SLOW + o).to(INDEX) * o_sc
        o_col = tl.max_contiguous(tl.multiple_of(o_col, O_ALIGN), O_RUN_N)
        o_mask = tl.max_constancy(m_ok[:, None] & o_ok[None, :], [O_RUN_M, O_RUN_N])
        tl.store(out_ptr + (o_row[:, None] + o_col[None, :]), acc.to(out_ptr.dtype.element_ty), mask=o_mask)
    else:
        program = pid - gemm_programs
        i_tiles = tl.cdiv(COPY_INNER, BLOCK_COPY_I)
        r = (program // i_tiles) * BLOCK_COPY_R + tl.arange(0, BLOCK_COPY_R)
        i = (program % i_tiles) * BLOCK_COPY_I + tl.arange(0, BLOCK_COPY_I)
        mask = (r < COPY_ROWS)[:, None] & tl.max_constancy(i < COPY_INNER, COPY_RUN)[None, :]
        r = r.to(INDEX)
        i = i.to(INDEX)[None, :]
        src = tl.multiple_of(r * xs_srow, COPY_RUN)[:, None]
        dst = tl.multiple_of(r * o_srow, COPY_RUN)[:, None]
        tl.store(out_ptr + (dst + i), tl.load(xs_ptr + (src + i), mask=mask), mask=mask)


def _weight_rows(weight: torch.Tensor, tap_fastest: bool) -> torch.Tensor:
    """The weight as dense ``(C_lat, K)`` rows in the kernel's k order: ``(c, kt)`` when ``tap_fastest``
    (the weight's own order: a contiguous weight is used as it is, no copy), else ``(kt, c)`` (one small
    copy). Rows must be dense: a reshape may return a view with a stride along k."""
    c_lat, c_fast, kt = weight.shape[:3]
    if tap_fastest:
        return weight.reshape(c_lat, c_fast * kt).contiguous()
    return weight[..., 0, 0].permute(0, 2, 1).reshape(c_lat, kt * c_fast).contiguous()


def _copy_geometry(x_slow: torch.Tensor, c_total: int, fmt) -> tuple[int, int, int, int]:
    """``(rows, inner, source row stride, output row stride)`` of the x_slow copy, x_slow dense in ``fmt``."""
    n, c_slow, t, h, w = x_slow.shape
    if fmt == torch.channels_last_3d:
        return n * t * h * w, c_slow, c_slow, c_total
    return n, c_slow * t * h * w, c_slow * t * h * w, c_total * t * h * w


class _Plan(NamedTuple):
    """Everything a forward launch needs that the inputs' shapes, strides, dtype and flags decide."""

    out_shape: tuple[int, ...]
    fmt: torch.memory_format  # the output's, and x_slow is made dense in it
    x_fast_copied: bool  # x_fast's strides do not merge H and W: made dense (spatial_strides) first
    weight_as_is: bool  # the weight is its own (C_lat, K) rows: no reorder, no copy
    tap_fastest: bool
    grid: Callable[[dict], tuple[int]]
    sizes: tuple[int, ...]  # the kernel's integer arguments, after the six tensors
    flags: dict  # its constexpr arguments


@functools.lru_cache(maxsize=1024)
def _plan(
    x_slow: tuple, x_fast: tuple, weight: tuple, stride: int, padding: int,
    scale: tuple | None, shift: tuple | None, relu: bool, precision: str,
) -> _Plan:  # fmt: skip
    """The launch plan for tensors of these ``(shape, stride, dtype)``s (:func:`_common.plan_key`;
    ``(shape, dtype)`` for scale and shift, None when absent); cached per process.

    It is made from meta tensors of exactly those shapes and strides, so it cannot depend on anything
    outside its key (global settings come in as arguments: ``precision``). It first checks them as
    the public op does (so a direct call of the op namespace's kernel cannot launch on shapes that do
    not fit; a key that fails is not cached and fails again)."""
    x_slow, x_fast, weight = meta_like(x_slow), meta_like(x_fast), meta_like(weight)
    has_scale, has_shift = scale is not None, shift is not None
    scale, shift = affine_like(scale), affine_like(shift)
    _validate.check_lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift)
    dtype = x_slow.dtype
    n, c_slow, t_slow, h, w = x_slow.shape
    c_fast, t_fast = x_fast.shape[1], x_fast.shape[2]
    c_lat, kt = weight.shape[0], weight.shape[2]
    fmt = output_memory_format(x_slow)
    out = torch.empty((n, c_slow + c_lat, t_slow, h, w), dtype=dtype, device="meta", memory_format=fmt)
    if out.numel() == 0:  # nothing to launch
        return _Plan(tuple(out.shape), fmt, False, True, True, lambda meta: (0,), (), {})
    x_slow = x_slow.contiguous(memory_format=fmt)
    x_fast_in = x_fast
    x_fast, xf_strides = spatial_strides(x_fast)
    _, o_strides = spatial_strides(out)
    # K order: (c, kt) reads the weight as it is stored; (kt, c) keeps a channels_last_3d x_fast's
    # channels contiguous along k (16-byte A loads) at the cost of reordering the weight.
    tap_fastest = not (xf_strides[1] == 1 and c_fast > 1)
    k_total = c_fast * kt
    hw = h * w
    m_total = n * t_slow * hw
    copy = _copy_geometry(x_slow, c_slow + c_lat, fmt)
    copy_i = min(_COPY_BYTES // x_slow.element_size(), next_power_of_2(max(copy[1], 1)))
    copy_r = _COPY_BYTES // x_slow.element_size() // copy_i
    copy_programs = cdiv(copy[0], copy_r) * cdiv(copy[1], copy_i) if copy[1] else 0
    lat_tile = channel_tile(c_lat, dtype, precision=precision)
    if fmt == torch.channels_last_3d and x_slow.element_size() == 4:
        lat_tile = min(lat_tile, _CL_FP32_LAT_TILE)
    a_run_m, a_run_k = vector_runs(xf_strides, hw, (c_fast,))
    o_run_m, o_run_n = vector_runs(o_strides, hw, (c_slow, c_lat))

    def grid(meta):
        lat_tiles = cdiv(c_lat, min(meta["BLOCK_N"], lat_tile))
        return (cdiv(m_total, meta["BLOCK_M"]) * lat_tiles + copy_programs,)

    sizes = (
        c_slow, c_fast, c_lat, t_slow, t_fast, hw, kt, stride, padding, m_total, k_total,
        *copy, *xf_strides, *o_strides, int(not tap_fastest), batch_bucket(n),
    )  # fmt: skip
    flags = dict(
        HAS_SCALE=has_scale, HAS_SHIFT=has_shift, RELU=relu,
        PRECISION=precision, ACC=accumulator(dtype), UPCAST=upcast_dot(dtype),
        A_RUN_M=a_run_m, A_RUN_K=a_run_k, O_RUN_M=o_run_m, O_RUN_N=o_run_n,
        COPY_RUN=run_length(copy[1], copy[2], copy[3]), LAT_TILE=lat_tile,
        K_TILE=channel_tile(c_fast, dtype, reduced=True, precision=precision),
        INDEX=index_type(x_slow, x_fast, out),
        TAP_FASTEST=tap_fastest, W_RUN=run_length(k_total), K_SCALE=k_scale(dtype),
        BLOCK_COPY_R=copy_r, BLOCK_COPY_I=copy_i,
    )  # fmt: skip
    weight_as_is = tap_fastest and weight.is_contiguous()
    return _Plan(
        tuple(out.shape), fmt, x_fast is not x_fast_in, weight_as_is, tap_fastest, grid, sizes, flags
    )


@on_device_of_first_tensor
def lateral_concat(
    x_slow: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    relu: bool,
) -> torch.Tensor:
    """``cat([x_slow, act(conv3d(x_fast, weight) * scale + shift)], 1)`` in one kernel.

    Shapes as in :func:`slowfast_fast.reference.lateral_concat`. The output, ``(N, C_slow + C_lat,
    T_slow, H, W)``, is in x_slow's memory format.

    The host work that only the shapes, strides and flags decide (the public op's shape checks, tiles,
    vector runs, strides, index width) is done once per such key (:func:`_plan`); a call then checks
    devices, allocates the output and launches.
    """
    devices = "x_slow, x_fast, weight, scale and shift"
    _validate.check_devices(devices, x_slow.device, x_fast, weight, scale, shift)
    plan = _plan(
        plan_key(x_slow), plan_key(x_fast), plan_key(weight), stride, padding,
        affine_key(scale), affine_key(shift), relu, dot_precision(x_slow.dtype),
    )  # fmt: skip
    out = torch.empty(plan.out_shape, dtype=x_slow.dtype, device=x_slow.device, memory_format=plan.fmt)
    if out.numel() == 0:
        return out
    x_slow = x_slow.contiguous(memory_format=plan.fmt)
    if plan.x_fast_copied:  # the same (deterministic) copy that the plan's strides were taken from
        x_fast, _ = spatial_strides(x_fast)
    # A contiguous weight in (c, kt) order is its own dense (C_lat, K) rows: passed as it is.
    w_rows = weight if plan.weight_as_is else _weight_rows(weight, plan.tap_fastest)
    # The kernel indexes the per-channel vectors densely; they are tiny. Without them another
    # tensor stands in for the address (HAS_SCALE/HAS_SHIFT off).
    scale = w_rows if scale is None else scale.contiguous()
    shift = w_rows if shift is None else shift.contiguous()
    launch(
        _lateral_concat_kernel,
        plan.grid,
        x_slow,
        x_fast,
        w_rows,
        scale,
        shift,
        out,
        *plan.sizes,
        **plan.flags,
    )
    return out
