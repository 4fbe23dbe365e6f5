"""The Triton kernels against the pure-PyTorch reference.

Without a GPU they run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), which
emulates every program in Python: shapes here are tiny and odd on purpose. The ``cuda``-marked tests
repeat the comparisons at realistic SlowFast shapes on a GPU.

Tolerance rule (as flash-attention's tests): against an fp64 truth computed from the same rounded
inputs, the kernel's max error must be at most twice PyTorch's own error in the same dtype, plus four
ulps of the output's magnitude (the two sum in different orders, so neither is exact in fp32); in fp64,
where PyTorch's result is the truth itself, 64 ulps (see :func:`assert_close`).
Resampling only copies values, so it must match ``F.interpolate`` bit for bit.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from slowfast_fast import backend, ops, reference
from slowfast_fast._layout import output_memory_format

pytest.importorskip("triton")

from slowfast_fast.ops import _triton_ops  # noqa: E402  (after the skip: needs triton)
from slowfast_fast.triton import _common  # noqa: E402

CL = torch.channels_last_3d
CONTIG = torch.contiguous_format
TRITON_OPS = torch.ops.slowfast_fast_triton


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def test_triton_backend_is_usable_here():
    """Without this the other tests would silently compare the reference with itself."""
    assert _triton_ops.LOAD_ERROR is None
    assert backend.usable("triton", torch.device(_device()))[0]


def assert_close(actual, truth, torch_same_dtype, what: str = "", factor: float = 2):
    """``actual``'s error against the fp64 ``truth`` is within ``factor`` times PyTorch's error in the
    same dtype (``torch_same_dtype``) plus 4 ulps of the largest output (see the module docstring)."""
    assert actual.shape == truth.shape and actual.dtype == torch_same_dtype.dtype, what
    truth = truth.double()
    err = (actual.double() - truth).abs().max().item()
    torch_err = (torch_same_dtype.double() - truth).abs().max().item()
    # In fp64 PyTorch's own result is the truth (error 0), so only the floor is left: the kernels add up
    # to a few hundred products in another order, up to 6 ulps of the largest output over 40 random
    # seeds; 64 leaves room and is still 1e-14 relative.
    ulps = 64 if actual.dtype == torch.float64 else 4
    bound = factor * torch_err + ulps * torch.finfo(actual.dtype).eps * truth.abs().max().item()
    assert err <= bound, (
        f"{what}: max error {err:.3e} > bound {bound:.3e} (PyTorch's own error {torch_err:.3e})"
    )


def _rand(shape, dtype, fmt=CONTIG, device=None):
    return torch.randn(shape, dtype=dtype, device=device or _device()).contiguous(memory_format=fmt)


@contextlib.contextmanager
def _deterministic_algorithms(enabled: bool = True):
    """``torch.use_deterministic_algorithms(enabled)`` for the block, the previous setting after it."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


class LateralCase:
    """One lateral_concat problem: shapes ``(N, C_slow, C_fast, C_lat, T_fast, k, stride, pad, H, W)``."""

    def __init__(self, n, c_slow, c_fast, c_lat, t_fast, k, stride, pad, h, w):
        self.n, self.c_slow, self.c_fast, self.c_lat = n, c_slow, c_fast, c_lat
        self.t_fast, self.k, self.stride, self.pad, self.h, self.w = t_fast, k, stride, pad, h, w
        self.t_slow = (t_fast + 2 * pad - k) // stride + 1

    def tensors(self, dtype, fmt=CONTIG, affine=True, device=None):
        """x_slow, x_fast, weight, scale, shift (scale/shift None when not ``affine``)."""
        x_slow = _rand((self.n, self.c_slow, self.t_slow, self.h, self.w), dtype, fmt, device)
        x_fast = _rand((self.n, self.c_fast, self.t_fast, self.h, self.w), dtype, fmt, device)
        weight = _rand((self.c_lat, self.c_fast, self.k, 1, 1), dtype, device=device) / math.sqrt(
            self.c_fast * self.k
        )
        scale = _rand((self.c_lat,), dtype, device=device) if affine else None
        shift = _rand((self.c_lat,), dtype, device=device) if affine else None
        return x_slow, x_fast, weight, scale, shift

    def __repr__(self):
        return (
            f"N{self.n}_Cs{self.c_slow}_Cf{self.c_fast}_Cl{self.c_lat}_T{self.t_fast}_k{self.k}"
            f"_s{self.stride}_p{self.pad}_{self.h}x{self.w}"
        )


# Tiny odd shapes: stride below, equal to and above k; channel counts across a 16-wide tile;
# H*W below and above a 16-pixel tile; padding 0, inside and at k-1.
CASES = [
    LateralCase(2, 3, 5, 6, 9, 3, 2, 1, 3, 5),  # s < k
    LateralCase(1, 2, 4, 7, 13, 2, 5, 1, 3, 3),  # s > k: frames between windows are never read
    LateralCase(1, 17, 3, 18, 6, 5, 1, 2, 1, 7),  # s = 1, 2 lateral + 2 copy tiles
    LateralCase(2, 1, 9, 5, 8, 3, 3, 0, 5, 4),  # s = k, no padding, H*W = 20 > one tile
]


def _cast(tensors, dtype):
    return [None if t is None else t.detach().to(dtype) for t in tensors]


def _lateral_forward_check(case, dtype, fmt, affine, relu, factor=2):
    inputs = case.tensors(dtype, fmt, affine)
    args = (case.stride, case.pad)
    out = ops.lateral_concat(*inputs[:3], *args, *inputs[3:], relu, backend="triton")
    truth = reference.lateral_concat(
        *_cast(inputs[:3], torch.float64), *args, *_cast(inputs[3:], torch.float64), relu
    )
    same = reference.lateral_concat(*inputs[:3], *args, *inputs[3:], relu)
    assert_close(out, truth, same, f"{case} {dtype} {fmt}", factor)
    assert out.is_contiguous(memory_format=output_memory_format(inputs[0]))
    # The x_slow channels are a copy.
    assert torch.equal(out[:, : case.c_slow], inputs[0])


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
def test_lateral_concat_forward_fp32(case, fmt):
    _lateral_forward_check(case, torch.float32, fmt, affine=True, relu=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
def test_lateral_concat_forward_dtypes(dtype, fmt):
    _lateral_forward_check(CASES[0], dtype, fmt, affine=True, relu=False)


@pytest.mark.parametrize("affine,relu", [(False, False), (True, False), (False, True)])
def test_lateral_concat_forward_epilogues(affine, relu):
    _lateral_forward_check(CASES[1], torch.float32, CONTIG, affine, relu)


def _lateral_grads(inputs, case, relu, grad_out, fn):
    """Gradients of ``fn`` (an op or the reference) w.r.t. every input that is not None."""
    leaves = [None if t is None else t.detach().requires_grad_() for t in inputs]
    out = fn(*leaves[:3], case.stride, case.pad, *leaves[3:], relu)
    return torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out)


def _lateral_backward_check(case, dtype, fmt, affine, relu):
    inputs = case.tensors(dtype, fmt, affine)
    shape = (case.n, case.c_slow + case.c_lat, case.t_slow, case.h, case.w)
    grad_out = _rand(shape, dtype, fmt)
    ours = _lateral_grads(inputs, case, relu, grad_out, lambda *a: ops.lateral_concat(*a, backend="triton"))
    truth = _lateral_grads(
        _cast(inputs, torch.float64), case, relu, grad_out.double(), reference.lateral_concat
    )
    same = _lateral_grads(inputs, case, relu, grad_out, reference.lateral_concat)
    names = ["x_slow", "x_fast", "weight", "scale", "shift"]
    for name, a, t, s in zip(names, ours, truth, same, strict=False):
        assert_close(a, t, s, f"grad {name} {case} {dtype} {fmt}")
    assert ours[1].is_contiguous(memory_format=output_memory_format(inputs[1])), (
        "grad x_fast keeps x_fast's layout"
    )
    assert ours[2].is_contiguous(), "grad weight is contiguous"


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
def test_lateral_concat_backward_fp32(case, fmt):
    _lateral_backward_check(case, torch.float32, fmt, affine=True, relu=True)


# ReLU is left out in 16-bit: where a pre-activation rounds across zero the mask (a discontinuity)
# differs from the fp64 truth's, and no error bound holds there. fp32 covers the mask.
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lateral_concat_backward_16bit(dtype):
    _lateral_backward_check(CASES[0], dtype, CL, affine=True, relu=False)


def test_lateral_concat_backward_without_affine():
    _lateral_backward_check(CASES[1], torch.float64, CONTIG, affine=False, relu=True)


def test_lateral_concat_skips_unread_fast_frames():
    """With stride > k some fast frames fall between windows: NaN there must not reach the output
    or the gradients (the kernels never load them)."""
    case = CASES[1]
    inputs = case.tensors(torch.float32)
    read = {to * case.stride - case.pad + kt for to in range(case.t_slow) for kt in range(case.k)}
    unread = [t for t in range(case.t_fast) if t not in read]
    assert unread
    poisoned = inputs[1].clone()
    poisoned[:, :, unread] = float("nan")
    leaves = [t.detach().requires_grad_() for t in (inputs[0], poisoned, *inputs[2:])]
    out = ops.lateral_concat(*leaves[:3], case.stride, case.pad, *leaves[3:], True, backend="triton")
    expected = reference.lateral_concat(*inputs[:3], case.stride, case.pad, *inputs[3:], True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out, leaves, torch.randn_like(out))
    for g in grads:
        assert not g.isnan().any()
    assert (grads[1][:, :, unread] == 0).all()


def test_lateral_concat_noncontiguous_inputs():
    """Sliced / transposed inputs (H and W not mergeable) and an expanded all-ones grad_out."""
    case = CASES[0]
    x_slow, x_fast, weight, scale, shift = case.tensors(torch.float32)
    x_slow = x_slow.transpose(3, 4).contiguous().transpose(3, 4)
    x_fast = torch.cat((x_fast, x_fast), 1)[:, 1 : 1 + case.c_fast]
    weight = weight.transpose(0, 1).contiguous().transpose(0, 1)
    scale = torch.stack((scale, scale), 1)[:, 0]
    assert not (x_slow.is_contiguous() or x_fast.is_contiguous() or weight.is_contiguous())
    inputs = [t.detach().requires_grad_() for t in (x_slow, x_fast, weight, scale, shift)]
    out = ops.lateral_concat(*inputs[:3], case.stride, case.pad, *inputs[3:], True, backend="triton")
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref = reference.lateral_concat(*ref_inputs[:3], case.stride, case.pad, *ref_inputs[3:], True)
    torch.testing.assert_close(out, ref.float(), rtol=1e-5, atol=1e-5)
    assert out.is_contiguous()
    # sum() back-propagates an expanded tensor of ones (all strides 0).
    grads = torch.autograd.grad(out.sum(), inputs)
    ref_grads = torch.autograd.grad(ref.sum(), ref_inputs)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r.float(), rtol=1e-5, atol=1e-5)


def test_lateral_concat_mixed_layouts():
    """x_slow channels_last_3d with x_fast NCDHW: the output follows x_slow, grad x_fast follows x_fast."""
    case = CASES[0]
    x_slow, x_fast, weight, scale, shift = case.tensors(torch.float64, affine=True)
    x_slow = x_slow.contiguous(memory_format=CL)
    inputs = [t.requires_grad_() for t in (x_slow, x_fast, weight, scale, shift)]
    out = ops.lateral_concat(*inputs[:3], case.stride, case.pad, *inputs[3:], False, backend="triton")
    ref = reference.lateral_concat(*inputs[:3], case.stride, case.pad, *inputs[3:], False)
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous(memory_format=CL)
    grad_out = torch.randn_like(ref)
    grads = torch.autograd.grad(out, inputs, grad_out)
    for g, r in zip(grads, torch.autograd.grad(ref, inputs, grad_out), strict=True):
        torch.testing.assert_close(g, r)
    assert grads[1].is_contiguous()


# The tiled kernels' own paths, at R50-like geometry scaled down: pixel tiles flattened across frames
# (frames smaller than one tile, tails that are not a multiple of it), one flat K loop crossing taps,
# several channel tiles, and sizes where the launchers' aligned vector runs are longer than 1 (H*W and
# channel counts multiples of 16), in both layouts and every dtype.
TILE_CASES = [
    LateralCase(2, 5, 3, 18, 16, 5, 8, 2, 7, 7),  # 4x16-like: s > k, 7x7 frames, 2 lateral tiles
    LateralCase(2, 4, 20, 6, 12, 7, 4, 3, 5, 3),  # 8x8-like: s < k, pad 3, odd 5x3, 2 fast-channel tiles
    LateralCase(1, 16, 16, 32, 8, 3, 2, 1, 4, 4),  # aligned: vector runs of 16 pixels / channels
]
TILE_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("case", TILE_CASES, ids=repr)
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("dtype", TILE_DTYPES, ids=str)
def test_lateral_concat_tiles_forward(case, fmt, dtype):
    _lateral_forward_check(case, dtype, fmt, affine=True, relu=True)


@pytest.mark.parametrize("case", TILE_CASES, ids=repr)
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("dtype", TILE_DTYPES, ids=str)
def test_lateral_concat_tiles_backward(case, fmt, dtype):
    # ReLU only where the mask cannot flip under rounding (see test_lateral_concat_backward_16bit).
    relu = dtype in (torch.float32, torch.float64)
    _lateral_backward_check(case, dtype, fmt, affine=True, relu=relu)


# The GPU's own tiles (64-256 lateral channels, 64-128 pixels, 16-bit K steps doubled), which the
# interpreter's single small config never reaches: C_lat 200 crosses a 128- and fills most of a
# 256-wide tile, C_fast 40 gives 64-deep K steps in 16-bit, 7x5 frames a pixel tile spanning frames.
GPU_TILE_CASE = LateralCase(2, 3, 40, 200, 9, 3, 4, 1, 7, 5)


@pytest.mark.skipif(not _common.INTERPRET, reason="the autotuner picks among these on a GPU")
@pytest.mark.parametrize("config", range(3))
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_lateral_concat_forward_gpu_configs(config, fmt, dtype, monkeypatch):
    import importlib

    module = importlib.import_module("slowfast_fast.triton.lateral_concat")
    assert len(module.GPU_CONFIGS) == 3
    kernel = module._lateral_concat_kernel
    monkeypatch.setattr(kernel, "configs", [module.GPU_CONFIGS[config]])
    _lateral_forward_check(GPU_TILE_CASE, dtype, fmt, affine=True, relu=True)


@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("c_fast,k", [(6, 3), (1, 5), (4, 1)])
def test_lateral_concat_forward_reads_the_weight_in_either_k_order(fmt, c_fast, k):
    """NCDHW x_fast runs K in the weight's own (c, kt) order straight from it; channels_last_3d in
    (kt, c) order from a reordered copy; single-channel and single-tap weights are both orders. A
    weight whose reshape is a strided view is made dense first."""
    import importlib

    case = LateralCase(2, 3, c_fast, 5, 8, k, 2, k // 2, 3, 4)
    _lateral_forward_check(case, torch.float32, fmt, affine=False, relu=False)
    x_slow, x_fast, weight, _, _ = case.tensors(torch.float32, fmt, affine=False)
    module = importlib.import_module("slowfast_fast.triton.lateral_concat")
    assert module._weight_rows(weight, tap_fastest=True).data_ptr() == weight.data_ptr()  # no copy
    strided = torch.randn(weight.shape[:3] + (2, 1)).to(weight)[..., :1, :]  # not contiguous
    strided.copy_(weight)
    out = ops.lateral_concat(x_slow, x_fast, strided, case.stride, case.pad, backend="triton")
    torch.testing.assert_close(
        out,
        ops.lateral_concat(x_slow, x_fast, weight, case.stride, case.pad, backend="triton"),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
def test_lateral_concat_64bit_offsets(fmt, monkeypatch):
    """The kernels' int64 offset path (tensors past 2^31 elements), forced at a small shape."""
    import importlib

    import triton.language as tl

    for name in ("lateral_concat", "lateral_concat_backward"):
        module = importlib.import_module(f"slowfast_fast.triton.{name}")
        monkeypatch.setattr(module, "index_type", lambda *tensors: tl.int64)
    case = TILE_CASES[1]
    _lateral_forward_check(case, torch.float32, fmt, affine=True, relu=True)
    _lateral_backward_check(case, torch.float32, fmt, affine=True, relu=True)


def test_index_type_widens_past_32_bits():
    import triton.language as tl

    small = torch.empty((2, 3, 4, 5, 6), device="meta")
    big = torch.empty((8, 256, 32, 512, 512), device="meta")  # 2^31 elements
    assert _common.index_type(small) == tl.int32
    assert _common.index_type(small, big) == tl.int64
    assert _common.index_type(big[:, :1]) == tl.int64  # a view of it reaches as far
    assert _common.index_type(torch.empty((8, 16, 32, 512, 512), device="meta")) == tl.int32


def _offsets(t: torch.Tensor) -> torch.Tensor:
    """Each element's offset from ``t``'s first, shaped like ``t``."""
    index = torch.zeros((), dtype=torch.long)
    for dim, (size, stride) in enumerate(zip(t.shape, t.stride(), strict=True)):
        shape = [1] * t.dim()
        shape[dim] = size
        index = index + (torch.arange(size) * stride).view(shape)
    return index


@pytest.mark.parametrize(
    "shape,fmt,channels",
    [
        ((2, 3, 4, 4, 4), CONTIG, (3,)),  # 16 pixels: runs of 16 along pixels
        ((2, 3, 4, 7, 2), CONTIG, (3,)),  # 14 pixels: runs of 2
        ((2, 3, 4, 7, 7), CONTIG, (3,)),  # 49 pixels: no runs
        ((2, 32, 3, 5, 3), CL, (32,)),  # 32 channels: runs of 16 along channels
        ((2, 24, 3, 5, 3), CL, (16, 8)),  # a tile boundary at channel 16 and 8 more: runs of 8
        ((2, 12, 3, 5, 3), CL, (12,)),  # runs of 4
    ],
)
def test_vector_runs_are_aligned_and_contiguous(shape, fmt, channels):
    """What the kernels promise the compiler (tl.multiple_of / tl.max_contiguous) must hold: every run of
    ``r`` elements that starts at a multiple of ``r`` (pixels of one frame, or channels from an offset
    in ``channels``) is contiguous in memory and starts at an offset divisible by ``r``. A wrong run
    would make misaligned vector loads on a GPU."""
    t = torch.empty(shape).contiguous(memory_format=fmt)
    merged, strides = _common.spatial_strides(t)
    n, c, frames, h, w = shape
    run_m, run_c = _common.vector_runs(strides, h * w, channels)
    assert (run_m > 1) != (run_c > 1) or run_m == run_c == 1
    offsets = _offsets(merged).reshape(n, c, frames, h * w)
    if run_m > 1:
        assert (h * w) % run_m == 0
        groups = offsets.reshape(n, c, frames, h * w // run_m, run_m)
    else:
        assert all(ch % run_c == 0 for ch in channels) and c % run_c == 0
        groups = offsets.movedim(1, -1).reshape(n, frames, h * w, c // run_c, run_c)
    run = max(run_m, run_c)
    assert (groups[..., 0] % run == 0).all()
    assert (groups.diff(dim=-1) == 1).all()
    expected = {(4, 4): 16, (7, 2): 2, (7, 7): 1}.get((h, w)) if fmt == CONTIG else {32: 16, 24: 8, 12: 4}[c]
    assert run == expected


def test_grad_input_with_mixed_gradient_and_output_layouts():
    """grad_out in channels_last_3d, the forward output (ReLU mask) in NCDHW: the kernels read both at
    one set of offsets, so the launcher lays them out alike first."""
    case = TILE_CASES[0]
    x_slow, x_fast, weight, scale, shift = case.tensors(torch.float64)
    out = reference.lateral_concat(x_slow, x_fast, weight, case.stride, case.pad, scale, shift, True)
    grad_out = torch.randn_like(out).contiguous(memory_format=CL)
    args = (grad_out, x_fast, weight, scale, out, case.stride, case.pad)
    w = weight.detach().requires_grad_()
    x = x_fast.detach().requires_grad_()
    ref = reference.lateral_concat(x_slow, x, w, case.stride, case.pad, scale, shift, True)
    expected = torch.autograd.grad(ref, (x, w), grad_out)
    torch.testing.assert_close(TRITON_OPS.lateral_concat_grad_input(*args), expected[0])
    torch.testing.assert_close(TRITON_OPS.lateral_concat_grad_weight(*args)[0], expected[1])


def test_grad_weight_reduction_over_many_splits():
    """The split-M reduction: more pixels than one split takes, partials added in the second kernel."""
    case = LateralCase(3, 2, 3, 4, 10, 3, 2, 1, 4, 9)
    x_slow, x_fast, weight, scale, _ = case.tensors(torch.float64)
    grad_out = _rand((case.n, case.c_slow + case.c_lat, case.t_slow, case.h, case.w), torch.float64)
    grad_w, grad_scale, grad_shift = TRITON_OPS.lateral_concat_grad_weight(
        grad_out, x_fast, weight, scale, None, case.stride, case.pad
    )
    g = grad_out[:, case.c_slow :]
    # G[o, c, kt] as the weight gradient of the unscaled conv.
    w = weight.detach().requires_grad_()
    conv = F.conv3d(x_fast, w, stride=(case.stride, 1, 1), padding=(case.pad, 0, 0))
    (big_g,) = torch.autograd.grad(conv, w, g)
    torch.testing.assert_close(grad_w, big_g * scale.view(-1, 1, 1, 1, 1))
    torch.testing.assert_close(grad_scale, (big_g * weight).sum((1, 2, 3, 4)))
    torch.testing.assert_close(grad_shift, g.sum((0, 2, 3, 4)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_grad_weight_atomic_adds_match_ordered_partials(dtype, monkeypatch):
    """By default the splits add into one slab with atomics; under deterministic algorithms each
    writes its own partial and the reduce kernel adds them in order. Both, over many splits, give
    the same gradients up to the order of fp32 (fp64) additions."""
    import importlib

    bwd = importlib.import_module("slowfast_fast.triton.lateral_concat_backward")
    monkeypatch.setattr(bwd, "num_sms", lambda device: 64)
    monkeypatch.setattr(bwd, "DETERMINISTIC_SMS", 64)
    case = LateralCase(2, 2, 3, 5, 12, 3, 2, 1, 5, 7)
    assert bwd.weight_splits(case.n, case.t_slow, case.h * case.w, case.c_lat, case.k, case.c_fast, 64)[2] > 4
    x_slow, x_fast, weight, scale, _ = case.tensors(dtype)
    grad_out = _rand((case.n, case.c_slow + case.c_lat, case.t_slow, case.h, case.w), dtype)
    args = (grad_out, x_fast, weight, scale, None, case.stride, case.pad)
    atomic = TRITON_OPS.lateral_concat_grad_weight(*args)
    with _deterministic_algorithms():
        ordered = TRITON_OPS.lateral_concat_grad_weight(*args)
    eps = torch.finfo(dtype).eps
    for a, b in zip(atomic, ordered, strict=True):
        # Sums of 2*6*35 products of unit normals (scaled): a few hundred ulps of the largest term.
        torch.testing.assert_close(a, b, rtol=256 * eps, atol=256 * eps * b.abs().max().item())
    grads = []
    for t in (torch.float64, dtype):  # the truth, and PyTorch's own result in the same dtype
        w = weight.detach().to(t).requires_grad_()
        ref = reference.lateral_concat(*_cast((x_slow, x_fast), t), w, case.stride, case.pad, scale.to(t))
        grads.append(torch.autograd.grad(ref, w, grad_out.to(t))[0])
    assert_close(atomic[0], *grads, "atomic grad_weight")


@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("affine,relu", [(True, True), (False, False)])
def test_fused_backward_gives_each_gradient_asked_for(fmt, affine, relu):
    """``lateral_concat_backward`` (both gradients in one call, what autograd runs) against the
    reference, for each combination of the results asked for: one not asked for is a 0-element
    tensor, and the ones asked for do not depend on what else was."""
    case = TILE_CASES[1]
    x_slow, x_fast, weight, scale, shift = case.tensors(torch.float64, fmt, affine)
    leaves = [None if t is None else t.detach().requires_grad_() for t in (x_fast, weight, scale, shift)]
    ref = reference.lateral_concat(x_slow, *leaves[:2], case.stride, case.pad, *leaves[2:], relu)
    grad_out = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, [t for t in leaves if t is not None], grad_out)
    if not affine:  # grad_scale is sum_k W * G and grad_shift sum g, whether or not the forward had them
        g = grad_out[:, case.c_slow :]
        expected = (*expected, (expected[1] * weight).sum((1, 2, 3, 4)), g.sum((0, 2, 3, 4)))
    out = ref.detach() if relu else None
    for need_input in (True, False):
        for need_weight in (True, False):
            got = TRITON_OPS.lateral_concat_backward(
                grad_out, x_fast, weight, scale, out, case.stride, case.pad, need_input, need_weight
            )
            assert len(got) == 4
            for result, truth, needed in zip(got, expected, (need_input, *[need_weight] * 3), strict=True):
                if needed:
                    torch.testing.assert_close(result, truth)
                else:
                    assert result.shape == (0,) and result.device == truth.device
            if need_input:
                assert got[0].is_contiguous(memory_format=fmt)


@pytest.mark.parametrize(
    "dtype,deterministic",
    [(torch.float32, False), (torch.bfloat16, False), (torch.float32, True)],
    ids=["fp32", "bf16", "fp32-deterministic"],
)
def test_autograd_backward_launches_and_no_torch_kernels(dtype, deterministic, monkeypatch):
    """The backward of ``lateral_concat`` (both gradients, folded BN, ReLU) is one call of the fused op
    and one launch: the grad_input + grad_weight kernel, which reads the weight as stored and applies
    the scale itself, and whose splits add into a zero-at-rest fp32 workspace that the last split per
    tile rounds into the results; plus the reduce kernel only for the ordered partials of deterministic
    mode. No PyTorch kernel runs besides allocations and views (the workspace is zeroed once, when it
    is first allocated: the warm-up call). It used to be 5 launches (weight reorder, grad_input, slab
    zeroing, partials, reduce), then 2 (a prep kernel for the weight operand and the zeros)."""
    import importlib

    import triton
    from torch.utils._python_dispatch import TorchDispatchMode

    kernels = ["_backward_kernel"] + ["_grad_weight_reduce_kernel"] * deterministic

    bwd = importlib.import_module("slowfast_fast.triton.lateral_concat_backward")
    launches = []
    for name in ("_backward_kernel", "_grad_weight_reduce_kernel"):
        kernel = getattr(bwd, name)
        if isinstance(kernel, triton.runtime.Autotuner):
            kernel = kernel.fn  # the jitted function under it: tuned and pinned launches alike

        def counted(*args, _run=kernel.run, _name=name, **kwargs):
            launches.append(_name)
            return _run(*args, **kwargs)

        monkeypatch.setattr(kernel, "run", counted)

    allocations = {
        "empty",
        "empty_like",
        "new_empty",
        "empty_strided",
        "view",
        "slice",
        "as_strided",
        "detach",
    }
    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    case = TILE_CASES[0]
    x_slow, x_fast, weight, scale, shift = case.tensors(dtype)
    leaves = [t.requires_grad_() for t in (x_fast, weight, scale, shift)]
    relu = dtype == torch.float32  # see test_lateral_concat_backward_16bit
    out = ops.lateral_concat(x_slow, *leaves[:2], case.stride, case.pad, *leaves[2:], relu, backend="triton")
    grad_out = torch.randn_like(out)
    with _deterministic_algorithms(deterministic):
        torch.autograd.grad(out, leaves, grad_out, retain_graph=True)  # allocates the workspace
        launches.clear()
        with Log():
            grads = torch.autograd.grad(out, leaves, grad_out)
    assert launches == kernels
    # The design model (benchmarks/gpu_design_model.py) charges the Triton backward these launches.
    import importlib.util
    import pathlib
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_design_model.py"
    spec = importlib.util.spec_from_file_location("gpu_design_model", script)
    model = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    if not hasattr(model, "BACKWARD_TRITON"):
        spec.loader.exec_module(model)
    if not deterministic:
        assert model.BACKWARD_TRITON["launches"] == len(kernels)
    others = [op for op in seen if op not in allocations and op != "lateral_concat_backward"]
    assert "lateral_concat_backward" in seen and not others, others
    names = ["x_fast", "weight", "scale", "shift"]
    for name, got, truth, same in zip(
        names,
        grads,
        _lateral_grads(
            _cast((x_slow, *leaves), torch.float64), case, relu, grad_out.double(), reference.lateral_concat
        )[1:],
        _lateral_grads((x_slow, *leaves), case, relu, grad_out, reference.lateral_concat)[1:],
        strict=True,
    ):
        assert_close(got, truth, same, f"grad {name} {dtype}")


@pytest.mark.skipif(not _common.INTERPRET, reason="times real configs on a GPU; this one fakes the timing")
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_autotuning_reruns_leave_grad_weight_unchanged(dtype, monkeypatch):
    """Timing a config runs the backward kernel several times, and its grad_weight splits add with
    atomics into a workspace (fp64 here, fp32 for 16-bit types) that nothing zeroes between the runs:
    each launch must leave it zero again (the last reader of each part writes its zeros back), or the
    first call of each new shape returns a multiple of the gradient. Two configs (grad_weight tiles 16
    and 32 wide) with a fake timer that runs each config three times stand for the GPU's autotuning;
    the result must be the untimed call's, bit for bit (the interpreter runs the programs, and their
    atomics, in order), and the workspace zero afterwards."""
    import importlib

    import triton

    bwd = importlib.import_module("slowfast_fast.triton.lateral_concat_backward")
    kernel = bwd._backward_kernel
    case = TILE_CASES[1]
    x_slow, x_fast, weight, scale, _ = case.tensors(dtype)
    grad_out = _rand((case.n, case.c_slow + case.c_lat, case.t_slow, case.h, case.w), dtype)
    args = (grad_out, x_fast, weight, scale, None, case.stride, case.pad)
    untimed = TRITON_OPS.lateral_concat_grad_weight(*args)

    base = bwd._BACKWARD_CONFIGS[0]
    configs = [base, triton.Config({**base.kwargs, "BLOCK_W_C": 32}, num_warps=base.num_warps)]
    runs = []

    def timed_three_times(kernel_call, quantiles):
        for _ in range(3):
            kernel_call()
            runs.append(1)
        return [float(len(runs))] * 3  # the first config timed is the fastest

    monkeypatch.setattr(kernel, "configs", configs)
    monkeypatch.setattr(kernel, "cache", {})
    monkeypatch.setattr(kernel, "cache_results", False)
    # do_bench is a cached property: the instance's own entry, removed again after the test.
    monkeypatch.setitem(kernel.__dict__, "do_bench", timed_three_times)
    timed = TRITON_OPS.lateral_concat_grad_weight(*args)
    assert len(runs) == 6, "both configs were timed"
    for a, b in zip(timed, untimed, strict=True):
        assert torch.equal(a, b)
    _assert_workspaces_zero(bwd)


def _assert_workspaces_zero(bwd):
    assert bwd._WORKSPACES, "the atomic path used a workspace"
    for key, buffer in bwd._WORKSPACES.items():
        assert buffer.count_nonzero().item() == 0, f"workspace {key} not zero at rest"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_grad_weight_workspace_is_zero_between_launches(dtype, monkeypatch):
    """The atomic grad_weight path needs no zeroing launch because its workspace (the fp32 slab, the
    grad_scale and grad_shift sums, the arrival counters) is zero whenever no backward runs. Shapes
    that need more, then less, then more again than the buffer holds (so it grows, and a smaller call
    uses a prefix that a bigger one dirtied), with many splits and, in the last, 2 x 2 channel tiles
    (both counter levels, several lateral-channel tiles): every call matches the ordered
    (deterministic) reduction, a repeated call is bit-identical, and the workspace is all zeros after
    each call."""
    import importlib

    bwd = importlib.import_module("slowfast_fast.triton.lateral_concat_backward")
    monkeypatch.setattr(bwd, "_WORKSPACES", {})
    monkeypatch.setattr(bwd, "num_sms", lambda device: 64)
    monkeypatch.setattr(bwd, "DETERMINISTIC_SMS", 64)
    cases = [
        LateralCase(2, 2, 3, 5, 12, 3, 2, 1, 5, 7),
        LateralCase(2, 3, 4, 9, 40, 5, 2, 2, 3, 5),
        LateralCase(1, 2, 3, 5, 12, 3, 2, 1, 5, 7),
        LateralCase(3, 3, 20, 18, 33, 3, 4, 1, 4, 6),  # 2 x 2 channel tiles of 16 (the interpreter's)
    ]
    sizes = []
    for case in cases:
        x_slow, x_fast, weight, scale, _ = case.tensors(dtype)
        grad_out = _rand((case.n, case.c_slow + case.c_lat, case.t_slow, case.h, case.w), dtype)
        args = (grad_out, x_fast, weight, scale, None, case.stride, case.pad, True, True)
        first = TRITON_OPS.lateral_concat_backward(*args)
        _assert_workspaces_zero(bwd)
        again = TRITON_OPS.lateral_concat_backward(*args)
        _assert_workspaces_zero(bwd)
        for a, b in zip(first, again, strict=True):
            assert torch.equal(a, b)
        with _deterministic_algorithms():
            ordered = TRITON_OPS.lateral_concat_backward(*args)
        torch.testing.assert_close(first[0], ordered[0])  # grad_input: the same sums (its tile may differ)
        # grad_weight & co: fp32 sums of a few hundred products in another order (a few hundred fp32
        # ulps of the largest), then rounded once to the dtype (1 ulp: allow 2).
        tol = max(2 * torch.finfo(dtype).eps, 256 * torch.finfo(torch.float32).eps)
        for a, b in zip(first[1:], ordered[1:], strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max().item())
        sizes.append(max(buffer.numel() for buffer in bwd._WORKSPACES.values()))
    assert sizes[1] > sizes[0] and sizes[3] > sizes[1], f"the workspace grew: {sizes}"


def test_lateral_concat_empty_batch():
    case = CASES[0]
    x_slow, x_fast, weight, scale, shift = case.tensors(torch.float32)
    x_slow, x_fast = x_slow[:0], x_fast[:0]
    out = TRITON_OPS.lateral_concat(x_slow, x_fast, weight, case.stride, case.pad, scale, shift, True)
    assert out.shape == (0, case.c_slow + case.c_lat, case.t_slow, case.h, case.w)
    grad_out = torch.empty_like(out)
    grad_x = TRITON_OPS.lateral_concat_grad_input(grad_out, x_fast, weight, scale, out, case.stride, case.pad)
    assert grad_x.shape == x_fast.shape
    grads = TRITON_OPS.lateral_concat_grad_weight(grad_out, x_fast, weight, scale, out, case.stride, case.pad)
    for g, like in zip(grads, (weight, scale, shift), strict=True):
        assert g.shape == like.shape and (g == 0).all()


def test_dot_precision_follows_cudnn_tf32_flag():
    previous = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert _common.dot_precision(torch.float32) == "tf32"
        torch.backends.cudnn.allow_tf32 = False
        assert _common.dot_precision(torch.float32) == "ieee"
    finally:
        torch.backends.cudnn.allow_tf32 = previous
    assert _common.dot_precision(torch.float64) == "ieee"


# Odd rates where float32 rounding of 1/scale decides the source frame, upsampling, and identity.
RATES = [(13, 1 / 3), (7, 1 / 7), (10, 0.7), (21, 1 / 3), (11, 2.5), (32, 1 / 8), (9, 1.0)]


@pytest.mark.parametrize("t_in,scale_factor", RATES)
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
def test_temporal_resample_bit_exact(t_in, scale_factor, fmt):
    x = _rand((2, 3, t_in, 3, 5), torch.float32, fmt)
    out = TRITON_OPS.temporal_resample(x, scale_factor)
    assert torch.equal(out, F.interpolate(x, mode="nearest", scale_factor=(scale_factor, 1, 1)))
    assert out.is_contiguous(memory_format=fmt)
    assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_temporal_resample_16bit_and_noncontiguous(dtype):
    x = _rand((2, 6, 10, 4, 5), dtype)[:, ::2, :, 1:, ::2]
    assert not x.is_contiguous()
    out = ops.temporal_resample(x, 1 / 3, backend="triton")
    assert torch.equal(out, reference.temporal_resample(x, 1 / 3))
    assert out.is_contiguous()


@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pathway_split_matches_two_resamples(fmt, dtype):
    x = _rand((2, 3, 16, 3, 3), dtype, fmt)
    slow, fast = ops.pathway_split(x, 1 / 8, 1 / 2, backend="triton")
    assert torch.equal(slow, reference.temporal_resample(x, 1 / 8))
    assert torch.equal(fast, reference.temporal_resample(x, 1 / 2))
    assert slow.is_contiguous(memory_format=fmt) and fast.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize(
    "t_in,scales",
    [(32, (1 / 8,)), (32, (1 / 4, 1.0)), (13, (1 / 3, 0.5)), (11, (2.5,)), (21, (1 / 4, 1 / 3))],
)
def test_resample_programs_cover_only_the_frames_read(t_in, scales):
    """The forward's grid runs over the compacted table of source frames some output reads: each
    such frame once, ascending, with its runs for both outputs, and no other frame."""
    from slowfast_fast.triton import resample as res

    device = torch.device(_device())
    table = res._read_table(t_in, scales, device).cpu()
    sources = [reference.source_frame_indices(t_in, s).tolist() for s in scales]
    read = sorted(set().union(*sources))
    assert table[:, 0].tolist() == read
    for row in table.tolist():
        for (first, count), src in zip((row[1:3], row[3:5]), sources + [[]], strict=False):
            assert [d for d, t in enumerate(src) if t == row[0]] == list(range(first, first + count))
    grid, tiles = res.frame_grid(2, table.shape[0], 3, 25, *res._tile(3, 25))
    assert grid == (2 * len(read) * tiles,)


@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
def test_resample_never_reads_unused_frames(fmt):
    """NaN in the frames a 1/4 downsampling skips must not reach the output: they are never loaded."""
    x = _rand((2, 3, 16, 3, 5), torch.float32, fmt)
    unread = [t for t in range(16) if t % 4]
    x[:, :, unread] = float("nan")
    out = TRITON_OPS.temporal_resample(x, 1 / 4)
    assert torch.equal(out, F.interpolate(x, mode="nearest", scale_factor=(1 / 4, 1, 1)))
    assert not out.isnan().any()


@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_resample_16bit_frames_over_several_tiles(fmt, dtype):
    """3 x 40 x 40 frames are 4800 values: two 8 KiB tiles of 16-bit values (a partial second one)."""
    x = _rand((2, 3, 9, 40, 40), dtype, fmt)
    slow, fast = TRITON_OPS.pathway_split(x, 1 / 3, 0.5)
    assert torch.equal(slow, reference.temporal_resample(x, 1 / 3))
    assert torch.equal(fast, reference.temporal_resample(x, 0.5))
    grad = TRITON_OPS.temporal_resample_backward(fast, 9, 0.5)
    x64 = x.double().requires_grad_()
    (truth,) = torch.autograd.grad(reference.temporal_resample(x64, 0.5), x64, fast.double())
    assert torch.equal(grad.double(), truth)  # each frame's gradient is one copied frame or zeros


def _resample_grad_bound(grad_out, t_in, scale_factor, dtype):
    """Per-element bound for a gradient summed in fp32 then rounded once: |sum of |terms|| * eps."""
    x = torch.zeros((*grad_out.shape[:2], t_in, *grad_out.shape[3:]), dtype=torch.float64, requires_grad=True)
    (abs_sum,) = torch.autograd.grad(reference.temporal_resample(x, scale_factor), x, grad_out.double().abs())
    return abs_sum * torch.finfo(dtype).eps


@pytest.mark.parametrize("t_in,scale_factor", [(13, 1 / 3), (11, 2.5), (10, 0.7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_temporal_resample_backward(t_in, scale_factor, dtype):
    x = _rand((2, 3, t_in, 2, 3), dtype, CL).requires_grad_()
    out = ops.temporal_resample(x, scale_factor, backend="triton")
    grad_out = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    x64 = x.detach().double().requires_grad_()
    (truth,) = torch.autograd.grad(reference.temporal_resample(x64, scale_factor), x64, grad_out.double())
    assert grad.dtype == dtype and grad.is_contiguous(memory_format=CL)
    assert ((grad.double() - truth).abs() <= _resample_grad_bound(grad_out, t_in, scale_factor, dtype)).all()
    # Frames no output frame was taken from get exactly zero.
    used = reference.source_frame_indices(t_in, scale_factor).unique()
    unused = [t for t in range(t_in) if t not in used]
    assert (grad[:, :, unused] == 0).all()


def test_pathway_split_backward():
    x = _rand((1, 2, 12, 3, 2), torch.float64).requires_grad_()
    slow, fast = ops.pathway_split(x, 1 / 4, 1 / 2, backend="triton")
    g_slow, g_fast = torch.randn_like(slow), torch.randn_like(fast)
    (grad,) = torch.autograd.grad((slow, fast), x, (g_slow, g_fast))
    (truth,) = torch.autograd.grad(reference.pathway_split(x, 1 / 4, 1 / 2), x, (g_slow, g_fast))
    torch.testing.assert_close(grad, truth, rtol=0, atol=1e-15)


def test_resample_empty_batch():
    x = _rand((0, 3, 8, 2, 2), torch.float32)
    assert TRITON_OPS.temporal_resample(x, 0.5).shape == (0, 3, 4, 2, 2)
    slow, fast = TRITON_OPS.pathway_split(x, 0.25, 0.5)
    assert slow.shape == (0, 3, 2, 2, 2) and fast.shape == (0, 3, 4, 2, 2)
    assert TRITON_OPS.temporal_resample_backward(fast, 8, 0.5).shape == x.shape


def test_opcheck_lateral_concat():
    case = LateralCase(1, 2, 3, 4, 4, 2, 2, 1, 2, 3)
    x_slow, x_fast, weight, scale, shift = case.tensors(torch.float32)
    args = (
        x_slow,
        x_fast.requires_grad_(),
        weight.requires_grad_(),
        case.stride,
        case.pad,
        scale,
        shift,
        True,
    )
    torch.library.opcheck(TRITON_OPS.lateral_concat.default, args)
    grad_out = _rand((case.n, case.c_slow + case.c_lat, case.t_slow, case.h, case.w), torch.float32)
    for need in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(
            TRITON_OPS.lateral_concat_backward.default,
            (grad_out, x_fast.detach(), weight.detach(), scale, None, case.stride, case.pad, *need),
        )


def test_opcheck_resample_ops():
    x = _rand((1, 2, 9, 2, 3), torch.float32, CL).requires_grad_()
    torch.library.opcheck(TRITON_OPS.temporal_resample.default, (x, 1 / 3))
    torch.library.opcheck(TRITON_OPS.pathway_split.default, (x, 1 / 3, 2 / 3))
    torch.library.opcheck(
        TRITON_OPS.temporal_resample_backward.default, (_rand((1, 2, 3, 2, 3), torch.float32), 9, 1 / 3)
    )


# --- GPU, realistic shapes -------------------------------------------------------------------------

# (name, x_slow channels, lateral case): stage-1 laterals of SlowFast R50 4x16 and 8x8 at 56x56, N=2.
GPU_CASES = [
    ("4x16_layer1", LateralCase(2, 256, 32, 64, 32, 5, 8, 2, 56, 56)),
    ("8x8_layer1", LateralCase(2, 256, 32, 64, 32, 7, 4, 3, 56, 56)),
    ("4x16_conv1", LateralCase(2, 64, 8, 16, 32, 5, 8, 2, 56, 56)),
]


# The GPU smoke run (benchmarks/gpu_check.sh: -m "cuda and not slow") keeps one realistic case per
# test: each new shape and variant costs Triton JIT compiles (seconds each) the 6-minute slot lacks.
SMOKE_CASES = [
    pytest.param(name, case, id=name, marks=() if i == 0 else pytest.mark.slow)
    for i, (name, case) in enumerate(GPU_CASES)
]


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.parametrize("name,case", GPU_CASES, ids=[n for n, _ in GPU_CASES])
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
def test_cuda_lateral_concat_fp32(name, case, fmt, no_tf32):
    _lateral_forward_check(case, torch.float32, fmt, affine=True, relu=True)
    _lateral_backward_check(case, torch.float32, fmt, affine=True, relu=True)


@pytest.mark.cuda
@pytest.mark.parametrize("name,case", SMOKE_CASES)
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
def test_cuda_lateral_concat_bf16(name, case, fmt):
    _lateral_forward_check(case, torch.bfloat16, fmt, affine=True, relu=True)
    _lateral_backward_check(case, torch.bfloat16, fmt, affine=True, relu=False)


@pytest.mark.cuda
def test_cuda_bf16_grad_weight_last_arrivals_see_every_split():
    """On the GPU the grad_weight splits run concurrently, and the last to arrive at a tile rounds the
    fp32 workspace (acq_rel arrival counters) and zeroes it again: a split whose adds it missed, or a
    zeroing that raced with an add, would show as an error far beyond bf16 rounding in this or a later
    attempt. Repeated, since a race need not show every time (the interpreter runs the programs one at
    a time, so only here is the ordering exercised)."""
    name, case = GPU_CASES[0]
    x_slow, x_fast, weight, scale, shift = case.tensors(torch.bfloat16, CONTIG)
    shape = (case.n, case.c_slow + case.c_lat, case.t_slow, case.h, case.w)
    grad_out = _rand(shape, torch.bfloat16)
    args = (grad_out, x_fast, weight, scale, None, case.stride, case.pad)
    truth = _lateral_grads(_cast((x_slow, x_fast, weight, scale, shift), torch.float64), case, False,
                           grad_out.double(), reference.lateral_concat)  # fmt: skip
    same = _lateral_grads(
        (x_slow, x_fast, weight, scale, shift), case, False, grad_out, reference.lateral_concat
    )
    for attempt in range(8):
        grads = TRITON_OPS.lateral_concat_grad_weight(*args)
        for got, t, s, what in zip(grads, truth[2:], same[2:], ("weight", "scale", "shift"), strict=True):
            assert_close(got, t, s, f"grad {what}, attempt {attempt}")


@pytest.mark.cuda
def test_cuda_backward_on_two_streams_at_once():
    """grad_weight's atomic workspace is kept per stream, because kernels of two streams may run at
    once: grad_weight calls (only the splits, so that the two kernels' splits overlap) queued on two
    streams together, four rounds, each give what the same call gives alone (within one bf16 rounding,
    since the atomic order differs), and every workspace is zero once they are done. Reuses the bf16
    smoke test's compiled kernel (same case, layout and epilogue; which roles run is not compiled in)."""
    import importlib

    bwd = importlib.import_module("slowfast_fast.triton.lateral_concat_backward")
    _, case = GPU_CASES[0]
    _, x_fast, weight, scale, _ = case.tensors(torch.bfloat16, CONTIG)
    shape = (case.n, case.c_slow + case.c_lat, case.t_slow, case.h, case.w)
    grads_out = [_rand(shape, torch.bfloat16) for _ in range(2)]

    def backward(grad_out):
        return TRITON_OPS.lateral_concat_grad_weight(
            grad_out, x_fast, weight, scale, None, case.stride, case.pad
        )

    alone = [backward(g) for g in grads_out]
    streams = [torch.cuda.Stream() for _ in grads_out]
    for stream in streams:
        stream.wait_stream(torch.cuda.current_stream())
    together = []
    for _ in range(4):
        for i, stream in enumerate(streams):
            with torch.cuda.stream(stream):
                together.append((i, backward(grads_out[i])))
    torch.cuda.synchronize()
    for i, got in together:
        for a, b in zip(got, alone[i], strict=True):
            tol = 2 * torch.finfo(torch.bfloat16).eps
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max().item())
    _assert_workspaces_zero(bwd)


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_lateral_concat_tf32_like_cudnn():
    """With TF32 allowed both the kernel and cuDNN multiply fp32 inputs as TF32: same error class.
    Factor 4, not 2: the tensor cores may truncate the dropped mantissa bits where cuDNN rounds them,
    up to twice the error per product."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        _lateral_forward_check(GPU_CASES[0][1], torch.float32, CL, affine=True, relu=False, factor=4)
    finally:
        torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.cuda
@pytest.mark.parametrize("fmt", [CONTIG, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_pathway_split_and_backward(fmt, dtype):
    x = _rand((8, 3, 32, 224, 224), dtype, fmt).requires_grad_()
    for slow_scale, fast_scale in ((1 / 8, 1 / 2), (1 / 4, 1 / 3)):
        slow, fast = ops.pathway_split(x, slow_scale, fast_scale, backend="triton")
        assert torch.equal(slow, F.interpolate(x, mode="nearest", scale_factor=(slow_scale, 1, 1)))
        assert torch.equal(fast, F.interpolate(x, mode="nearest", scale_factor=(fast_scale, 1, 1)))
        assert slow.is_contiguous(memory_format=fmt) and fast.is_contiguous(memory_format=fmt)
    out = ops.temporal_resample(x, 2.5, backend="triton")
    grad_out = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    x64 = x.detach().double().requires_grad_()
    (truth,) = torch.autograd.grad(reference.temporal_resample(x64, 2.5), x64, grad_out.double())
    assert ((grad.double() - truth).abs() <= _resample_grad_bound(grad_out, 32, 2.5, dtype)).all()


# Compiling every kernel for sm_90 without a GPU (specializations, spills, registers, shared memory):
# tests/test_triton_sm90_static.py.


def test_host_cdiv_and_next_power_of_2_match_tritons():
    """The launchers' host arithmetic (plain Python, no JIT front end per call) gives what
    ``triton.cdiv`` and ``triton.next_power_of_2`` give, on every value the launchers can pass."""
    import triton

    for n in range(0, 4100):
        assert _common.next_power_of_2(n) == triton.next_power_of_2(n), n
    for a in [*range(0, 70), 4095, 4096, 4097, 10**9 + 7]:
        for b in (1, 2, 3, 16, 31, 32, 64, 128, 4096):
            assert _common.cdiv(a, b) == triton.cdiv(a, b), (a, b)


def test_host_overhead_script_stubs_every_kernel_and_reports_each_launcher():
    """benchmarks/host_overhead.py times the launchers with every Triton kernel stubbed out: it must
    find them all (a kernel it missed would run in the interpreter and be timed as host work) and
    print a row per launcher. One round of one call: a smoke run, not a timing."""
    import os
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "host_overhead.py"
    done = subprocess.run(
        [sys.executable, str(script), "--rounds", "1", "--calls", "1"],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stubbed = done.stdout.splitlines()[0]
    for kernel in (
        "_lateral_concat_kernel",
        "_backward_kernel",
        "_grad_weight_reduce_kernel",
        "_gather_frames_kernel",
    ):
        assert kernel in stubbed, stubbed
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "µs" not in line]
    # Three launchers, the public lateral op with and without autograd, the public pathway split.
    assert len(rows) == 6, done.stdout
