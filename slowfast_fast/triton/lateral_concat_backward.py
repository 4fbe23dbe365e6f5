"""``lateral_concat`` backward: the fast-pathway input gradient and the weight/scale/shift gradients.

With ``g`` the lateral channels of ``grad_out`` (zeroed where the forward ReLU was inactive, ``out <= 0``;
kept where ``out`` is NaN, as torch's ReLU backward):

* ``grad_x_fast`` is the transposed temporal conv of ``g * scale``: an implicit GEMM with
  ``M`` = the pixels of one fast frame ``t`` over the whole batch (``(n, hw)`` flattened, so 14x14 and
  7x7 frames fill a tile), ``N`` = the fast channels and ``K`` = (tap, lateral channel) for just the
  taps that land on ``t``: ``(t + padding - kt) % stride == 0`` and the output frame exists. That tap
  set is the same for every pixel of the program, so the K loop is one flat loop over
  ``(tap, o)`` (the software pipeliner overlaps its g loads; the gathered 2-byte weight loads of
  16-bit types are too narrow for cp.async and may not overlap), and frames no window reads (stride > k)
  get zeros without a load. ``g * scale`` is formed on the A tile as it is loaded (rounded to g's dtype,
  as PyTorch's autograd rounds the backward of the forward's multiply), and the B tiles are gathered
  from the weight as stored (``W[o, c, kt]``: at most 0.9 MB at R50, read from L1/L2), so nothing is
  prepared for grad_input before the launch; B loads are masked past C_fast.
* ``G[o, c, kt] = sum over (n, to, hw) of g[n, o, to, hw] * x_fast[n, c, to*stride - padding + kt, hw]``
  is a reduction over all output pixels, flattened over ``(n, to, hw)`` and cut into chunks of
  ``BLOCK_W_M`` (the same for every config); a split is a run of chunks. Then
  ``grad_weight = G * scale``, ``grad_scale = sum_k W * G`` and ``grad_shift = sum g``, all linear in G.
  By default the splits add with relaxed atomics (resolved in L2; the order of the adds is not
  fixed) their fp32 (fp64) tile of G and of ``sum g`` into one slab (C_lat x (C_fast x KT + 2) x 4
  bytes with grad_scale's sums, at most 0.9 MB at R50 8x8 layer3), and the last split to arrive at each
  tile (an int32 arrival counter per tile) rounds the tile into grad_weight, the last tile of each
  lateral-channel tile its grad_scale and grad_shift. The slab and the counters are a workspace kept
  per stream that is zero between launches (:func:`_workspace`): each last reader writes its part's
  zeros back and resets its counter, so no launch zeroes it first. So the partials cost DRAM at most
  one read of that slab and its zeros written back: at R50's fusion points (batch 8) at most 5.6% of
  the backward's fewest bytes in bf16, where per-split slabs cost up to 77%
  (``benchmarks/gpu_design_model.py``). Under
  ``torch.use_deterministic_algorithms(True)`` each split writes its own slab and a reduce kernel adds
  them in a fixed order (no atomics; the split count and the config are pinned). The reduction steps
  32 pixels at a time so that three pipeline stages of both tiles fit in a quarter of the shared
  memory.

Launches (:func:`lateral_concat_backward`, which autograd calls once for both gradients): one kernel
whose first programs are grad_input tiles and whose others are grad_weight splits
(:func:`_backward_kernel`; the tail of one role overlaps the other), plus the reduce kernel when
deterministic. It was 5 launches (the weight operand, grad_input, the slab's zeros, the partials, the
reduce), then 2 (a prep kernel for the weight operand and the zeros, then this kernel).

Vector accesses follow the forward (see lateral_concat.py): the launchers compute aligned run
lengths, the kernels state them to the compiler; integer sizes are not specialized by the JIT.

sm_90 resources (tests/test_triton_sm90_static.py, every config at the R50 4x16 and 8x8 fusion
points, batch 8): with Triton 3.8 no spills; with the GPU machine's Triton 3.6 no spills inside a
loop (19 variants with the folded epilogue at C_fast >= 64 save up to 56 bytes around the loops). The
backward kernel is designed for 2 CTAs of 4 warps per SM (<= 255 registers, <= 113 KiB shared memory
per CTA), and each of its registers and shared bytes are those of its hungrier role (Triton reuses
the shared memory of the branch not taken). Measured: up to 255 registers, the budget, in some
variants of both grad_input tiles (the 64-pixel one is given that cap, see ``_INPUT_TILES``) and 88 KiB
(grad_input's 3 stages of a 128-pixel g tile and a weight tile, K steps of 128 bytes: 32 channels in
fp32, 64 in 16-bit types; the 64-pixel tile steps 64 bytes). grad_weight's tile is 64 x 64:
the 64 x 128 tile, which its own kernel ran in 212-216 registers, spilled 56-80 bytes in the combined one.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from slowfast_fast._layout import output_memory_format
from slowfast_fast.ops import _validate
from slowfast_fast.triton._common import (
    DETERMINISTIC_SMS,
    INTERPRET,
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
    max_block,
    meta_like,
    next_power_of_2,
    num_sms,
    on_device_of_first_tensor,
    plan_key,
    prune_while_capturing,
    spatial_strides,
    upcast_dot,
    vector_runs,
)

# Few configs: every one is compiled per dtype/epilogue variant before the first call can run. The
# grad_input and grad_weight programs run in one launch (:func:`_backward_kernel`), so a config is a pair
# of tiles, one per role, with the warps and stages both roles were designed for (4 and 3). The first is
# also the fixed default during CUDA-graph capture. The channel blocks are caps that the kernel shrinks to the
# channel counts (powers of two, at least 16 for tl.dot).
# With a tile, the register cap given to ptxas (None: its own choice). Measured with Triton 3.8's ptxas
# 12.9 (tests/test_triton_sm90_static.py): left to itself it compiled the IEEE fp32 (TF32 off) variant of
# the 64-pixel tile in 80 registers plus one spilled, aiming at an occupancy the design does not need,
# so that tile gets the design's budget (2 CTAs of 128 threads per SM: 255); given the same cap, the
# 128-pixel tile's IEEE variant spilled 32 bytes at 255 registers, where on its own it takes <= 154.
# The 64-pixel tile steps K by 16 (64 bytes of channels: 16 in fp32, 32 in 16-bit types). With 32, the
# GPU machine's Triton 3.6 (ptxas 12.8) spilled its 16-bit variants with the folded epilogue at
# C_fast = 128 inside the K loop (416-464 bytes of stack, 81 local loads in the loop); with 16 it
# spills nothing inside a loop there, and Triton 3.8 spills nothing at all (tests/test_triton_sm90_static.py
# checks both). It is also the deterministic config (below), so it must hold on every Triton.
_INPUT_TILES = [
    ({"BLOCK_IN_M": 128, "BLOCK_IN_N": 64, "BLOCK_IN_K": 32}, None),
    ({"BLOCK_IN_M": 64, "BLOCK_IN_N": 128, "BLOCK_IN_K": 16}, 255),
]
_WEIGHT_TILES = [
    {"BLOCK_W_O": 64, "BLOCK_W_C": 64, "BLOCK_W_M": 32},
]
_GPU_CONFIGS = [
    triton.Config({**tiles_in, **tiles_w}, num_warps=4, num_stages=3, maxnreg=registers)
    for tiles_in, registers in _INPUT_TILES
    for tiles_w in _WEIGHT_TILES
]
_INTERPRETED_CONFIG = triton.Config(
    {
        "BLOCK_IN_M": 16,
        "BLOCK_IN_N": 16,
        "BLOCK_IN_K": 16,
        "BLOCK_W_O": 16,
        "BLOCK_W_C": 16,
        "BLOCK_W_M": 16,
    },
    num_warps=1,
)
_BACKWARD_CONFIGS = autotune_configs(_GPU_CONFIGS, _INTERPRETED_CONFIG)
# Pixels per chunk of the grad_weight reduction: every config's BLOCK_W_M, fixed before autotuning
# picks one, because the number of partials (allocated up front) depends on it.
_CHUNK_HW = max_block(_BACKWARD_CONFIGS, "BLOCK_W_M")
assert all(c.kwargs["BLOCK_W_M"] == _CHUNK_HW for c in _BACKWARD_CONFIGS)
# Output tile used only to estimate how many programs one split launches.
_TILE_ESTIMATE = 64
# The config of the backward kernel under torch.use_deterministic_algorithms(True): the 64-pixel
# grad_input tile (with the 128-pixel one, ptxas spilled 24 bytes of the ordered-partials variant in
# IEEE fp32 channels_last_3d, even when allowed 255 registers), also when autotuning is off (which
# leaves only the first config in _BACKWARD_CONFIGS).
DETERMINISTIC_CONFIG = _INTERPRETED_CONFIG if INTERPRET else _GPU_CONFIGS[-1]
assert DETERMINISTIC_CONFIG.kwargs["BLOCK_W_M"] == _CHUNK_HW

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
    chunks = cdiv(n * t_slow * hw, _CHUNK_HW)
    tiles = cdiv(c_lat, _TILE_ESTIMATE) * kt * cdiv(c_fast, _TILE_ESTIMATE)
    wanted = max(1, min(chunks, cdiv(4 * sms, tiles)))
    chunks_per_split = max(1, cdiv(chunks, wanted))
    return chunks, chunks_per_split, max(1, cdiv(chunks, chunks_per_split))


def prune_roles(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The backward kernel's ``early_config_prune``: :func:`prune_while_capturing`, then, when a launch
    runs only one role's programs, one config per distinct tile of that role (the other role's tile
    changes nothing there, so timing it again would only cost a compile and a benchmark)."""
    configs = prune_while_capturing(configs, named_args, **kwargs)
    roles = [
        prefix
        for prefix, needed in (
            ("BLOCK_IN_", named_args.get("NEED_INPUT")),
            ("BLOCK_W_", named_args.get("NEED_WEIGHT")),
        )
        if needed
    ]
    kept, seen = [], set()
    for config in configs:
        tiles = tuple(sorted((k, v) for k, v in config.kwargs.items() if k.startswith(tuple(roles))))
        if tiles not in seen:
            seen.add(tiles)
            kept.append(config)
    return kept


@triton.jit
def _grad_input_program(
    pid, g_ptr, out_ptr, wt_ptr, scale_ptr, dx_ptr,
    C_SLOW, C_FAST, C_LAT, T_SLOW, HW, KT, STRIDE, PAD, PIXELS,
    g_sn, g_sc, g_st, g_shw,
    dx_sn, dx_sc, dx_st, dx_shw,
    w_so, w_sc, w_sk,
    RELU: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    A_RUN_M: tl.constexpr, A_RUN_K: tl.constexpr, O_RUN_M: tl.constexpr, O_RUN_N: tl.constexpr,
    C_TILE: tl.constexpr, K_TILE: tl.constexpr, INDEX: tl.constexpr, HAS_SCALE: tl.constexpr,
    K_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """One grad_input tile: ``pid`` in [0, T_FAST * pixel tiles * channel tiles)."""
    # out (the forward output, read for the ReLU mask) has g's strides: the launcher sees to that.
    BN: tl.constexpr = min(BLOCK_N, C_TILE)
    BK: tl.constexpr = min(BLOCK_K * K_SCALE, K_TILE)
    A_ALIGN: tl.constexpr = A_RUN_M * A_RUN_K  # one of the two is 1
    O_ALIGN: tl.constexpr = O_RUN_M * O_RUN_N
    # Program = (t, pixel tile, channel tile), channel tiles fastest: they share the g tiles.
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
    w_col = (c.to(INDEX) * w_sc)[None, :]

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
            # torch's threshold_backward: zero where out <= 0, so the gradient passes where out is NaN.
            a = tl.where(tl.load(out_ptr + offsets, mask=a_mask, other=0.0) <= 0, tl.zeros_like(a), a)
        if HAS_SCALE:
            # g * scale rounded to g's dtype, as PyTorch's backward of the forward's multiply rounds it.
            s = tl.load(scale_ptr + o, mask=k_ok, other=0.0).to(ACC)
            a = (a.to(ACC) * s[None, :]).to(a.dtype)
        # The weight as stored (W[o, c, kt]): a gathered tile of a tensor small enough to stay in L1/L2.
        w_row = (o.to(INDEX) * w_so + kt.to(INDEX) * w_sk)[:, None]
        b = tl.load(wt_ptr + (w_row + w_col), mask=k_ok[:, None] & c_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc=acc, input_precision=PRECISION, out_dtype=ACC)

    o_row = n * dx_sn + t.to(INDEX) * dx_st + hw * dx_shw
    o_row = tl.max_contiguous(tl.multiple_of(o_row, O_ALIGN), O_RUN_M)
    o_col = tl.max_contiguous(tl.multiple_of(c.to(INDEX) * dx_sc, O_ALIGN), O_RUN_N)
    o_mask = tl.max_constancy(m_ok[:, None] & c_ok[None, :], [O_RUN_M, O_RUN_N])
    tl.store(dx_ptr + (o_row[:, None] + o_col[None, :]), acc.to(dx_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def _grad_weight_program(
    pid, g_ptr, out_ptr, xf_ptr, part_ptr, shift_part_ptr, wt_ptr, scale_ptr, gw_ptr, gscale_ptr, gshift_ptr,
    scale_part_ptr, count_ptr,
    C_SLOW, C_FAST, C_LAT, T_SLOW, T_FAST, HW, KT, STRIDE, PAD, M_TOTAL, CHUNKS, CHUNKS_PER_SPLIT,
    g_sn, g_sc, g_st, g_shw,
    xf_sn, xf_sc, xf_st, xf_shw,
    w_so, w_sc, w_sk,
    RELU: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    G_RUN_M: tl.constexpr, G_RUN_O: tl.constexpr, X_RUN_M: tl.constexpr, X_RUN_C: tl.constexpr,
    O_TILE: tl.constexpr, C_TILE: tl.constexpr, INDEX: tl.constexpr, ATOMIC: tl.constexpr,
    HAS_SCALE: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """One grad_weight partial tile: ``pid`` in [0, splits * KT * o tiles * c tiles)."""
    # out (the forward output, read for the ReLU mask) has g's strides: the launcher sees to that.
    BO: tl.constexpr = min(BLOCK_O, O_TILE)
    BC: tl.constexpr = min(BLOCK_C, C_TILE)
    G_ALIGN: tl.constexpr = G_RUN_M * G_RUN_O  # one of the two is 1
    X_ALIGN: tl.constexpr = X_RUN_M * X_RUN_C
    # Program = (split, kt, o tile, c tile), the tiles fastest so the programs reading the same
    # gradient and input pixels run together and share them through L2.
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
            # As in the grad_input tile: passes where out is NaN, as torch's ReLU backward.
            g = tl.where(tl.load(out_ptr + (g_col + g_row), mask=g_mask, other=0.0) <= 0, tl.zeros_like(g), g)
        x_mask = tl.max_constancy(t_ok[:, None] & c_ok[None, :], [X_RUN_M, X_RUN_C])
        x = tl.load(xf_ptr + (x_row + x_col), mask=x_mask, other=0.0)
        if UPCAST:
            g = g.to(tl.float32)
            x = x.to(tl.float32)
        acc = tl.dot(g, x, acc=acc, input_precision=PRECISION, out_dtype=ACC)
        if sums_shift:
            shift_acc += tl.sum(g.to(ACC), axis=1)

    # Partials are laid out like the weight, (C_LAT, C_FAST, KT). ATOMIC: one fp32 (fp64) slab that
    # every split adds into with relaxed L2 atomics (no partial bytes go to DRAM; the order of the adds
    # is not fixed), and the last split to arrive at each (kt, o tile, c tile) finishes the tile.
    # Otherwise one slab per split, written, and the reduce kernel adds them in a fixed order.
    k_total = C_FAST * KT
    at = o[:, None] * k_total + c[None, :] * KT + kt
    tile_ok = o_ok[:, None] & c_ok[None, :]
    if ATOMIC:
        tl.atomic_add(part_ptr + at, acc, mask=tile_ok, sem="relaxed")
        tl.atomic_add(shift_part_ptr + o, shift_acc, mask=o_ok & sums_shift, sem="relaxed")
        # The last split to add into this tile rounds it into grad_weight; the last tile of an o tile
        # to finish rounds its grad_scale and grad_shift (no reduce kernel). A split's adds are ordered
        # before its arrival by the barrier (all threads' adds) and the counter's release; the last
        # arrival's acquire orders every earlier split's adds before its reads, which bypass L1 (.cg).
        # The slab, the sums and the counters are a workspace that is zero between launches: whoever
        # reads a part last (after every add into it) writes its zeros back, and resets its counter.
        tl.debug_barrier()
        tile = pid % (c_tiles * o_tiles * KT)
        arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == tl.cdiv(CHUNKS, CHUNKS_PER_SPLIT) - 1:
            total = tl.load(part_ptr + at, mask=tile_ok, other=0.0, cache_modifier=".cg")
            # Every thread's reads before any zero is written back: a value that several threads hold
            # (a broadcast layout) must not be read by one after another zeroed it.
            tl.debug_barrier()
            tl.store(part_ptr + at, tl.zeros_like(total), mask=tile_ok)
            tl.store(count_ptr + tile, 0)
            w = tl.load(wt_ptr + o[:, None] * w_so + c[None, :] * w_sc + kt * w_sk, mask=tile_ok, other=0.0)
            tl.atomic_add(scale_part_ptr + o, tl.sum(w.to(ACC) * total, axis=1), mask=o_ok, sem="relaxed")
            if HAS_SCALE:
                total = total * tl.load(scale_ptr + o, mask=o_ok, other=0.0).to(ACC)[:, None]
            tl.store(gw_ptr + at, total.to(gw_ptr.dtype.element_ty), mask=tile_ok)
            tl.debug_barrier()
            o_counter = count_ptr + c_tiles * o_tiles * KT + tile_o
            finished = tl.atomic_add(o_counter, 1, sem="acq_rel", scope="gpu")
            if finished == c_tiles * KT - 1:
                scale_sum = tl.load(scale_part_ptr + o, mask=o_ok, other=0.0, cache_modifier=".cg")
                shift_sum = tl.load(shift_part_ptr + o, mask=o_ok, other=0.0, cache_modifier=".cg")
                tl.debug_barrier()  # as above: o's sums are held by several threads each
                tl.store(scale_part_ptr + o, tl.zeros_like(scale_sum), mask=o_ok)
                tl.store(shift_part_ptr + o, tl.zeros_like(shift_sum), mask=o_ok)
                tl.store(o_counter, 0)
                tl.store(gscale_ptr + o, scale_sum.to(gscale_ptr.dtype.element_ty), mask=o_ok)
                tl.store(gshift_ptr + o, shift_sum.to(gshift_ptr.dtype.element_ty), mask=o_ok)
    else:
        part = part_ptr + split.to(tl.int64) * C_LAT * k_total
        tl.store(part + at, acc, mask=tile_ok)
        tl.store(shift_part_ptr + split * C_LAT + o, shift_acc, mask=o_ok & sums_shift)


@autotune(
    _BACKWARD_CONFIGS,
    key=[
        "C_FAST",
        "C_LAT",
        "KT",
        "STRIDE",
        "HW",
        "CHANNELS_LAST",
        "BATCH_BUCKET",
        "NEED_INPUT",
        "NEED_WEIGHT",
    ]
    + ["RELU", "PRECISION", "UPCAST", "A_RUN_M", "A_RUN_K", "O_RUN_M", "O_RUN_N", "X_RUN_M", "X_RUN_C"]
    + ["O_TILE", "C_TILE", "K_TILE", "INDEX", "K_SCALE", "ATOMIC", "HAS_SCALE"],
    # Timing a config runs it several times; no argument needs resetting between the runs: every
    # result is stored, not added into, and the atomic workspace is zero again after each launch.
    prune=prune_roles,
)
@triton.jit(
    do_not_specialize=_SIZES + _G_STRIDES + _DX_STRIDES + _X_STRIDES + ["w_so", "w_sc", "w_sk"]
    + ["CHUNKS", "CHUNKS_PER_SPLIT", "NEED_INPUT", "NEED_WEIGHT", "CHANNELS_LAST", "BATCH_BUCKET"]
)  # fmt: skip
def _backward_kernel(
    g_ptr, out_ptr, dx_ptr, xf_ptr, part_ptr, shift_part_ptr, wt_ptr, scale_ptr,
    gw_ptr, gscale_ptr, gshift_ptr, scale_part_ptr, count_ptr,
    C_SLOW, C_FAST, C_LAT, T_SLOW, T_FAST, HW, KT, STRIDE, PAD, PIXELS, M_TOTAL, CHUNKS, CHUNKS_PER_SPLIT,
    NEED_INPUT,
    g_sn, g_sc, g_st, g_shw,
    dx_sn, dx_sc, dx_st, dx_shw,
    xf_sn, xf_sc, xf_st, xf_shw,
    w_so, w_sc, w_sk,
    NEED_WEIGHT, CHANNELS_LAST, BATCH_BUCKET,  # only autotune keys (NEED_WEIGHT: and the grid's)
    RELU: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    A_RUN_M: tl.constexpr, A_RUN_K: tl.constexpr, O_RUN_M: tl.constexpr, O_RUN_N: tl.constexpr,
    X_RUN_M: tl.constexpr, X_RUN_C: tl.constexpr,
    O_TILE: tl.constexpr, C_TILE: tl.constexpr, K_TILE: tl.constexpr, INDEX: tl.constexpr,
    K_SCALE: tl.constexpr, ATOMIC: tl.constexpr, HAS_SCALE: tl.constexpr,
    BLOCK_IN_M: tl.constexpr, BLOCK_IN_N: tl.constexpr, BLOCK_IN_K: tl.constexpr,
    BLOCK_W_O: tl.constexpr, BLOCK_W_C: tl.constexpr, BLOCK_W_M: tl.constexpr,
):  # fmt: skip
    """Both backward GEMMs in one launch: the first ``NEED_INPUT * T_FAST * pixel tiles * channel
    tiles`` programs compute grad_input tiles, the rest (if the grid has them) grad_weight partials.
    g's vector runs serve both roles (``A_RUN_*``: the same tensor, the same channel bounds)."""
    pid = tl.program_id(0)
    input_programs = (
        NEED_INPUT * T_FAST * tl.cdiv(PIXELS, BLOCK_IN_M) * tl.cdiv(C_FAST, min(BLOCK_IN_N, C_TILE))
    )
    if pid < input_programs:
        _grad_input_program(
            pid, g_ptr, out_ptr, wt_ptr, scale_ptr, dx_ptr,
            C_SLOW, C_FAST, C_LAT, T_SLOW, HW, KT, STRIDE, PAD, PIXELS,
            g_sn, g_sc, g_st, g_shw, dx_sn, dx_sc, dx_st, dx_shw, w_so, w_sc, w_sk,
            RELU, PRECISION, ACC, UPCAST, A_RUN_M, A_RUN_K, O_RUN_M, O_RUN_N, C_TILE, K_TILE, INDEX,
            HAS_SCALE, K_SCALE, BLOCK_IN_M, BLOCK_IN_N, BLOCK_IN_K,
        )  # fmt: skip
    else:
        _grad_weight_program(
            pid - input_programs, g_ptr, out_ptr, xf_ptr, part_ptr, shift_part_ptr, wt_ptr, scale_ptr,
            gw_ptr, gscale_ptr, gshift_ptr, scale_part_ptr, count_ptr,
            C_SLOW, C_FAST, C_LAT, T_SLOW, T_FAST, HW, KT, STRIDE, PAD, M_TOTAL, CHUNKS, CHUNKS_PER_SPLIT,
            g_sn, g_sc, g_st, g_shw, xf_sn, xf_sc, xf_st, xf_shw, w_so, w_sc, w_sk,
            RELU, PRECISION, ACC, UPCAST, A_RUN_M, A_RUN_K, X_RUN_M, X_RUN_C, O_TILE, C_TILE, INDEX, ATOMIC,
            HAS_SCALE, BLOCK_W_O, BLOCK_W_C, BLOCK_W_M,
        )  # fmt: skip


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


def _empty(like: torch.Tensor) -> torch.Tensor:
    """A 0-element tensor like ``like``: the result of a gradient that was not asked for."""
    return like.new_empty((0,))


# Zero-at-rest workspaces of the atomic grad_weight reduction, per (device, stream, dtype): see
# :func:`_workspace`.
_WORKSPACES: dict[tuple, torch.Tensor] = {}
# CUDA's cudaStreamPerThread handle: the one value that names a different stream in each thread.
_PER_THREAD_DEFAULT_STREAM = 2


def _workspace(device: torch.device, dtype: torch.dtype, numel: int) -> torch.Tensor:
    """The first ``numel`` elements of a buffer that is all zeros whenever no backward kernel runs on
    the current stream: the atomic splits add into it and count their arrivals in it, and the last
    reader of each part writes its zeros back (:func:`_grad_weight_program`). So no launch has to
    zero it first: it is zeroed once, when it is allocated or grown.

    One buffer per stream, because kernels on one stream run one after another, while two streams'
    backward kernels may run at once (the per-thread default stream is one handle for every thread,
    so there it is one buffer per thread). During CUDA-graph capture a fresh one is allocated (and
    zeroed in the graph), so that a graph never shares its workspace with eager launches or other
    graphs. Buffers live as long as the process: one per (device, stream, dtype) used, each at most
    twice the largest size asked for (C_lat x (C_fast x KT + 2) elements and the counters, 0.9 MB of
    fp32 at R50)."""
    stream = 0
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return torch.zeros((numel,), dtype=dtype, device=device)
        stream = torch.cuda.current_stream(device).cuda_stream
        if stream == _PER_THREAD_DEFAULT_STREAM:
            stream = (stream, threading.get_ident())
    key = (device, stream, dtype)
    buffer = _WORKSPACES.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.zeros(
            (max(numel, 2 * (0 if buffer is None else buffer.numel())),), dtype=dtype, device=device
        )
        _WORKSPACES[key] = buffer
    return buffer[:numel]


class _Plan(NamedTuple):
    """Everything a backward launch needs that the inputs' shapes, strides, dtypes and flags decide."""

    dx_fmt: torch.memory_format  # grad_x_fast's memory format (x_fast's)
    matched_copy: bool  # grad_out (and out) are made dense first (:func:`_matching`)
    x_fast_copied: bool  # x_fast's strides do not merge H and W: made dense (spatial_strides) first
    run_input: bool  # grad_input programs run
    run_weight: bool  # grad_weight programs run
    atomic: bool  # grad_weight's splits add into the workspace (else ordered slabs and a reduce)
    part_dtype: torch.dtype
    sums: tuple[int, int, int]  # where the partials end, the shift sums end, the scale sums start
    sums_numel: int
    workspace_numel: int  # atomic only: the sums and then the int32 counters
    slabs: int
    grid: Callable[[dict], tuple[int]]
    sizes: tuple[int, ...]  # the kernel's integer arguments, after its 13 tensors
    flags: dict  # its constexpr arguments (and the pinned config when deterministic)
    reduce_sizes: tuple[int, ...]  # the reduce kernel's (deterministic only)
    reduce_flags: dict


@functools.lru_cache(maxsize=1024)
def _plan(
    grad_out: tuple, x_fast: tuple, weight: tuple, out: tuple | None, scale: tuple | None, stride: int,
    padding: int, need_input: bool, need_weight: bool, deterministic: bool, sms: int, precision: str,
) -> _Plan:  # fmt: skip
    """The launch plan for tensors of these ``(shape, stride, dtype)``s (``(shape, dtype)`` for scale,
    None when absent); cached per process.

    It is made from meta tensors of exactly those shapes, strides and dtypes, so it cannot depend on
    anything outside its key (global settings and the GPU come in as arguments: ``deterministic``,
    ``sms``, ``precision``). It first checks them as the compiled kernels do (a key that fails is not
    cached and fails again)."""
    grad_out, x_fast, weight = meta_like(grad_out), meta_like(x_fast), meta_like(weight)
    out = None if out is None else meta_like(out)
    has_scale = scale is not None
    _validate.check_lateral_concat_grad(grad_out, x_fast, weight, affine_like(scale), out, stride, padding)
    n, c_fast, t_fast, h, w = x_fast.shape
    c_lat, kt = weight.shape[0], weight.shape[2]
    c_slow = grad_out.shape[1] - c_lat
    t_slow = grad_out.shape[2]
    hw = h * w
    dtype = x_fast.dtype
    part_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    dx_fmt = output_memory_format(x_fast)
    run_input = need_input and x_fast.numel() > 0
    chunks, chunks_per_split, splits = weight_splits(n, t_slow, hw, c_lat, kt, c_fast, sms)
    run_weight = need_weight and chunks > 0

    # grad_weight's partials. By default the splits add with atomics into one fp32 (fp64) slab of the
    # zero-at-rest workspace, followed by grad_shift's and grad_scale's sums, and count their arrivals
    # in int32 counters after those (a counter per tile and per lateral-channel tile, for tiles of at
    # least 16 channels, the kernel's smallest); the last split per tile rounds the tile into the
    # results. Deterministic: every split writes its own partial (no zeros needed) and the reduce
    # kernel adds them in order.
    k_total = c_fast * kt
    atomic = not deterministic
    workspace_numel = 0
    if run_weight and atomic:
        slabs = 1
        sums_numel = c_lat * (k_total + 2)
        counters = kt * cdiv(c_lat, 16) * cdiv(c_fast, 16) + cdiv(c_lat, 16)
        per_element = torch.finfo(part_dtype).bits // 32  # int32 counters per workspace element
        workspace_numel = sums_numel + cdiv(counters, per_element)
    else:
        slabs = splits if run_weight else 0
        sums_numel = max(1, slabs * c_lat * (k_total + 1))
    # grad_scale's sums follow the shift sums (atomic only; else the kernel gets a placeholder).
    starts = (slabs * c_lat * k_total, slabs * c_lat * (k_total + 1), slabs * c_lat * (k_total + 1))

    relu = out is not None
    grad_out_in, out_in = grad_out, out
    grad_out, out, g_strides = _matching(grad_out, out)
    matched_copy = grad_out is not grad_out_in or (relu and out is not out_in)
    x_fast_in = x_fast
    x_fast, xf_strides = spatial_strides(x_fast)
    if run_input:
        dx = torch.empty(x_fast_in.shape, dtype=dtype, device="meta", memory_format=dx_fmt)
        dx_arg, dx_strides = spatial_strides(dx)
    else:  # without grad_input the kernel never touches dx: x_fast stands in (same dtype and layout)
        dx_arg, dx_strides = x_fast, xf_strides
    a_run_m, a_run_k = vector_runs(g_strides, hw, (c_slow, c_lat))
    o_run_m, o_run_n = vector_runs(dx_strides, hw, (c_fast,))
    x_run_m, x_run_c = vector_runs(xf_strides, hw, (c_fast,))
    o_tile = channel_tile(c_lat, dtype, precision=precision)
    c_tile = channel_tile(c_fast, dtype, precision=precision)
    pixels = n * hw

    def grid(meta):
        inputs = t_fast * cdiv(pixels, meta["BLOCK_IN_M"])
        inputs *= cdiv(c_fast, min(meta["BLOCK_IN_N"], c_tile))
        weights = splits * kt * cdiv(c_lat, min(meta["BLOCK_W_O"], o_tile))
        weights *= cdiv(c_fast, min(meta["BLOCK_W_C"], c_tile))
        return (inputs * run_input + weights * run_weight,)

    sizes = (
        c_slow, c_fast, c_lat, t_slow, t_fast, hw, kt, stride, padding, pixels, n * t_slow * hw,
        chunks, chunks_per_split, int(run_input), *g_strides, *dx_strides, *xf_strides,
        weight.stride(0), weight.stride(1), weight.stride(2),
        int(run_weight), int(xf_strides[1] == 1 and c_fast > 1), batch_bucket(n),
    )  # fmt: skip
    flags = dict(
        RELU=relu, PRECISION=precision, ACC=accumulator(weight.dtype), UPCAST=upcast_dot(dtype),
        A_RUN_M=a_run_m, A_RUN_K=a_run_k, O_RUN_M=o_run_m, O_RUN_N=o_run_n, X_RUN_M=x_run_m,
        X_RUN_C=x_run_c, O_TILE=o_tile, C_TILE=c_tile,
        K_TILE=channel_tile(c_lat, dtype, reduced=True, precision=precision),
        INDEX=index_type(grad_out, out, dx_arg, x_fast), K_SCALE=k_scale(dtype), ATOMIC=atomic,
        HAS_SCALE=has_scale,
    )  # fmt: skip
    if deterministic:
        # The tile along the reduced pixels sets the summation order: pin it, never autotune.
        flags.update(DETERMINISTIC_CONFIG.all_kwargs())
    reduce_sizes = (slabs, c_lat, c_fast, kt, weight.stride(0), weight.stride(1), weight.stride(2))
    reduce_flags = dict(
        HAS_SCALE=has_scale,
        ACC=accumulator(weight.dtype),
        BLOCK_S=16,
        BLOCK_K=min(256, next_power_of_2(k_total)),
    )
    return _Plan(
        dx_fmt, matched_copy, x_fast is not x_fast_in, run_input, run_weight, atomic, part_dtype, starts,
        sums_numel, workspace_numel, slabs, grid, sizes, flags, reduce_sizes, reduce_flags,
    )  # fmt: skip


@on_device_of_first_tensor
def lateral_concat_backward(
    grad_out: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    out: torch.Tensor | None,
    stride: int,
    padding: int,
    need_input: bool = True,
    need_weight: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_x_fast, grad_weight, grad_scale, grad_shift)`` in one launch: the grad_input tiles and
    the grad_weight splits side by side in one kernel; under ``torch.use_deterministic_algorithms(True)``
    a second, the reduce kernel. Without pixels grad_weight, grad_scale and grad_shift are zeros.

    ``grad_out`` is the gradient of the whole concatenated output; ``out`` (the forward output) is
    given only when the forward applied ReLU. ``grad_x_fast`` is shaped and laid out like x_fast;
    ``grad_weight`` is ``G * scale`` shaped like ``weight`` (contiguous), ``grad_scale`` is
    ``sum_k W * G`` and ``grad_shift`` ``sum g`` per lateral channel, all three in weight's dtype.
    A result not asked for (``need_input``, ``need_weight``) is a 0-element tensor and costs nothing.

    The host work that only the shapes, strides, dtypes and flags decide is done once per such key
    (:func:`_plan`); a call then allocates the results and launches.
    """
    devices = "grad_out, x_fast, weight, scale and out"
    _validate.check_devices(devices, grad_out.device, x_fast, weight, scale, out)
    deterministic = torch.are_deterministic_algorithms_enabled()
    plan = _plan(
        plan_key(grad_out), plan_key(x_fast), plan_key(weight), None if out is None else plan_key(out),
        affine_key(scale),
        stride, padding, need_input, need_weight, deterministic,
        DETERMINISTIC_SMS if deterministic else num_sms(x_fast.device), dot_precision(x_fast.dtype),
    )  # fmt: skip
    if need_input:
        dx = torch.empty(x_fast.shape, dtype=x_fast.dtype, device=x_fast.device, memory_format=plan.dx_fmt)
    else:
        dx = _empty(x_fast)
    c_lat = weight.shape[0]
    if plan.run_weight:
        grad_weight = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        grad_scale = torch.empty((c_lat,), dtype=weight.dtype, device=weight.device)
        grad_shift = torch.empty((c_lat,), dtype=weight.dtype, device=weight.device)
        results = (grad_weight, grad_scale, grad_shift)
    elif need_weight:  # no pixels: nothing to reduce
        zeros = torch.zeros((weight.numel() + 2 * c_lat,), dtype=weight.dtype, device=weight.device)
        results = (zeros[: weight.numel()].view(weight.shape), zeros[-2 * c_lat : -c_lat], zeros[-c_lat:])
    else:
        results = (_empty(weight), _empty(weight), _empty(weight))
    if not (plan.run_input or plan.run_weight):
        return (dx, *results)

    if plan.atomic and plan.run_weight:
        # One zero-at-rest workspace: the sums, then the counters as int32 (zero bits are a zero count).
        workspace = _workspace(weight.device, plan.part_dtype, plan.workspace_numel)
        sums = workspace[: plan.sums_numel]
        counts = workspace[plan.sums_numel :].view(torch.int32)
    else:
        sums = weight.new_empty((plan.sums_numel,), dtype=plan.part_dtype)
        counts = weight.new_empty((1,), dtype=torch.int32)
    partials_end, shift_end, scale_start = plan.sums
    partials = sums[:partials_end].view(plan.slabs, c_lat, weight.shape[1] * weight.shape[2])
    shift_partials = sums[partials_end:shift_end].view(plan.slabs, c_lat)
    scale_partials = sums[scale_start:] if plan.run_weight and plan.atomic else sums
    # Arguments a launch does not use still need an address, of the dtype they have when used, so
    # that a launch without grad_weight (frozen weights) runs the same compiled kernel.
    if plan.run_weight:
        results_arg = results
    else:
        spare = weight.new_empty((1,))
        results_arg = (spare, spare, spare)
    scale = None if scale is None else scale.contiguous()  # the kernels index it densely; tiny
    scale_arg = weight if scale is None else scale  # an address even without a scale (HAS_SCALE off)

    if plan.matched_copy:  # the same (deterministic) copies that the plan's strides were taken from
        grad_out, out, _ = _matching(grad_out, out)
    elif out is None:
        out = grad_out  # never read without ReLU
    if plan.x_fast_copied:
        x_fast, _ = spatial_strides(x_fast)
    dx_arg = dx if plan.run_input else x_fast
    args = (
        grad_out, out, dx_arg, x_fast, partials, shift_partials, weight, scale_arg, *results_arg,
        scale_partials, counts, *plan.sizes,
    )  # fmt: skip
    if deterministic:  # the config is pinned in the plan's flags
        _backward_kernel.fn[plan.grid](*args, **plan.flags)
    else:
        launch(_backward_kernel, plan.grid, *args, **plan.flags)

    if plan.run_weight and not plan.atomic:
        _grad_weight_reduce_kernel[(c_lat,)](
            partials, shift_partials, weight, scale_arg, *results, *plan.reduce_sizes, **plan.reduce_flags
        )
    return (dx, *results)


def lateral_concat_grad_input(
    grad_out: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    out: torch.Tensor | None,
    stride: int,
    padding: int,
) -> torch.Tensor:
    """grad of x_fast: the transposed temporal conv of ``g * scale``, shaped like x_fast
    (:func:`lateral_concat_backward` with only that result: one launch)."""
    return lateral_concat_backward(grad_out, x_fast, weight, scale, out, stride, padding, True, False)[0]


def lateral_concat_grad_weight(
    grad_out: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    out: torch.Tensor | None,
    stride: int,
    padding: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_weight, grad_scale, grad_shift)`` (:func:`lateral_concat_backward` with only those)."""
    return lateral_concat_backward(grad_out, x_fast, weight, scale, out, stride, padding, False, True)[1:]
