"""How the public resampling ops reach a backend's kernels: straight to the device key (below the
autograd layer) for inference calls, through the full dispatcher whenever something could see the
difference (a gradient to record, a negated view to resolve, the profiler, a dispatch mode)."""

from __future__ import annotations

import importlib
import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from slowfast_fast import _extension, ops, reference
from slowfast_fast import backend as backend_module

resample_module = importlib.import_module("slowfast_fast.ops.resample")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
OP_NAMES = ("temporal_resample", "pathway_split")
NO_CPU_KERNELS = not _extension.has_kernels("CPU") or DEVICE != "cpu"

BACKENDS = [
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(
            not _extension.has_kernels("CPU") or DEVICE != "cpu", reason="no CPU kernels"
        ),
    ),
    pytest.param(
        "triton",
        marks=pytest.mark.skipif(
            not backend_module.usable("triton", torch.device(DEVICE))[0], reason="Triton not usable here"
        ),
    ),
]


@pytest.fixture
def routes(monkeypatch):
    """Which route each kernel call of the resampling ops takes, as the op saw it: ``"direct"`` (a
    redispatch at the device key) or ``"full"`` (a call through the whole dispatcher)."""
    used = []
    real_namespace = resample_module.op_namespace

    class Spy:
        def __init__(self, op):
            self.op = op

        def redispatch(self, keys, *args):
            used.append("direct")
            return self.op.redispatch(keys, *args)

        def __call__(self, *args):
            used.append("full")
            return self.op(*args)

    def spied_namespace(name):
        namespace = real_namespace(name)
        return types.SimpleNamespace(
            **{op: types.SimpleNamespace(default=Spy(getattr(namespace, op).default)) for op in OP_NAMES}
        )

    monkeypatch.setattr(resample_module, "_KERNEL_OPS", {})
    monkeypatch.setattr(resample_module, "op_namespace", spied_namespace)
    return used


def _clip(grad=False, dtype=torch.float32):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 13, 3, 4, generator=gen).to(device=DEVICE, dtype=dtype)
    return x.requires_grad_(grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_calls_take_the_direct_call_and_match_the_reference(backend, routes):
    x = _clip()
    out = ops.temporal_resample(x, 1 / 3, backend=backend)
    assert torch.equal(out, reference.temporal_resample(x, 1 / 3)) and out.grad_fn is None
    slow, fast = ops.pathway_split(x, 1 / 4, 2 / 3, backend=backend)
    assert torch.equal(slow, reference.temporal_resample(x, 1 / 4))
    assert torch.equal(fast, reference.temporal_resample(x, 2 / 3))
    with torch.inference_mode():
        y = _clip()
        assert torch.equal(
            ops.temporal_resample(y, 0.5, backend=backend), reference.temporal_resample(y, 0.5)
        )
    assert routes == ["direct"] * 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_calls_needing_a_gradient_go_through_autograd(backend, routes):
    x = _clip(grad=True, dtype=torch.float64)
    slow, fast = ops.pathway_split(x, 1 / 4, 2 / 3, backend=backend)
    assert routes == ["full"] and slow.grad_fn is not None and fast.grad_fn is not None
    g_slow, g_fast = torch.randn_like(slow), torch.randn_like(fast)
    (grad,) = torch.autograd.grad((slow, fast), x, (g_slow, g_fast))
    (truth,) = torch.autograd.grad(reference.pathway_split(x, 1 / 4, 2 / 3), x, (g_slow, g_fast))
    torch.testing.assert_close(grad, truth, rtol=0, atol=1e-15)
    out = ops.temporal_resample(x, 1 / 3, backend=backend)
    assert routes[-1] == "full" and out.grad_fn is not None
    with torch.no_grad():
        out = ops.temporal_resample(x, 1 / 3, backend=backend)
    assert routes[-1] == "direct" and out.grad_fn is None
    assert torch.equal(out, reference.temporal_resample(x.detach(), 1 / 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_negated_views_profiled_calls_and_dispatch_modes_see_the_full_call(backend):
    """A negated view's memory holds the negatives of its values (the dispatcher's Negative step
    resolves it above the device key); the profiler and a dispatch mode record the op at the full call."""
    x = torch.randn(2, 3, 9, 3, 4, dtype=torch.complex64, device=DEVICE).conj().imag
    assert x.is_neg() and not resample_module._direct_call(x)
    out = ops.temporal_resample(x, 1 / 3, backend=backend)
    assert torch.equal(out, reference.temporal_resample(x.resolve_neg(), 1 / 3))
    plain = x.resolve_neg()
    namespace = "slowfast_fast_triton" if backend == "triton" else "slowfast_fast"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        assert not resample_module._direct_call(plain)
        ops.pathway_split(plain, 1 / 3, 2 / 3, backend=backend)
    assert any(event.key == f"{namespace}::pathway_split" for event in profile.key_averages())

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Record():
        ops.temporal_resample(plain, 1 / 3, backend=backend)
    assert f"{namespace}.temporal_resample.default" in seen
