"""``lateral_concat`` backward: the fast-pathway input gradient and the weight/scale/shift gradients.

With ``g`` the lateral channels of ``grad_out`` (zeroed where the forward ReLU was inactive):

* ``grad_x_fast`` is the transposed temporal conv of ``g * scale``. A program owns pixels of one fast
  frame ``t``; only the taps with ``(t + padding - kt) % stride == 0`` land on it, so its kt loop
  steps by ``stride`` and frames no window reads (stride > k) get zeros without any loads.
* ``G[o, c, kt] = sum over (n, to, hw) of g[n, o, to, hw] * x_fast[n, c, to*stride - padding + kt, hw]``
  is a reduction over all output pixels. The pixels are cut into equal chunks; each split (a run of
  chunks) writes its own fp32 partial of G and of ``sum g`` per channel, and a second small kernel
  adds the partials in a fixed order (deterministic, no atomics) and produces
  ``grad_weight = G * scale``, ``grad_scale = sum_k W * G`` and ``grad_shift = sum g``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from slowfast_fast._layout import output_memory_format
from slowfast_fast.triton._common import (
    DETERMINISTIC_SMS,
    accumulator,
    autotune,
    autotune_configs,
    batch_bucket,
    dot_precision,
    launch,
    max_block,
    num_sms,
    on_device_of_first_tensor,
    spatial_strides,
    upcast_dot,
)

# Few configs: every one is compiled per dtype/epilogue variant before the first call can run. The
# first of each list is also the fixed default during CUDA-graph capture; the first weight config is
# the one pinned under torch.use_deterministic_algorithms(True).
_INPUT_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    ],
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1),
)

_WEIGHT_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_O": 64, "BLOCK_C": 64, "BLOCK_M": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_O": 64, "BLOCK_C": 32, "BLOCK_M": 128}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_O": 128, "BLOCK_C": 64, "BLOCK_M": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_O": 32, "BLOCK_C": 32, "BLOCK_M": 128}, num_warps=4, num_stages=3),
    ],
    triton.Config({"BLOCK_O": 16, "BLOCK_C": 16, "BLOCK_M": 16}, num_warps=1),
)
# Pixels per chunk of the grad_weight reduction: a multiple of every BLOCK_M, fixed before autotuning
# picks one, because the number of partials (allocated up front) depends on it.
_CHUNK_HW = max_block(_WEIGHT_CONFIGS, "BLOCK_M")
# Output tile used only to estimate how many programs one split launches.
_TILE_ESTIMATE = 64
# The config of the partial kernel under torch.use_deterministic_algorithms(True).
DETERMINISTIC_WEIGHT_CONFIG = _WEIGHT_CONFIGS[0]


def weight_splits(
    n: int, t_slow: int, hw: int, c_lat: int, kt: int, c_fast: int, sms: int
) -> tuple[int, int, int]:
    """``(chunks, chunks_per_split, splits)`` of the grad_weight reduction: enough splits to fill
    ``sms`` multiprocessors a few times over with the output tiles, never an empty split. The split
    count fixes the order partial sums are added in, so it depends on ``sms`` only through here."""
    chunks = n * t_slow * triton.cdiv(hw, _CHUNK_HW)
    tiles = triton.cdiv(c_lat, _TILE_ESTIMATE) * kt * triton.cdiv(c_fast, _TILE_ESTIMATE)
    wanted = max(1, min(chunks, triton.cdiv(4 * sms, tiles)))
    chunks_per_split = max(1, triton.cdiv(chunks, wanted))
    return chunks, chunks_per_split, max(1, triton.cdiv(chunks, chunks_per_split))


@autotune(
    _INPUT_CONFIGS,
    key=["C_FAST", "C_LAT", "KT", "STRIDE", "HW", "CHANNELS_LAST", "BATCH_BUCKET"]
    + ["HAS_SCALE", "RELU", "PRECISION", "UPCAST"],
)
@triton.jit(do_not_specialize=["CHANNELS_LAST", "BATCH_BUCKET"])
def _grad_input_kernel(
    g_ptr, out_ptr, w_ptr, scale_ptr, dx_ptr,
    C_SLOW, C_FAST, C_LAT, T_SLOW, T_FAST, HW, KT, STRIDE, PAD,
    g_sn, g_sc, g_st, g_shw,
    out_sn, out_sc, out_st, out_shw,
    w_so, w_sc, w_sk,
    dx_sn, dx_sc, dx_st, dx_shw,
    CHANNELS_LAST, BATCH_BUCKET,  # only autotune keys
    HAS_SCALE: tl.constexpr, RELU: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    c_tiles = tl.cdiv(C_FAST, BLOCK_N)
    tile_c = pid % c_tiles
    pid_m = pid // c_tiles
    hw_tiles = tl.cdiv(HW, BLOCK_M)
    frame = pid_m // hw_tiles
    n = (frame // T_FAST).to(tl.int64)
    t = frame % T_FAST
    hw = (pid_m % hw_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    hw_mask = hw < HW
    hw = hw.to(tl.int64)
    c = tile_c * BLOCK_N + tl.arange(0, BLOCK_N)
    c_mask = c < C_FAST

    # Tap kt reads frame t from output frame to = (t + PAD - kt) / STRIDE; it must divide exactly and
    # land in [0, T_SLOW). The first such kt is at least r - STRIDE*(T_SLOW-1), rounded up to r's residue.
    r = t + PAD
    kt_min = tl.maximum(r - STRIDE * (T_SLOW - 1), 0)
    kt_start = kt_min + (r - kt_min) % STRIDE
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for kt in range(kt_start, tl.minimum(r + 1, KT), STRIDE):
        to = ((r - kt) // STRIDE).to(tl.int64)
        g_frame = g_ptr + n * g_sn + to * g_st
        out_frame = out_ptr + n * out_sn + to * out_st
        for o0 in range(0, C_LAT, BLOCK_K):
            o = o0 + tl.arange(0, BLOCK_K)
            o_mask = o < C_LAT
            mask = hw_mask[:, None] & o_mask[None, :]
            ch = (C_SLOW + o).to(tl.int64)[None, :]
            a = tl.load(g_frame + hw[:, None] * g_shw + ch * g_sc, mask=mask, other=0.0)
            if RELU:
                active = tl.load(out_frame + hw[:, None] * out_shw + ch * out_sc, mask=mask, other=0.0) > 0
                a = tl.where(active, a, tl.zeros_like(a))
            # Scale folds into the (small) weight tile rather than into the gradient tile.
            b = tl.load(
                w_ptr + o[:, None] * w_so + c[None, :] * w_sc + kt * w_sk,
                mask=o_mask[:, None] & c_mask[None, :],
                other=0.0,
            )
            if HAS_SCALE:
                b = (b.to(ACC) * tl.load(scale_ptr + o, mask=o_mask, other=0.0).to(ACC)[:, None]).to(a.dtype)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc=acc, input_precision=PRECISION, out_dtype=ACC)
    tl.store(
        dx_ptr + n * dx_sn + t.to(tl.int64) * dx_st + hw[:, None] * dx_shw + c.to(tl.int64)[None, :] * dx_sc,
        acc.to(dx_ptr.dtype.element_ty),
        mask=hw_mask[:, None] & c_mask[None, :],
    )


@autotune(
    _WEIGHT_CONFIGS,
    key=["C_FAST", "C_LAT", "KT", "HW", "CHANNELS_LAST", "BATCH_BUCKET", "RELU", "PRECISION", "UPCAST"],
)
@triton.jit(do_not_specialize=["CHANNELS_LAST", "BATCH_BUCKET"])
def _grad_weight_partial_kernel(
    g_ptr, out_ptr, xf_ptr, part_ptr, shift_part_ptr,
    C_SLOW, C_FAST, C_LAT, T_SLOW, T_FAST, HW, KT, STRIDE, PAD, CHUNKS, CHUNKS_PER_SPLIT,
    g_sn, g_sc, g_st, g_shw,
    out_sn, out_sc, out_st, out_shw,
    xf_sn, xf_sc, xf_st, xf_shw,
    CHANNELS_LAST, BATCH_BUCKET,  # only autotune keys
    RELU: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    CHUNK_HW: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    # Program = (split, kt, o tile, c tile), the tiles fastest so the programs reading the same
    # gradient and input pixels run together and share them through L2.
    pid = tl.program_id(0)
    c_tiles = tl.cdiv(C_FAST, BLOCK_C)
    o_tiles = tl.cdiv(C_LAT, BLOCK_O)
    tile_c = pid % c_tiles
    tile_o = (pid // c_tiles) % o_tiles
    kt = (pid // (c_tiles * o_tiles)) % KT
    split = pid // (c_tiles * o_tiles * KT)
    o = tile_o * BLOCK_O + tl.arange(0, BLOCK_O)
    o_mask = o < C_LAT
    c = tile_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C_FAST
    g_ch = (C_SLOW + o).to(tl.int64)[:, None]
    x_ch = c.to(tl.int64)[None, :]
    # One program per split also sums g for grad_shift, over every pixel (padding taps included).
    sums_shift = (kt == 0) & (tile_c == 0)

    acc = tl.zeros((BLOCK_O, BLOCK_C), dtype=ACC)
    shift_acc = tl.zeros((BLOCK_O,), dtype=ACC)
    chunks_per_frame = tl.cdiv(HW, CHUNK_HW)
    first = split * CHUNKS_PER_SPLIT
    for chunk in range(first, tl.minimum(first + CHUNKS_PER_SPLIT, CHUNKS)):
        frame = chunk // chunks_per_frame
        n = (frame // T_SLOW).to(tl.int64)
        to = frame % T_SLOW
        t = to * STRIDE - PAD + kt
        t_ok = (t >= 0) & (t < T_FAST)
        g_frame = g_ptr + n * g_sn + to.to(tl.int64) * g_st
        out_frame = out_ptr + n * out_sn + to.to(tl.int64) * out_st
        x_frame = xf_ptr + n * xf_sn + t.to(tl.int64) * xf_st
        for hw0 in range(0, CHUNK_HW, BLOCK_M):
            hw = (chunk % chunks_per_frame) * CHUNK_HW + hw0 + tl.arange(0, BLOCK_M)
            hw_mask = hw < HW
            hw = hw.to(tl.int64)
            # Masked-off loads move no data: a tap outside [0, T_FAST) reads nothing.
            g_mask = o_mask[:, None] & hw_mask[None, :] & (t_ok | sums_shift)
            g = tl.load(g_frame + g_ch * g_sc + hw[None, :] * g_shw, mask=g_mask, other=0.0)
            if RELU:
                out = tl.load(out_frame + g_ch * out_sc + hw[None, :] * out_shw, mask=g_mask, other=0.0)
                g = tl.where(out > 0, g, tl.zeros_like(g))
            x = tl.load(
                x_frame + hw[:, None] * xf_shw + x_ch * xf_sc,
                mask=hw_mask[:, None] & c_mask[None, :] & t_ok,
                other=0.0,
            )
            if UPCAST:
                g = g.to(tl.float32)
                x = x.to(tl.float32)
            acc = tl.dot(g, x, acc=acc, input_precision=PRECISION, out_dtype=ACC)
            shift_acc += tl.sum(g.to(ACC), axis=1)

    # Partials are laid out like the weight, (C_LAT, C_FAST, KT), one slab per split.
    k_total = C_FAST * KT
    part = part_ptr + split.to(tl.int64) * C_LAT * k_total
    tl.store(part + o[:, None] * k_total + c[None, :] * KT + kt, acc, mask=o_mask[:, None] & c_mask[None, :])
    tl.store(shift_part_ptr + split * C_LAT + o, shift_acc, mask=o_mask & sums_shift)


@triton.jit
def _grad_weight_reduce_kernel(
    part_ptr, shift_part_ptr, w_ptr, scale_ptr, gw_ptr, gscale_ptr, gshift_ptr,
    SPLITS, C_LAT, C_FAST, KT, w_so, w_sc, w_sk,
    HAS_SCALE: tl.constexpr, ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # One program per lateral channel o: its row of G is needed whole for grad_scale.
    o = tl.program_id(0)
    k_total = C_FAST * KT
    split_stride = C_LAT * k_total
    scale_acc = tl.zeros((BLOCK_K,), dtype=ACC)
    for k0 in range(0, k_total, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_mask = k < k_total
        total = tl.zeros((BLOCK_K,), dtype=ACC)
        for s0 in range(0, SPLITS, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            p = tl.load(
                part_ptr + s.to(tl.int64)[:, None] * split_stride + o * k_total + k[None, :],
                mask=(s < SPLITS)[:, None] & k_mask[None, :],
                other=0.0,
            )
            total += tl.sum(p, axis=0)
        w = tl.load(w_ptr + o * w_so + (k // KT) * w_sc + (k % KT) * w_sk, mask=k_mask, other=0.0)
        scale_acc += w.to(ACC) * total
        if HAS_SCALE:
            total = total * tl.load(scale_ptr + o).to(ACC)
        tl.store(gw_ptr + o * k_total + k, total.to(gw_ptr.dtype.element_ty), mask=k_mask)
    tl.store(gscale_ptr + o, tl.sum(scale_acc, axis=0).to(gscale_ptr.dtype.element_ty))

    shift_acc = tl.zeros((BLOCK_S,), dtype=ACC)
    for s0 in range(0, SPLITS, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        shift_acc += tl.load(shift_part_ptr + s * C_LAT + o, mask=s < SPLITS, other=0.0)
    tl.store(gshift_ptr + o, tl.sum(shift_acc, axis=0).to(gshift_ptr.dtype.element_ty))


@on_device_of_first_tensor
def lateral_concat_grad_input(
    grad_out: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    out: torch.Tensor | None,
    stride: int,
    padding: int,
) -> torch.Tensor:
    """grad of x_fast: the transposed temporal conv of ``g * scale``, shaped like x_fast.

    ``grad_out`` is the gradient of the whole concatenated output; ``out`` (the forward output)
    is given only when the forward applied ReLU.
    """
    n, c_fast, t_fast, h, w = x_fast.shape
    c_lat, kt = weight.shape[0], weight.shape[2]
    c_slow = grad_out.shape[1] - c_lat
    t_slow = grad_out.shape[2]
    dx = torch.empty(
        x_fast.shape, dtype=x_fast.dtype, device=x_fast.device, memory_format=output_memory_format(x_fast)
    )
    if dx.numel() == 0:
        return dx
    grad_out, g_strides = spatial_strides(grad_out)
    out_strides = g_strides
    if out is not None:
        out, out_strides = spatial_strides(out)
    _, dx_strides = spatial_strides(dx)
    scale = None if scale is None else scale.contiguous()  # indexed densely; tiny
    hw = h * w

    def grid(meta):
        return (n * t_fast * triton.cdiv(hw, meta["BLOCK_M"]) * triton.cdiv(c_fast, meta["BLOCK_N"]),)

    launch(
        _grad_input_kernel, grid,
        grad_out, grad_out if out is None else out, weight, weight if scale is None else scale, dx,
        c_slow, c_fast, c_lat, t_slow, t_fast, hw, kt, stride, padding,
        *g_strides, *out_strides, weight.stride(0), weight.stride(1), weight.stride(2), *dx_strides,
        int(dx_strides[1] == 1 and c_fast > 1), batch_bucket(n),
        HAS_SCALE=scale is not None, RELU=out is not None,
        PRECISION=dot_precision(x_fast.dtype), ACC=accumulator(x_fast.dtype), UPCAST=upcast_dot(x_fast.dtype),
    )  # fmt: skip
    return dx


@on_device_of_first_tensor
def lateral_concat_grad_weight(
    grad_out: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    out: torch.Tensor | None,
    stride: int,
    padding: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_weight, grad_scale, grad_shift)``: ``G * scale`` shaped like ``weight`` (contiguous),
    ``sum_k W * G`` and ``sum g`` per lateral channel, all in weight's dtype."""
    n, c_fast, t_fast, h, w = x_fast.shape
    c_lat, kt = weight.shape[0], weight.shape[2]
    c_slow = grad_out.shape[1] - c_lat
    t_slow = grad_out.shape[2]
    hw = h * w
    acc = accumulator(weight.dtype)
    part_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32

    deterministic = torch.are_deterministic_algorithms_enabled()
    chunks, chunks_per_split, splits = weight_splits(
        n, t_slow, hw, c_lat, kt, c_fast, DETERMINISTIC_SMS if deterministic else num_sms(x_fast.device)
    )

    k_total = c_fast * kt
    # The partial kernel writes every partial; without pixels it does not run and the sums are zero.
    alloc = torch.empty if chunks > 0 else torch.zeros
    partials = alloc((splits, c_lat, k_total), dtype=part_dtype, device=weight.device)
    shift_partials = alloc((splits, c_lat), dtype=part_dtype, device=weight.device)
    if chunks > 0:
        grad_out, g_strides = spatial_strides(grad_out)
        out_strides = g_strides
        if out is not None:
            out, out_strides = spatial_strides(out)
        x_fast, xf_strides = spatial_strides(x_fast)

        def grid(meta):
            return (splits * kt * triton.cdiv(c_lat, meta["BLOCK_O"]) * triton.cdiv(c_fast, meta["BLOCK_C"]),)

        args = (
            grad_out, grad_out if out is None else out, x_fast, partials, shift_partials,
            c_slow, c_fast, c_lat, t_slow, t_fast, hw, kt, stride, padding, chunks, chunks_per_split,
            *g_strides, *out_strides, *xf_strides,
            int(xf_strides[1] == 1 and c_fast > 1), batch_bucket(n),
        )  # fmt: skip
        flags = dict(
            RELU=out is not None, PRECISION=dot_precision(x_fast.dtype), ACC=acc,
            UPCAST=upcast_dot(x_fast.dtype), CHUNK_HW=_CHUNK_HW,
        )  # fmt: skip
        if deterministic:
            # The tile along the reduced pixels sets the summation order: pin it, never autotune.
            _grad_weight_partial_kernel.fn[grid](*args, **flags, **DETERMINISTIC_WEIGHT_CONFIG.all_kwargs())
        else:
            launch(_grad_weight_partial_kernel, grid, *args, **flags)

    scale = None if scale is None else scale.contiguous()  # indexed densely; tiny
    grad_weight = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    grad_scale = torch.empty((c_lat,), dtype=weight.dtype, device=weight.device)
    grad_shift = torch.empty((c_lat,), dtype=weight.dtype, device=weight.device)
    _grad_weight_reduce_kernel[(c_lat,)](
        partials, shift_partials, weight, weight if scale is None else scale,
        grad_weight, grad_scale, grad_shift,
        splits, c_lat, c_fast, kt, weight.stride(0), weight.stride(1), weight.stride(2),
        HAS_SCALE=scale is not None, ACC=acc, BLOCK_S=16, BLOCK_K=min(256, triton.next_power_of_2(k_total)),
    )  # fmt: skip
    return grad_weight, grad_scale, grad_shift
