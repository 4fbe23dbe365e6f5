"""``lateral_concat`` backward: the fast-pathway input gradient and the weight/scale/shift gradients.

With ``g`` the lateral channels of ``grad_out`` (zeroed where the forward ReLU was inactive):

* ``grad_x_fast`` is the transposed temporal conv of ``g * scale``: an implicit GEMM with
  ``M`` = the pixels of one fast frame ``t`` over the whole batch (``(n, hw)`` flattened, so 14x14 and
  7x7 frames fill a tile), ``N`` = the fast channels and ``K`` = (tap, lateral channel) for just the
  taps that land on ``t``: ``(t + padding - kt) % stride == 0`` and the output frame exists. That tap
  set is the same for every pixel of the program, so the K loop is one flat loop over
  ``(tap, o)`` (the software pipeliner overlaps its loads), and frames no window reads (stride > k)
  get zeros without a load. The weight comes in as a dense ``(KT, C_lat, C_fast)`` tensor with the
  scale folded in (made per call by one small kernel), contiguous along the fast channels; B loads
  are masked past C_fast.
* ``G[o, c, kt] = sum over (n, to, hw) of g[n, o, to, hw] * x_fast[n, c, to*stride - padding + kt, hw]``
  is a reduction over all output pixels, flattened over ``(n, to, hw)`` and cut into chunks of
  ``BLOCK_M`` (the same for every config). By default every split (a run of chunks) adds its fp32
  tile of G and of ``sum g`` per channel into one zeroed slab with relaxed atomics: the adds resolve
  in L2 (the slab is C_lat x (C_fast x KT + 1) x 4 bytes, at most 0.9 MB at R50 8x8 layer3), so the
  partials cost DRAM at most the slab's zeroing and one read: at R50's fusion points (batch 8) at
  most 2.8% of the backward's fewest bytes in fp32 and 5.6% in bf16, where per-split slabs cost up
  to 38% and 77% (``benchmarks/gpu_design_model.py``); the order of the adds is not fixed.
  Under ``torch.use_deterministic_algorithms(True)`` each split writes its own slab and the second
  kernel adds them in a fixed order (no atomics; the split count and tile are pinned). The second
  small kernel produces ``grad_weight = G * scale``, ``grad_scale = sum_k W * G`` and
  ``grad_shift = sum g``. The reduction dimension is only 32 pixels per step so that three pipeline
  stages of both tiles fit in a quarter of the shared memory (the old 128-pixel steps took 115-184 KB:
  one CTA per SM).

Vector accesses follow the forward (see lateral_concat.py): the launchers compute aligned run
lengths, the kernels state them to the compiler; integer sizes are not specialized by the JIT.

sm_90 resources (tests/test_triton_sm90_static.py, every config at the R50 4x16 and 8x8 fusion
points, batch 8): no spills; both GEMM kernels are designed for 2 CTAs of 4 warps per SM (<= 255
registers, <= 113 KiB shared memory per CTA). Measured: grad_input at most 180 registers and 88 KiB
(3 stages of a 128-pixel g tile and a weight tile, K steps of 128 bytes: 32 channels in fp32, 64 in
16-bit types, as in the forward), grad_weight at most 209 registers and
81 KiB (fp32 channels_last_3d, 3 stages of 64x32 g and 32x128 x_fast tiles).
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
    channel_tile,
    dot_precision,
    index_type,
    k_scale,
    launch,
    max_block,
    num_sms,
    on_device_of_first_tensor,
    run_length,
    spatial_strides,
    upcast_dot,
    vector_runs,
)

# Few configs: every one is compiled per dtype/epilogue variant before the first call can run. The
# first of each list is also the fixed default during CUDA-graph capture; the first weight config is
# the one pinned under torch.use_deterministic_algorithms(True). BLOCK_N/BLOCK_O/BLOCK_C/BLOCK_K are
# caps that the kernels shrink to the channel counts (powers of two, at least 16 for tl.dot).
_INPUT_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    ],
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1),
)

_WEIGHT_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_O": 64, "BLOCK_C": 64, "BLOCK_M": 32}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_O": 64, "BLOCK_C": 128, "BLOCK_M": 32}, num_warps=4, num_stages=3),
    ],
    triton.Config({"BLOCK_O": 16, "BLOCK_C": 16, "BLOCK_M": 16}, num_warps=1),
)
# Pixels per chunk of the grad_weight reduction: every config's BLOCK_M, fixed before autotuning
# picks one, because the number of partials (allocated up front) depends on it.
_CHUNK_HW = max_block(_WEIGHT_CONFIGS, "BLOCK_M")
assert all(c.kwargs["BLOCK_M"] == _CHUNK_HW for c in _WEIGHT_CONFIGS)
# Output tile used only to estimate how many programs one split launches.
_TILE_ESTIMATE = 64
# The config of the partial kernel under torch.use_deterministic_algorithms(True).
DETERMINISTIC_WEIGHT_CONFIG = _WEIGHT_CONFIGS[0]

_SIZES = ["C_SLOW", "C_FAST", "C_LAT", "T_SLOW", "T_FAST", "HW", "KT", "STRIDE", "PAD", "PIXELS", "M_TOTAL"]
_G_STRIDES = ["g_sn", "g_sc", "g_st", "g_shw"]
_X_STRIDES = ["xf_sn", "xf_sc", "xf_st", "xf_shw"]
_DX_STRIDES = ["dx_sn", "dx_sc", "dx_st", "dx_shw"]


def weight_splits(
    n: int, t_slow: int, hw: int, c_lat: int, kt: int, c_fast: int, sms: int
) -> tuple[int, int, int]:
    """``(chunks, chunks_per_split, splits)`` of the grad_weight reduction: enough splits to fill
    ``sms`` multiprocessors a few times over with the output tiles, never an empty split. The split
    count fixes the order partial sums are added in, so it depends on ``sms`` only through here."""
    chunks = triton.cdiv(n * t_slow * hw, _CHUNK_HW)
    tiles = triton.cdiv(c_lat, _TILE_ESTIMATE) * kt * triton.cdiv(c_fast, _TILE_ESTIMATE)
    wanted = max(1, min(chunks, triton.cdiv(4 * sms, tiles)))
    chunks_per_split = max(1, triton.cdiv(chunks, wanted))
    return chunks, chunks_per_split, max(1, triton.cdiv(chunks, chunks_per_split))


@autotune(
    _INPUT_CONFIGS,
    key=["C_FAST", "C_LAT", "KT", "STRIDE", "HW", "CHANNELS_LAST", "BATCH_BUCKET", "RELU", "PRECISION"]
    + ["UPCAST", "A_RUN_M", "A_RUN_K", "O_RUN_M", "O_RUN_N", "C_TILE", "K_TILE", "INDEX", "W_RUN"]
    + ["K_SCALE"],
)
@triton.jit(do_not_specialize=_SIZES + _G_STRIDES + _DX_STRIDES + ["CHANNELS_LAST", "BATCH_BUCKET"])
def _grad_input_kernel(
    g_ptr, out_ptr, w_ptr, dx_ptr,
    C_SLOW, C_FAST, C_LAT, T_SLOW, T_FAST, HW, KT, STRIDE, PAD, PIXELS,
    g_sn, g_sc, g_st, g_shw,
    dx_sn, dx_sc, dx_st, dx_shw,
    CHANNELS_LAST, BATCH_BUCKET,  # only autotune keys
    RELU: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    A_RUN_M: tl.constexpr, A_RUN_K: tl.constexpr, O_RUN_M: tl.constexpr, O_RUN_N: tl.constexpr,
    C_TILE: tl.constexpr, K_TILE: tl.constexpr, INDEX: tl.constexpr, W_RUN: tl.constexpr,
    K_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # out (the forward output, read for the ReLU mask) has g's strides: the launcher sees to that.
    BN: tl.constexpr = min(BLOCK_N, C_TILE)
    BK: tl.constexpr = min(BLOCK_K * K_SCALE, K_TILE)
    A_ALIGN: tl.constexpr = A_RUN_M * A_RUN_K  # one of the two is 1
    O_ALIGN: tl.constexpr = O_RUN_M * O_RUN_N
    # Program = (t, pixel tile, channel tile), channel tiles fastest: they share the g tiles.
    pid = tl.program_id(0)
    c_tiles = tl.cdiv(C_FAST, BN)
    m_tiles = tl.cdiv(PIXELS, BLOCK_M)
    tile_c = pid % c_tiles
    tile_m = (pid // c_tiles) % m_tiles
    t = pid // (c_tiles * m_tiles)
    m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < PIXELS
    n = (m // HW).to(INDEX)
    hw = (m % HW).to(INDEX)
    c = tile_c * BN + tl.arange(0, BN)
    c_ok = c < C_FAST
    w_col = tl.max_contiguous(tl.multiple_of(c, W_RUN), W_RUN)[None, :]

    # Tap kt reads frame t from output frame to = (t + PAD - kt) / STRIDE; it must divide exactly and
    # land in [0, T_SLOW). The first such kt is at least r - STRIDE*(T_SLOW-1), rounded up to r's residue.
    r = t + PAD
    kt_min = tl.maximum(r - STRIDE * (T_SLOW - 1), 0)
    kt_start = kt_min + (r - kt_min) % STRIDE
    taps = tl.maximum(tl.cdiv(tl.minimum(r + 1, KT) - kt_start, STRIDE), 0)
    k_end = taps * C_LAT
    a_row = n * g_sn + hw * g_shw
    a_row = tl.max_contiguous(tl.multiple_of(a_row, A_ALIGN), A_RUN_M)
    acc = tl.zeros((BLOCK_M, BN), dtype=ACC)
    for k0 in range(0, k_end, BK):
        k = k0 + tl.arange(0, BK)
        k_ok = k < k_end
        o = k % C_LAT
        kt = kt_start + (k // C_LAT) * STRIDE
        to = (r - kt) // STRIDE
        a_col = to.to(INDEX) * g_st + (C_SLOW + o).to(INDEX) * g_sc
        a_col = tl.max_contiguous(tl.multiple_of(a_col, A_ALIGN), A_RUN_K)
        a_mask = tl.max_constancy(m_ok[:, None] & k_ok[None, :], [A_RUN_M, A_RUN_K])
        offsets = a_row[:, None] + a_col[None, :]
        a = tl.load(g_ptr + offsets, mask=a_mask, other=0.0)
        if RELU:
            a = tl.where(tl.load(out_ptr + offsets, mask=a_mask, other=0.0) > 0, a, tl.zeros_like(a))
        w_row = tl.multiple_of((kt * C_LAT + o).to(INDEX) * C_FAST, W_RUN)[:, None]
        b_mask = tl.max_constancy(k_ok[:, None] & c_ok[None, :], [1, W_RUN])
        b = tl.load(w_ptr + (w_row + w_col), mask=b_mask, other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc=acc, input_precision=PRECISION, out_dtype=ACC)

    o_row = n * dx_sn + t.to(INDEX) * dx_st + hw * dx_shw
    o_row = tl.max_contiguous(tl.multiple_of(o_row, O_ALIGN), O_RUN_M)
    o_col = tl.max_contiguous(tl.multiple_of(c.to(INDEX) * dx_sc, O_ALIGN), O_RUN_N)
    o_mask = tl.max_constancy(m_ok[:, None] & c_ok[None, :], [O_RUN_M, O_RUN_N])
    tl.store(dx_ptr + (o_row[:, None] + o_col[None, :]), acc.to(dx_ptr.dtype.element_ty), mask=o_mask)


@autotune(
    _WEIGHT_CONFIGS,
    key=["C_FAST", "C_LAT", "KT", "HW", "CHANNELS_LAST", "BATCH_BUCKET", "RELU", "PRECISION", "UPCAST"]
    + ["G_RUN_M", "G_RUN_O", "X_RUN_M", "X_RUN_C", "O_TILE", "C_TILE", "INDEX", "ATOMIC"],
)
@triton.jit(do_not_specialize=_SIZES + _G_STRIDES + _X_STRIDES + ["CHUNKS", "CHUNKS_PER_SPLIT"]
            + ["CHANNELS_LAST", "BATCH_BUCKET"])  # fmt: skip
def _grad_weight_partial_kernel(
    g_ptr, out_ptr, xf_ptr, part_ptr, shift_part_ptr,
    C_SLOW, C_FAST, C_LAT, T_SLOW, T_FAST, HW, KT, STRIDE, PAD, M_TOTAL, CHUNKS, CHUNKS_PER_SPLIT,
    g_sn, g_sc, g_st, g_shw,
    xf_sn, xf_sc, xf_st, xf_shw,
    CHANNELS_LAST, BATCH_BUCKET,  # only autotune keys
    RELU: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    G_RUN_M: tl.constexpr, G_RUN_O: tl.constexpr, X_RUN_M: tl.constexpr, X_RUN_C: tl.constexpr,
    O_TILE: tl.constexpr, C_TILE: tl.constexpr, INDEX: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    # out (the forward output, read for the ReLU mask) has g's strides: the launcher sees to that.
    BO: tl.constexpr = min(BLOCK_O, O_TILE)
    BC: tl.constexpr = min(BLOCK_C, C_TILE)
    G_ALIGN: tl.constexpr = G_RUN_M * G_RUN_O  # one of the two is 1
    X_ALIGN: tl.constexpr = X_RUN_M * X_RUN_C
    # Program = (split, kt, o tile, c tile), the tiles fastest so the programs reading the same
    # gradient and input pixels run together and share them through L2.
    pid = tl.program_id(0)
    c_tiles = tl.cdiv(C_FAST, BC)
    o_tiles = tl.cdiv(C_LAT, BO)
    tile_c = pid % c_tiles
    tile_o = (pid // c_tiles) % o_tiles
    kt = (pid // (c_tiles * o_tiles)) % KT
    split = pid // (c_tiles * o_tiles * KT)
    o = tile_o * BO + tl.arange(0, BO)
    o_ok = o < C_LAT
    c = tile_c * BC + tl.arange(0, BC)
    c_ok = c < C_FAST
    g_col = tl.max_contiguous(tl.multiple_of((C_SLOW + o).to(INDEX) * g_sc, G_ALIGN), G_RUN_O)[:, None]
    x_col = tl.max_contiguous(tl.multiple_of(c.to(INDEX) * xf_sc, X_ALIGN), X_RUN_C)[None, :]
    # One program per split also sums g for grad_shift, over every pixel (padding taps included).
    sums_shift = (kt == 0) & (tile_c == 0)

    acc = tl.zeros((BO, BC), dtype=ACC)
    shift_acc = tl.zeros((BO,), dtype=ACC)
    first = split * CHUNKS_PER_SPLIT
    for chunk in range(first, tl.minimum(first + CHUNKS_PER_SPLIT, CHUNKS)):
        m = chunk * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = m < M_TOTAL
        frame = m // HW
        hw = (m % HW).to(INDEX)
        n = (frame // T_SLOW).to(INDEX)
        to = frame % T_SLOW
        t = to * STRIDE - PAD + kt
        t_ok = m_ok & (t >= 0) & (t < T_FAST)
        g_row = n * g_sn + to.to(INDEX) * g_st + hw * g_shw
        g_row = tl.max_contiguous(tl.multiple_of(g_row, G_ALIGN), G_RUN_M)[None, :]
        x_row = n * xf_sn + t.to(INDEX) * xf_st + hw * xf_shw
        x_row = tl.max_contiguous(tl.multiple_of(x_row, X_ALIGN), X_RUN_M)[:, None]
        # Masked-off loads move no data: a tap outside [0, T_FAST) reads nothing.
        g_mask = o_ok[:, None] & (t_ok | (m_ok & sums_shift))[None, :]
        g_mask = tl.max_constancy(g_mask, [G_RUN_O, G_RUN_M])
        g = tl.load(g_ptr + (g_col + g_row), mask=g_mask, other=0.0)
        if RELU:
            g = tl.where(tl.load(out_ptr + (g_col + g_row), mask=g_mask, other=0.0) > 0, g, tl.zeros_like(g))
        x_mask = tl.max_constancy(t_ok[:, None] & c_ok[None, :], [X_RUN_M, X_RUN_C])
        x = tl.load(xf_ptr + (x_row + x_col), mask=x_mask, other=0.0)
        if UPCAST:
            g = g.to(tl.float32)
            x = x.to(tl.float32)
        acc = tl.dot(g, x, acc=acc, input_precision=PRECISION, out_dtype=ACC)
        if sums_shift:
            shift_acc += tl.sum(g.to(ACC), axis=1)

    # Partials are laid out like the weight, (C_LAT, C_FAST, KT): one slab per split, or with ATOMIC one
    # slab that every split adds into (L2 atomics: no partial bytes go to DRAM, the order of the adds
    # is not fixed).
    k_total = C_FAST * KT
    at = o[:, None] * k_total + c[None, :] * KT + kt
    if ATOMIC:
        tl.atomic_add(part_ptr + at, acc, mask=o_ok[:, None] & c_ok[None, :], sem="relaxed")
        tl.atomic_add(shift_part_ptr + o, shift_acc, mask=o_ok & sums_shift, sem="relaxed")
    else:
        part = part_ptr + split.to(tl.int64) * C_LAT * k_total
        tl.store(part + at, acc, mask=o_ok[:, None] & c_ok[None, :])
        tl.store(shift_part_ptr + split * C_LAT + o, shift_acc, mask=o_ok & sums_shift)


@triton.jit(do_not_specialize=["SPLITS", "C_LAT", "C_FAST", "KT", "w_so", "w_sc", "w_sk"])
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


def _matching(grad_out: torch.Tensor, out: torch.Tensor | None):
    """``(grad_out, out, strides)`` with H and W merged, ``out`` (None without ReLU) laid out like
    ``grad_out`` so that the kernels read both at the same offsets. When their strides differ (mixed
    layouts, an expanded gradient), both are made dense in out's memory format."""
    grad_out, g_strides = spatial_strides(grad_out)
    if out is None:
        return grad_out, grad_out, g_strides
    out, out_strides = spatial_strides(out)
    if out_strides != g_strides:
        fmt = output_memory_format(out)
        grad_out, g_strides = spatial_strides(grad_out.contiguous(memory_format=fmt))
        out, out_strides = spatial_strides(out.contiguous(memory_format=fmt))
    return grad_out, out, g_strides


def _input_weight(weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``(KT, C_lat, C_fast)`` dense: ``weight[o, c, kt] * scale[o]`` at ``[kt, o, c]``, in one kernel
    (a copy, or the product written straight into the new order). 16-bit products are computed in
    fp32 and rounded once to weight's dtype, as the forward's epilogue scales."""
    c_lat, c_fast, kt = weight.shape[:3]
    rows = weight.new_empty((kt, c_lat, c_fast))
    w = weight[..., 0, 0].permute(2, 0, 1)
    if scale is None:
        rows.copy_(w)
    elif weight.dtype == torch.float64 or scale.dtype == weight.dtype:
        torch.mul(w, scale.to(weight.dtype)[None, :, None], out=rows)  # opmath: fp32 for 16-bit types
    else:
        rows.copy_(w.float() * scale.float()[None, :, None])
    return rows


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
    relu = out is not None
    grad_out, out, g_strides = _matching(grad_out, out)
    _, dx_strides = spatial_strides(dx)
    w_rows = _input_weight(weight, scale)
    hw = h * w
    pixels = n * hw
    a_run_m, a_run_k = vector_runs(g_strides, hw, (c_slow, c_lat))
    o_run_m, o_run_n = vector_runs(dx_strides, hw, (c_fast,))
    c_tile = channel_tile(c_fast, x_fast.dtype)

    def grid(meta):
        c_tiles = triton.cdiv(c_fast, min(meta["BLOCK_N"], c_tile))
        return (t_fast * triton.cdiv(pixels, meta["BLOCK_M"]) * c_tiles,)

    launch(
        _grad_input_kernel, grid,
        grad_out, out, w_rows, dx,
        c_slow, c_fast, c_lat, t_slow, t_fast, hw, kt, stride, padding, pixels,
        *g_strides, *dx_strides,
        int(dx_strides[1] == 1 and c_fast > 1), batch_bucket(n),
        RELU=relu, PRECISION=dot_precision(x_fast.dtype), ACC=accumulator(x_fast.dtype),
        UPCAST=upcast_dot(x_fast.dtype), A_RUN_M=a_run_m, A_RUN_K=a_run_k, O_RUN_M=o_run_m, O_RUN_N=o_run_n,
        C_TILE=c_tile, K_TILE=channel_tile(c_lat, x_fast.dtype, reduced=True),
        INDEX=index_type(grad_out, out, dx), W_RUN=run_length(c_fast), K_SCALE=k_scale(x_fast.dtype),
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
    # Deterministic: every split writes its own partial (the partial kernel writes them all; without
    # pixels it does not run and the sums are zero) and the reduce kernel adds them in a fixed order.
    # Otherwise the splits add into one zeroed slab with atomics, which the reduce kernel reads once.
    atomic = not deterministic
    slabs = 1 if atomic else splits
    alloc = torch.zeros if atomic or chunks == 0 else torch.empty
    buffer = alloc((slabs * c_lat * (k_total + 1),), dtype=part_dtype, device=weight.device)
    partials = buffer[: slabs * c_lat * k_total].view(slabs, c_lat, k_total)
    shift_partials = buffer[slabs * c_lat * k_total :].view(slabs, c_lat)
    if chunks > 0:
        relu = out is not None
        grad_out, out, g_strides = _matching(grad_out, out)
        x_fast, xf_strides = spatial_strides(x_fast)
        g_run_m, g_run_o = vector_runs(g_strides, hw, (c_slow, c_lat))
        x_run_m, x_run_c = vector_runs(xf_strides, hw, (c_fast,))
        o_tile, c_tile = channel_tile(c_lat, x_fast.dtype), channel_tile(c_fast, x_fast.dtype)

        def grid(meta):
            o_tiles = triton.cdiv(c_lat, min(meta["BLOCK_O"], o_tile))
            return (splits * kt * o_tiles * triton.cdiv(c_fast, min(meta["BLOCK_C"], c_tile)),)

        args = (
            grad_out, out, x_fast, partials, shift_partials,
            c_slow, c_fast, c_lat, t_slow, t_fast, hw, kt, stride, padding, n * t_slow * hw,
            chunks, chunks_per_split, *g_strides, *xf_strides,
            int(xf_strides[1] == 1 and c_fast > 1), batch_bucket(n),
        )  # fmt: skip
        flags = dict(
            RELU=relu, PRECISION=dot_precision(x_fast.dtype), ACC=acc, UPCAST=upcast_dot(x_fast.dtype),
            G_RUN_M=g_run_m, G_RUN_O=g_run_o, X_RUN_M=x_run_m, X_RUN_C=x_run_c,
            O_TILE=o_tile, C_TILE=c_tile, INDEX=index_type(grad_out, out, x_fast), ATOMIC=atomic,
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
        slabs, c_lat, c_fast, kt, weight.stride(0), weight.stride(1), weight.stride(2),
        HAS_SCALE=scale is not None, ACC=acc, BLOCK_S=16, BLOCK_K=min(256, triton.next_power_of_2(k_total)),
    )  # fmt: skip
    return grad_weight, grad_scale, grad_shift
