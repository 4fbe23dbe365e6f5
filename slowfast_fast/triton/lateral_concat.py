"""``lateral_concat`` forward: one kernel writes the whole concatenated output.

The lateral conv is an implicit GEMM: rows are the output pixels of one output frame ``(n, to)``
(``hw`` in ``[0, H*W)``), columns the lateral channels, and the reduction runs over
``(kt, c)``: ``A[hw, (kt, c)] = x_fast[n, c, to*stride - padding + kt, hw]``. The kt loop is clipped
to the frames inside ``[0, T_fast)``, so padding frames cost nothing and, when stride > k, the fast
frames between two windows are never read. Programs past the lateral channel tiles copy x_slow's
channels of the same pixels into the front of the output, so no separate cat runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from slowfast_fast._layout import output_memory_format
from slowfast_fast.triton._common import (
    accumulator,
    autotune,
    autotune_configs,
    batch_bucket,
    dot_precision,
    launch,
    on_device_of_first_tensor,
    spatial_strides,
    upcast_dot,
)

# Few configs: every one is compiled per dtype/epilogue variant before the first call can run.
# The first is also the fixed default during CUDA-graph capture and must be a safe all-rounder.
# The last suits the thin stem lateral (8 input, 16 output channels).
_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 16}, num_warps=4, num_stages=3),
    ],
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1),
)


@autotune(
    _CONFIGS,
    key=["C_SLOW", "C_FAST", "C_LAT", "KT", "HW", "CHANNELS_LAST", "BATCH_BUCKET"]
    + ["HAS_SCALE", "HAS_SHIFT", "RELU", "PRECISION", "UPCAST"],
)
@triton.jit(do_not_specialize=["CHANNELS_LAST", "BATCH_BUCKET"])
def _lateral_concat_kernel(
    xs_ptr, xf_ptr, w_ptr, scale_ptr, shift_ptr, out_ptr,
    C_SLOW, C_FAST, C_LAT, T_SLOW, T_FAST, HW, KT, STRIDE, PAD,
    xs_sn, xs_sc, xs_st, xs_shw,
    xf_sn, xf_sc, xf_st, xf_shw,
    w_so, w_sc, w_sk,
    o_sn, o_sc, o_st, o_shw,
    CHANNELS_LAST,  # only an autotune key: the best tiles differ between the two layouts
    BATCH_BUCKET,  # only an autotune key
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # Channel tiles vary fastest so the programs sharing one pixel tile (and its x_fast rows) run together.
    pid = tl.program_id(0)
    lat_tiles = tl.cdiv(C_LAT, BLOCK_N)
    channel_tiles = lat_tiles + tl.cdiv(C_SLOW, BLOCK_N)
    tile_n = pid % channel_tiles
    pid_m = pid // channel_tiles
    hw_tiles = tl.cdiv(HW, BLOCK_M)
    frame = pid_m // hw_tiles
    n = (frame // T_SLOW).to(tl.int64)
    to = frame % T_SLOW
    hw = (pid_m % hw_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    hw_mask = hw < HW
    hw = hw.to(tl.int64)
    out_frame = out_ptr + n * o_sn + to.to(tl.int64) * o_st

    if tile_n < lat_tiles:
        o = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
        o_mask = o < C_LAT
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
        t0 = to * STRIDE - PAD
        for kt in range(tl.maximum(-t0, 0), tl.minimum(T_FAST - t0, KT)):
            x_frame = xf_ptr + n * xf_sn + (t0 + kt).to(tl.int64) * xf_st
            for c0 in range(0, C_FAST, BLOCK_K):
                c = c0 + tl.arange(0, BLOCK_K)
                c_mask = c < C_FAST
                a = tl.load(
                    x_frame + hw[:, None] * xf_shw + c.to(tl.int64)[None, :] * xf_sc,
                    mask=hw_mask[:, None] & c_mask[None, :],
                    other=0.0,
                )
                b = tl.load(
                    w_ptr + o[None, :] * w_so + c[:, None] * w_sc + kt * w_sk,
                    mask=c_mask[:, None] & o_mask[None, :],
                    other=0.0,
                )
                if UPCAST:
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc = tl.dot(a, b, acc=acc, input_precision=PRECISION, out_dtype=ACC)
        if HAS_SCALE:
            acc = acc * tl.load(scale_ptr + o, mask=o_mask, other=0.0).to(ACC)[None, :]
        if HAS_SHIFT:
            acc = acc + tl.load(shift_ptr + o, mask=o_mask, other=0.0).to(ACC)[None, :]
        if RELU:
            acc = tl.maximum(acc, 0.0)
        tl.store(
            out_frame + hw[:, None] * o_shw + (C_SLOW + o).to(tl.int64)[None, :] * o_sc,
            acc.to(out_ptr.dtype.element_ty),
            mask=hw_mask[:, None] & o_mask[None, :],
        )
    else:
        c = (tile_n - lat_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = hw_mask[:, None] & (c < C_SLOW)[None, :]
        c = c.to(tl.int64)
        v = tl.load(
            xs_ptr + n * xs_sn + to.to(tl.int64) * xs_st + hw[:, None] * xs_shw + c[None, :] * xs_sc,
            mask=mask,
        )
        tl.store(out_frame + hw[:, None] * o_shw + c[None, :] * o_sc, v, mask=mask)


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

    Shapes as in :func:`slowfast_fast.reference.lateral_concat` (inputs already validated). The
    output, ``(N, C_slow + C_lat, T_slow, H, W)``, is in x_slow's memory format.
    """
    n, c_slow, t_slow, h, w = x_slow.shape
    c_fast, t_fast = x_fast.shape[1], x_fast.shape[2]
    c_lat, kt = weight.shape[0], weight.shape[2]
    out = torch.empty(
        (n, c_slow + c_lat, t_slow, h, w),
        dtype=x_slow.dtype,
        device=x_slow.device,
        memory_format=output_memory_format(x_slow),
    )
    if out.numel() == 0:
        return out
    x_slow, xs_strides = spatial_strides(x_slow)
    x_fast, xf_strides = spatial_strides(x_fast)
    _, o_strides = spatial_strides(out)
    # The kernel indexes the per-channel vectors densely; they are tiny.
    scale = None if scale is None else scale.contiguous()
    shift = None if shift is None else shift.contiguous()
    hw = h * w

    def grid(meta):
        channel_tiles = triton.cdiv(c_lat, meta["BLOCK_N"]) + triton.cdiv(c_slow, meta["BLOCK_N"])
        return (n * t_slow * triton.cdiv(hw, meta["BLOCK_M"]) * channel_tiles,)

    launch(
        _lateral_concat_kernel, grid,
        x_slow, x_fast, weight,
        weight if scale is None else scale,
        weight if shift is None else shift,
        out,
        c_slow, c_fast, c_lat, t_slow, t_fast, hw, kt, stride, padding,
        *xs_strides, *xf_strides, weight.stride(0), weight.stride(1), weight.stride(2), *o_strides,
        int(xf_strides[1] == 1 and c_fast > 1), batch_bucket(n),
        HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, RELU=relu,
        PRECISION=dot_precision(x_fast.dtype), ACC=accumulator(x_fast.dtype), UPCAST=upcast_dot(x_fast.dtype),
    )  # fmt: skip
    return out
