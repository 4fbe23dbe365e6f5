"""Property-based comparison (hypothesis) of every kernel backend with the reference over random
shapes, strides, kernels, paddings, layouts and epilogues, forward and backward.

Its own file so that an environment without hypothesis (the lent GPU machine) still collects the rest.
"""

import pytest
import torch
import torch.nn.functional as F

from slowfast_fast import reference
from slowfast_fast._layout import output_memory_format
from slowfast_fast.ops import lateral_concat, temporal_resample

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_ops_common import KERNEL_BACKENDS, _lateral_inputs, _require  # noqa: E402


@st.composite
def lateral_case(draw):
    k = draw(st.integers(1, 7))
    s = draw(st.integers(1, 8))
    p = draw(st.integers(0, k - 1))
    t_min = max(1, k - 2 * p)
    t_fast = draw(st.integers(t_min, t_min + 12))
    return dict(
        n=draw(st.integers(0, 2)),
        c_slow=draw(st.integers(1, 5)),
        c_fast=draw(st.integers(1, 6)),
        c_lat=draw(st.integers(1, 7)),
        t_fast=t_fast,
        h=draw(st.integers(1, 5)),
        w=draw(st.integers(1, 6)),
        k=k,
        s=s,
        p=p,
        channels_last=draw(st.booleans()),
        affine=draw(st.booleans()),
        relu=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_property_lateral_concat_matches_reference(backend):
    _require(backend)
    examples = 40 if backend == "cpu" else 12  # the Triton interpreter is slow

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=lateral_case())
    def check(case):
        x_slow, x_fast, weight = _lateral_inputs(
            case["n"], case["c_slow"], case["c_fast"], case["c_lat"], case["t_fast"], case["h"],
            case["w"], case["k"], case["s"], case["p"], dtype=torch.float64, seed=case["seed"],
        )  # fmt: skip
        if case["channels_last"]:
            x_slow = x_slow.contiguous(memory_format=torch.channels_last_3d)
            x_fast = x_fast.contiguous(memory_format=torch.channels_last_3d)
        scale = shift = None
        if case["affine"]:
            scale = torch.rand(case["c_lat"], dtype=torch.float64) + 0.5
            shift = torch.randn(case["c_lat"], dtype=torch.float64)
        # The triton interpreter computes in fp32 at best, so compare its fp32 run to an fp64 truth.
        dtype = torch.float64 if backend == "cpu" else torch.float32
        leaves = [t for t in (x_slow, x_fast, weight, scale, shift) if t is not None]
        leaves = [t.to(dtype).requires_grad_(True) for t in leaves]
        ins = dict(zip(["x_slow", "x_fast", "weight", "scale", "shift"][: len(leaves)], leaves, strict=True))
        if not case["affine"]:
            ins.update(scale=None, shift=None)
        args = (ins["x_slow"], ins["x_fast"], ins["weight"], case["s"], case["p"])
        kwargs = dict(scale=ins["scale"], shift=ins["shift"], relu=case["relu"])
        out = lateral_concat(*args, **kwargs, backend=backend)
        truth_leaves = [t.detach().double().requires_grad_(True) for t in leaves]
        truth_ins = dict(zip(ins.keys(), truth_leaves, strict=False))
        truth = reference.lateral_concat(
            truth_ins["x_slow"], truth_ins["x_fast"], truth_ins["weight"], case["s"], case["p"],
            truth_ins.get("scale"), truth_ins.get("shift"), case["relu"],
        )  # fmt: skip
        tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out.double(), truth, **tol)
        assert out.is_contiguous(memory_format=output_memory_format(ins["x_slow"]))
        if out.numel() == 0:
            return
        grad_out = torch.randn_like(truth)
        grads = torch.autograd.grad(out, leaves, grad_out.to(dtype))
        truth_grads = torch.autograd.grad(truth, truth_leaves, grad_out)
        for got, want in zip(grads, truth_grads, strict=True):
            torch.testing.assert_close(got.double(), want, **tol)

    check()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_property_resample_matches_interpolate(backend):
    _require(backend)

    @settings(max_examples=40 if backend == "cpu" else 12, deadline=None)
    @given(
        t_in=st.integers(1, 40),
        inv_rate=st.sampled_from([1 / 8, 1 / 4, 1 / 3, 1 / 7, 2 / 3, 0.3, 1.5, 2.0]),
        channels_last=st.booleans(),
        n=st.integers(0, 2),
        seed=st.integers(0, 2**16),
    )
    def check(t_in, inv_rate, channels_last, n, seed):
        if int(t_in * inv_rate) < 1 or int(t_in * inv_rate) == t_in:
            return
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 3, t_in, 3, 5, generator=g)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x.requires_grad_(True)
        out = temporal_resample(x, inv_rate, backend=backend)
        truth = F.interpolate(x, mode="nearest", scale_factor=(inv_rate, 1, 1))
        assert torch.equal(out, truth)  # a gather: bit-exact
        if n == 0:
            return
        grad = torch.randn_like(truth)
        (got,) = torch.autograd.grad(out, x, grad)
        (want,) = torch.autograd.grad(truth, x, grad)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)

    check()
