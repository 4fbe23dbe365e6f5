"""The compiled C++ CPU kernels (csrc/cpu/) against the pure-PyTorch reference.

Called both through the public API with ``backend="cpu"`` and through ``torch.ops.slowfast_fast``
directly. Inputs are random normals (never zeros); shapes are odd on purpose.

Tolerances:
* fp32 compares with the reference at rtol = atol = 1e-5: the forward sums at most k*C_fast = 49
  products of O(1) terms in fp32 (eps 1.2e-7), only in another order, so results differ by ~1e-6.
  The gradients that reduce over pixels (grad_weight, grad_scale, grad_shift) add up to ~600 such
  terms, which can cancel (a grad_weight element of 0.1 from terms whose sizes sum to ~300, where
  PyTorch's own fp32 gradient is 1e-5 off), hence atol 1e-4 for them.
* fp64 at 1e-10 for the same reason with eps 2.2e-16.
* fp16/bf16 are compared with an fp64 evaluation of the same rounded inputs: our error may be at
  most twice the reference's own error at that precision (flash-attention's rule), or one unit of
  the format's epsilon at the output's magnitude, whichever is larger (the floor covers a reference
  that happens to round luckily on a small tensor; we accumulate in fp32 and round once, so our
  error is at most half an ulp plus fp32 noise).
* Resampling only moves values: bit-exact.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import slowfast_fast
from slowfast_fast import _extension, reference
from slowfast_fast import ops as sf_ops
from slowfast_fast._layout import output_memory_format

pytestmark = pytest.mark.skipif(
    not _extension.has_kernels("CPU"), reason="slowfast_fast._C built without CPU kernels"
)

OPS = torch.ops.slowfast_fast
CL = torch.channels_last_3d
NC = torch.contiguous_format
LOW = (torch.bfloat16, torch.float16)


def _rand(*shape, dtype=torch.float32, fmt=NC, gen=None):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).contiguous(memory_format=fmt)


def _out_len(t_fast, k, s, p):
    return (t_fast + 2 * p - k) // s + 1


# (N, C_slow, C_fast, C_lat, T_fast, H, W, k, stride, padding): s < k, s == k, s > k, k = 1, odd sizes.
GEOMETRIES = [
    (2, 3, 5, 7, 13, 3, 5, 5, 8, 2),
    (1, 4, 3, 6, 17, 5, 3, 7, 4, 3),
    (3, 2, 4, 5, 9, 2, 3, 3, 1, 1),
    (2, 5, 2, 3, 11, 1, 7, 1, 2, 0),
    (1, 1, 6, 9, 23, 3, 2, 2, 5, 1),
    (2, 6, 5, 4, 15, 3, 3, 4, 4, 0),
    (1, 3, 7, 11, 19, 2, 5, 6, 3, 5),
    (2, 2, 1, 2, 8, 4, 1, 3, 7, 2),
]


def _lateral_inputs(geom, dtype=torch.float32, fmt=NC, affine=True, seed=0, fast_fmt=None):
    n, c_s, c_f, c_l, t_f, h, w, k, s, p = geom
    gen = torch.Generator().manual_seed(seed)
    t_s = _out_len(t_f, k, s, p)
    x_slow = _rand(n, c_s, t_s, h, w, dtype=dtype, fmt=fmt, gen=gen)
    x_fast = _rand(n, c_f, t_f, h, w, dtype=dtype, fmt=fast_fmt or fmt, gen=gen)
    weight = _rand(c_l, c_f, k, 1, 1, dtype=dtype, gen=gen)
    scale = (_rand(c_l, dtype=torch.float64, gen=gen).abs() + 0.5).to(dtype) if affine else None
    shift = _rand(c_l, dtype=dtype, gen=gen) if affine else None
    return x_slow, x_fast, weight, s, p, scale, shift


def _assert_format(out, like):
    """The output follows the layout rule (csrc/common.h): like's format when densely channels_last_3d."""
    assert out.is_contiguous(memory_format=output_memory_format(like))


def _double(t):
    return None if t is None else t.detach().double()


def _lowp_bound(ours, ref_lowp, truth):
    """Max error allowed for a low-precision result: see the module docstring."""
    err_ref = (ref_lowp.double() - truth).abs().max().item()
    floor = torch.finfo(ours.dtype).eps * truth.abs().max().item()
    return max(2 * err_ref, floor)


def _assert_lowp_close(ours, ref_lowp, truth):
    err = (ours.double() - truth).abs().max().item()
    bound = _lowp_bound(ours, ref_lowp, truth)
    assert err <= bound, f"error {err} exceeds {bound}"


# --------------------------------------------------------------------------------------------
# lateral_concat forward


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("fmt", [NC, CL])
@pytest.mark.parametrize("affine,relu", [(False, False), (True, False), (True, True), (False, True)])
def test_lateral_forward_fp32(geom, fmt, affine, relu):
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(geom, fmt=fmt, affine=affine)
    out = sf_ops.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift, relu, backend="cpu")
    ref = reference.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift, relu)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    _assert_format(out, x_slow)
    assert torch.equal(out[:, : x_slow.shape[1]], x_slow)  # the x_slow part is a copy
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geom", GEOMETRIES[:4])
@pytest.mark.parametrize("fmt", [NC, CL])
def test_lateral_forward_fp64(geom, fmt):
    args = _lateral_inputs(geom, dtype=torch.float64, fmt=fmt)
    out = OPS.lateral_concat(*args, True)
    torch.testing.assert_close(out, reference.lateral_concat(*args, True), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("geom", GEOMETRIES[:5])
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("fmt", [NC, CL])
def test_lateral_forward_low_precision(geom, dtype, fmt):
    args = _lateral_inputs(geom, dtype=dtype, fmt=fmt)
    x_slow, x_fast, weight, s, p, scale, shift = args
    out = OPS.lateral_concat(*args, True)
    assert out.dtype == dtype
    _assert_format(out, x_slow)
    truth = reference.lateral_concat(
        *(_double(t) for t in (x_slow, x_fast, weight)), s, p, _double(scale), _double(shift), True
    )
    ref = reference.lateral_concat(*args, True)
    _assert_lowp_close(out, ref, truth)


def test_lateral_unread_fast_frames_are_not_read():
    """With stride > k some fast frames feed no output; NaNs there must not reach any result."""
    geom = (2, 3, 4, 5, 16, 3, 3, 3, 8, 1)  # taps read frames 0, 1, 7, 8, 9 of 16
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(geom)
    k = weight.shape[2]
    read = {t * s - p + kt for t in range(x_slow.shape[2]) for kt in range(k)}
    unread = [t for t in range(x_fast.shape[2]) if t not in read]
    assert unread
    poisoned = x_fast.clone()
    poisoned[:, :, unread] = float("nan")
    out = OPS.lateral_concat(x_slow, poisoned, weight, s, p, scale, shift, False)
    torch.testing.assert_close(out, reference.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift))
    grad_out = _rand(*out.shape)
    gw = OPS.lateral_concat_grad_weight(grad_out, poisoned, weight, scale, None, s, p)
    assert all(torch.isfinite(t).all() for t in gw)


@pytest.mark.parametrize("slow_fmt,fast_fmt", [(CL, NC), (NC, CL)])
def test_lateral_mixed_formats(slow_fmt, fast_fmt):
    args = _lateral_inputs(GEOMETRIES[1], fmt=slow_fmt, fast_fmt=fast_fmt)
    out = OPS.lateral_concat(*args, True)
    assert out.is_contiguous(memory_format=slow_fmt)
    torch.testing.assert_close(out, reference.lateral_concat(*args, True), rtol=1e-5, atol=1e-5)


def test_lateral_non_contiguous_and_expanded_inputs():
    geom = (3, 4, 5, 6, 13, 3, 4, 5, 4, 2)
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(geom)
    # every other H column of a wider tensor; batch expanded from one sample; strided weight/scale
    x_slow_nc = _rand(3, 4, x_slow.shape[2], 3, 8)[..., ::2]
    x_fast_exp = _rand(1, 5, 13, 3, 4).expand(3, -1, -1, -1, -1)
    weight_nc = _rand(6, 5, 10, 1, 1)[:, :, ::2]
    scale_nc = _rand(12)[::2]
    args = (x_slow_nc, x_fast_exp, weight_nc, s, p, scale_nc, shift)
    out = OPS.lateral_concat(*args, True)
    assert out.is_contiguous()
    torch.testing.assert_close(out, reference.lateral_concat(*args, True), rtol=1e-5, atol=1e-5)


def test_lateral_empty_batch():
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(GEOMETRIES[0])
    x_slow, x_fast = x_slow[:0], x_fast[:0]
    for fmt in (NC, CL):
        xs, xf = x_slow.contiguous(memory_format=fmt), x_fast.contiguous(memory_format=fmt)
        out = OPS.lateral_concat(xs, xf, weight, s, p, scale, shift, True)
        assert out.shape == (0, x_slow.shape[1] + weight.shape[0], *x_slow.shape[2:])
        grad_out = torch.empty_like(out)
        assert OPS.lateral_concat_grad_input(grad_out, xf, weight, scale, out, s, p).shape == xf.shape
        gw, gs, gb = OPS.lateral_concat_grad_weight(grad_out, xf, weight, scale, out, s, p)
        assert gw.shape == weight.shape and not gw.any() and not gs.any() and not gb.any()


# --------------------------------------------------------------------------------------------
# lateral_concat backward


def _grad_truth(grad_out, x_fast, weight, scale, out, s, p):
    """(grad_x_fast, grad_weight, grad_scale, grad_shift) from the op's definition, by autograd of
    conv3d in the dtype of the inputs, with the ReLU mask taken from ``out``."""
    c_lat = weight.shape[0]
    g = grad_out[:, -c_lat:]
    if out is not None:
        g = g * (out[:, -c_lat:] > 0)
    xf = x_fast.detach().requires_grad_()
    w = weight.detach().requires_grad_()
    conv = F.conv3d(xf, w, stride=(s, 1, 1), padding=(p, 0, 0))
    sc = torch.ones(c_lat, dtype=conv.dtype) if scale is None else scale
    gx, gw = torch.autograd.grad(conv * sc.view(1, -1, 1, 1, 1), (xf, w), g)
    dims = (0, 2, 3, 4)
    return gx, gw, (g * conv).sum(dims), g.sum(dims)


def _grad_case(geom, dtype, fmt, relu, with_scale):
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(geom, dtype=dtype, fmt=fmt)
    scale = scale if with_scale else None
    out = reference.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift, relu) if relu else None
    shape = (x_slow.shape[0], x_slow.shape[1] + weight.shape[0], *x_slow.shape[2:])
    grad_out = _rand(*shape, dtype=dtype, fmt=fmt, gen=torch.Generator().manual_seed(1))
    return grad_out, x_fast, weight, scale, out, s, p


def _ours(args):
    gx = OPS.lateral_concat_grad_input(*args)
    return (gx, *OPS.lateral_concat_grad_weight(*args))


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("fmt", [NC, CL])
@pytest.mark.parametrize("relu,with_scale", [(False, False), (True, True), (False, True)])
def test_lateral_grad_ops_fp32(geom, fmt, relu, with_scale):
    args = _grad_case(geom, torch.float32, fmt, relu, with_scale)
    ours = _ours(args)
    truth = _grad_truth(*(_double(t) if isinstance(t, torch.Tensor) else t for t in args))
    x_fast, weight = args[1], args[2]
    assert ours[0].shape == x_fast.shape
    _assert_format(ours[0], x_fast)
    assert ours[1].is_contiguous() and ours[1].shape == weight.shape
    for i, (got, want) in enumerate(zip(ours, truth, strict=True)):
        assert got.dtype == torch.float32
        # grad_x_fast sums k*C_lat products per element; the weight, scale and shift gradients reduce
        # over every pixel (see the module docstring).
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5 if i == 0 else 1e-4)


@pytest.mark.parametrize("geom", GEOMETRIES[:5])
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("fmt", [NC, CL])
def test_lateral_grad_ops_low_precision(geom, dtype, fmt):
    args = _grad_case(geom, dtype, fmt, relu=True, with_scale=True)
    ours = _ours(args)
    truth = _grad_truth(*(_double(t) if isinstance(t, torch.Tensor) else t for t in args))
    ref = _grad_truth(*args)  # PyTorch's own conv backward at this precision
    for got, r, want in zip(ours, ref, truth, strict=True):
        assert got.dtype == dtype
        _assert_lowp_close(got, r, want)


@pytest.mark.parametrize("geom", GEOMETRIES[:3])
def test_lateral_grad_ops_fp64(geom):
    args = _grad_case(geom, torch.float64, CL, relu=True, with_scale=True)
    for got, want in zip(_ours(args), _grad_truth(*args), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("geom", [GEOMETRIES[0], GEOMETRIES[2], GEOMETRIES[6]])
@pytest.mark.parametrize("fmt", [NC, CL])
@pytest.mark.parametrize("relu", [False, True])
def test_lateral_autograd_matches_reference(geom, fmt, relu):
    inputs = _lateral_inputs(geom, fmt=fmt)
    x_slow, x_fast, weight, s, p, scale, shift = inputs

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in (x_slow, x_fast, weight, scale, shift)]
        out = fn(leaves[0], leaves[1], leaves[2], s, p, leaves[3], leaves[4], relu)
        out.backward(grad)
        return out, [t.grad for t in leaves]

    grad = _rand(x_slow.shape[0], x_slow.shape[1] + weight.shape[0], *x_slow.shape[2:], fmt=fmt)
    out, grads = run(lambda *a: sf_ops.lateral_concat(*a, backend="cpu"))
    ref_out, ref_grads = run(reference.lateral_concat)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_lateral_autograd_through_use_backend_and_sum():
    """``out.sum().backward()`` hands the kernels an expanded (stride-0) grad_out."""
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(GEOMETRIES[1], fmt=CL)
    leaves = [t.clone().requires_grad_() for t in (x_slow, x_fast, weight)]
    with slowfast_fast.use_backend("cpu"):
        sf_ops.lateral_concat(*leaves, s, p, scale, shift, True).sum().backward()
    ref_leaves = [t.clone().requires_grad_() for t in (x_slow, x_fast, weight)]
    reference.lateral_concat(*ref_leaves, s, p, scale, shift, True).sum().backward()
    for a, b in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("geom", [(2, 2, 3, 2, 9, 2, 3, 3, 2, 1), (1, 1, 2, 3, 10, 1, 2, 2, 4, 0)])
@pytest.mark.parametrize("relu", [False, True])
def test_lateral_gradcheck(geom, relu):
    x_slow, x_fast, weight, s, p, scale, shift = (
        t.requires_grad_() if isinstance(t, torch.Tensor) else t
        for t in _lateral_inputs(geom, dtype=torch.float64)
    )

    def fn(*a):
        return sf_ops.lateral_concat(*a[:3], s, p, a[3], a[4], relu, backend="cpu")

    assert torch.autograd.gradcheck(fn, (x_slow, x_fast, weight, scale, shift))


@pytest.mark.parametrize("fmt", [NC, CL])
def test_lateral_opcheck(fmt):
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(GEOMETRIES[0], fmt=fmt)
    leaves = [t.requires_grad_() for t in (x_slow, x_fast, weight, scale, shift)]
    torch.library.opcheck(OPS.lateral_concat.default, (*leaves[:3], s, p, leaves[3], leaves[4], True))
    args = _grad_case(GEOMETRIES[1], torch.float32, fmt, relu=True, with_scale=True)
    torch.library.opcheck(OPS.lateral_concat_grad_input.default, args)
    torch.library.opcheck(OPS.lateral_concat_grad_weight.default, args)


# --------------------------------------------------------------------------------------------
# temporal_resample, pathway_split and the resample backward

RATES = [1 / 3, 1 / 7, 2 / 3, 1.5, 2.0, 1 / 8, 0.25]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("fmt", [NC, CL])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_resample_bit_exact(rate, fmt, dtype):
    x = _rand(2, 3, 23, 5, 7, dtype=dtype, fmt=fmt)
    out = sf_ops.temporal_resample(x, rate, backend="cpu")
    want = F.interpolate(x, mode="nearest", scale_factor=(rate, 1.0, 1.0))
    assert torch.equal(out, want)
    assert out.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_resample_other_dtypes_and_identity(dtype):
    x = _rand(1, 2, 17, 3, 2, dtype=dtype)
    assert torch.equal(
        OPS.temporal_resample(x, 1 / 7), F.interpolate(x, mode="nearest", scale_factor=(1 / 7, 1, 1))
    )
    same = OPS.temporal_resample(x, 1.0)  # called directly, identity still returns a new tensor
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()


def test_resample_non_contiguous_and_expanded():
    base = _rand(2, 3, 31, 4, 9)
    for x in (base[:, :, ::2, :, ::3], base[:1].expand(4, -1, -1, -1, -1), base.transpose(3, 4)):
        want = F.interpolate(x, mode="nearest", scale_factor=(0.25, 1, 1))
        assert torch.equal(OPS.temporal_resample(x, 0.25), want)


def test_resample_empty_batch():
    x = _rand(0, 3, 16, 4, 4, fmt=CL)
    assert OPS.temporal_resample(x, 0.25).shape == (0, 3, 4, 4, 4)
    assert OPS.temporal_resample_backward(_rand(0, 3, 4, 4, 4), 16, 0.25).shape == (0, 3, 16, 4, 4)


@pytest.mark.parametrize("slow,fast", [(1 / 8, 1 / 2), (1 / 4, 1 / 3), (1 / 7, 1.5)])
@pytest.mark.parametrize("fmt", [NC, CL])
def test_pathway_split(slow, fast, fmt):
    x = _rand(2, 3, 32, 5, 6, fmt=fmt)
    out_slow, out_fast = sf_ops.pathway_split(x, slow, fast, backend="cpu")
    want_slow, want_fast = reference.pathway_split(x, slow, fast)
    assert torch.equal(out_slow, want_slow) and torch.equal(out_fast, want_fast)
    assert out_slow.is_contiguous(memory_format=fmt) and out_fast.is_contiguous(memory_format=fmt)
    same, quarter = OPS.pathway_split(x, 1.0, 1 / 4)  # called directly, identity still copies
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()
    assert torch.equal(quarter, reference.temporal_resample(x, 1 / 4))


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("fmt", [NC, CL])
def test_resample_backward(rate, fmt):
    x = _rand(2, 3, 19, 3, 5, dtype=torch.float64, fmt=fmt).requires_grad_()
    ref = F.interpolate(x, mode="nearest", scale_factor=(rate, 1, 1))
    grad = _rand(*ref.shape, dtype=torch.float64, fmt=fmt)
    (want,) = torch.autograd.grad(ref, x, grad)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        got = OPS.temporal_resample_backward(grad.to(dtype), x.shape[2], rate)
        assert got.dtype == dtype and got.is_contiguous(memory_format=fmt)
        # at most two output frames share a source here, so the sum rounds once at most
        tol = torch.finfo(dtype).eps * 2 * want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)


def test_resample_autograd_and_gradcheck():
    x = _rand(1, 2, 11, 2, 3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sf_ops.temporal_resample(t, 2 / 3, backend="cpu"), (x,))
    assert torch.autograd.gradcheck(lambda t: sf_ops.pathway_split(t, 1 / 3, 1.5, backend="cpu"), (x,))


@pytest.mark.parametrize("fmt", [NC, CL])
def test_resample_opcheck(fmt):
    x = _rand(2, 3, 16, 3, 5, fmt=fmt).requires_grad_()
    torch.library.opcheck(OPS.temporal_resample.default, (x, 1 / 3))
    torch.library.opcheck(OPS.pathway_split.default, (x, 1 / 8, 0.5))
    torch.library.opcheck(OPS.temporal_resample_backward.default, (_rand(2, 3, 5, 3, 5, fmt=fmt), 16, 1 / 3))
