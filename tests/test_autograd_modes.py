"""Autograd beyond first-order reverse mode, on every backend that runs here.

The kernels' ops have reverse-mode formulas only, and their backward ops none of their own. Without
care, ``create_graph=True`` (a gradient penalty) would give second derivatives of zero and forward-mode
AD (dual tensors, ``torch.func.jvp``) tangents of None or zero, both without an error. The public ops
must instead compute what the reference computes: a differentiable backward when the graph of the
gradient is being built, and the reference itself under forward AD. Checked in fp64 by
``gradgradcheck`` and against the reference's tangents.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from slowfast_fast import _extension, ops, reference
from slowfast_fast import backend as backend_module

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NO_CPU = pytest.mark.skipif(not _extension.has_kernels("CPU") or DEVICE != "cpu", reason="no CPU kernels")
NO_TRITON = pytest.mark.skipif(
    not backend_module.usable("triton", torch.device(DEVICE))[0], reason="Triton not usable here"
)
BACKENDS = [pytest.param("cpu", marks=NO_CPU), pytest.param("triton", marks=NO_TRITON), "reference"]


def _lateral_inputs(seed: int, with_affine: bool):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(DEVICE)

    # Small: gradgradcheck perturbs every element of every input and of the incoming gradient.
    x_slow, x_fast, weight = rand(1, 2, 3, 1, 2), rand(1, 3, 6, 1, 2), rand(4, 3, 3, 1, 1)
    scale, shift = (rand(4), rand(4)) if with_affine else (None, None)
    return x_slow, x_fast, weight, scale, shift


# Every combination on the compiled kernels and the reference; the full one under Triton's (slow)
# interpreter (the backward that builds a graph is the same code for every backend).
DOUBLE_BACKWARD_CASES = [
    pytest.param(backend, relu, affine, marks=marks)
    for backend, marks in (("cpu", NO_CPU), ("reference", ()))
    for relu in (False, True)
    for affine in (False, True)
] + [pytest.param("triton", True, True, marks=NO_TRITON)]


@pytest.mark.parametrize(("backend", "relu", "with_affine"), DOUBLE_BACKWARD_CASES)
def test_lateral_concat_double_backward(backend, relu, with_affine):
    """Second derivatives through every input (x_slow, x_fast, weight, scale, shift and the incoming
    gradient), against finite differences."""
    inputs = [t.requires_grad_() if t is not None else None for t in _lateral_inputs(1, with_affine)]
    x_slow, x_fast, weight, scale, shift = inputs
    if relu:  # keep pre-activations away from 0, where ReLU's derivative jumps (finite differences)
        with torch.no_grad():
            lateral = reference.lateral_concat(x_slow, x_fast, weight, 2, 1, scale, shift)[:, 2:]
        assert lateral.abs().min() > 1e-3

    def f(*args):
        affine = args[3:] if with_affine else (None, None)
        return ops.lateral_concat(*args[:3], 2, 1, *affine, relu, backend=backend)

    args = tuple(t for t in inputs if t is not None)
    if not with_affine:
        args = args[:3]
    torch.autograd.gradcheck(f, args)
    torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_penalty_matches_the_reference(backend):
    """The use that needs it: the gradient of a function of the gradient (here of x_fast's, with
    respect to the weight), as the reference gives it."""
    results = []
    for name in (backend, "reference"):
        x_slow, x_fast, weight, scale, shift = (t.clone().requires_grad_() for t in _lateral_inputs(2, True))
        out = ops.lateral_concat(x_slow, x_fast, weight, 2, 1, scale, shift, True, backend=name)
        (grad_x_fast,) = torch.autograd.grad(out.square().sum(), x_fast, create_graph=True)
        results.append(torch.autograd.grad(grad_x_fast.square().sum(), (weight, scale, shift)))
    for got, want in zip(*results, strict=True):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resampling_double_backward(backend):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 1, 7, 1, 2, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    for f in (
        lambda t: ops.temporal_resample(t, 1 / 3, backend=backend),
        lambda t: ops.temporal_resample(t, 2.5, backend=backend),
        lambda t: ops.pathway_split(t, 1 / 4, 2 / 3, backend=backend),
    ):
        # The gradient is linear in the incoming gradient: gradgradcheck varies that one.
        torch.autograd.gradcheck(f, (x,))
        torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("backend", [*BACKENDS, None])
def test_forward_mode_ad_gives_the_reference_tangents(backend):
    """Dual tensors and ``torch.func.jvp``: the tangents of every public op equal the reference's."""
    x_slow, x_fast, weight, scale, shift = _lateral_inputs(4, True)
    gen = torch.Generator().manual_seed(5)
    tangents = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(DEVICE) for t in (x_fast, weight)]

    def lateral(name, xf, w):
        return ops.lateral_concat(x_slow, xf, w, 2, 1, scale, shift, True, backend=name)

    _, want = torch.func.jvp(lambda xf, w: reference.lateral_concat(x_slow, xf, w, 2, 1, scale, shift, True),
                             (x_fast, weight), tuple(tangents))  # fmt: skip
    assert want.abs().sum() > 0
    _, got = torch.func.jvp(lambda xf, w: lateral(backend, xf, w), (x_fast, weight), tuple(tangents))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with fwAD.dual_level():
        dual = lateral(backend, fwAD.make_dual(x_fast, tangents[0]), fwAD.make_dual(weight, tangents[1]))
        tangent = fwAD.unpack_dual(dual).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, want, rtol=1e-12, atol=1e-12)

    clip = torch.randn(1, 2, 9, 2, 3, generator=gen, dtype=torch.float64).to(DEVICE)
    direction = torch.randn(clip.shape, generator=gen, dtype=clip.dtype).to(DEVICE)
    (_, want_slow), (_, want_fast) = (
        torch.func.jvp(lambda t, s=s: reference.temporal_resample(t, s), (clip,), (direction,))
        for s in (1 / 3, 2 / 3)
    )
    _, got = torch.func.jvp(
        lambda t: ops.pathway_split(t, 1 / 3, 2 / 3, backend=backend), (clip,), (direction,)
    )
    assert torch.equal(got[0], want_slow) and torch.equal(got[1], want_fast)
    with fwAD.dual_level():
        out = ops.temporal_resample(fwAD.make_dual(clip, direction), 1 / 3, backend=backend)
        assert torch.equal(fwAD.unpack_dual(out).tangent, want_slow)


def test_bf16_paths_through_pytorchs_conv_avoid_the_unsafe_bf16_conv(monkeypatch):
    """The differentiable backward and the forward-AD route run PyTorch's conv, whose bf16 conv3d
    gave NaN or crashed on AMX CPUs at some shapes (``backend.reference_bf16_conv_unsafe``, which
    ``auto`` keeps on the kernels): there they compute in fp32 and round. Here every shape is declared
    unsafe, and no bf16 conv3d may run; the results are the fp32 reference's, rounded."""
    import torch.nn.functional as F

    from slowfast_fast import backend as backend_module

    monkeypatch.setattr(backend_module, "reference_bf16_conv_unsafe", lambda kernel, stride: True)
    conv_dtypes = []
    real_conv3d = F.conv3d

    def spy(input, *args, **kwargs):
        conv_dtypes.append(input.dtype)
        return real_conv3d(input, *args, **kwargs)

    monkeypatch.setattr(F, "conv3d", spy)
    x_slow, x_fast, weight, scale, shift = (t.to(torch.bfloat16) for t in _lateral_inputs(6, True))
    backend = "cpu" if _extension.has_kernels("CPU") else "reference"
    leaves = [t.clone().requires_grad_() for t in (x_fast, weight)]
    out = ops.lateral_concat(x_slow, *leaves, 2, 1, scale, shift, True, backend=backend)
    (grad_x_fast,) = torch.autograd.grad(out.float().square().sum(), leaves[0], create_graph=True)
    (grad_weight,) = torch.autograd.grad(grad_x_fast.float().square().sum(), leaves[1])
    assert grad_weight.abs().sum() > 0
    with fwAD.dual_level():
        dual = ops.lateral_concat(
            x_slow, fwAD.make_dual(x_fast, torch.ones_like(x_fast)), weight, 2, 1, scale, shift, True
        )
        tangent = fwAD.unpack_dual(dual).tangent
    assert conv_dtypes and torch.bfloat16 not in conv_dtypes, conv_dtypes
    up = [t.float() for t in (x_slow, x_fast, weight, scale, shift)]
    _, want = torch.func.jvp(
        lambda xf: reference.lateral_concat(up[0], xf, *up[2:3], 2, 1, *up[3:], True), (up[1],),
        (torch.ones_like(up[1]),),
    )  # fmt: skip
    assert tangent.dtype == torch.bfloat16
    assert torch.equal(tangent, want.to(torch.bfloat16))
