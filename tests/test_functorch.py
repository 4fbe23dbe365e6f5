"""``torch.func`` over the public ops, on every backend that runs here.

PyTorch's gradient transforms (``grad``, ``vjp``, ``jacrev``, ``hessian``) refuse the autograd.Function
that ``torch.library.register_autograd`` generates for the kernels' ops (it has no ``setup_context``):
before, every such call raised. The public ops run the reference under them (as under forward-mode AD),
so the derivatives are the reference's. ``vmap`` keeps the kernels: a batch of activations is folded
into N and the kernel runs once (without a batching rule PyTorch's fallback ran it once per entry and
warned); a batched weight runs it once per entry. Checked in fp64 against the reference, on random
inputs.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from slowfast_fast import _extension, ops, reference
from slowfast_fast import backend as backend_module

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NO_CPU = pytest.mark.skipif(not _extension.has_kernels("CPU") or DEVICE != "cpu", reason="no CPU kernels")
NO_TRITON = pytest.mark.skipif(
    not backend_module.usable("triton", torch.device(DEVICE))[0], reason="Triton not usable here"
)
KERNEL_BACKENDS = [pytest.param("cpu", marks=NO_CPU), pytest.param("triton", marks=NO_TRITON)]
BACKENDS = [*KERNEL_BACKENDS, "reference", None]
TIGHT = {"rtol": 1e-12, "atol": 1e-12}  # fp64, the same formulas


def _rand(gen, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=gen, dtype=dtype).to(DEVICE)


def _lateral_inputs(seed: int, batch: int = 2):
    gen = torch.Generator().manual_seed(seed)
    # Odd sizes: C_slow 3, C_fast 2, C_lat 5, T_fast 9 -> T_slow 3 with k 3, stride 3, padding 1; 3x5 pixels.
    x_slow, x_fast = _rand(gen, batch, 3, 3, 3, 5), _rand(gen, batch, 2, 9, 3, 5)
    weight, scale, shift = _rand(gen, 5, 2, 3, 1, 1), _rand(gen, 5), _rand(gen, 5)
    return x_slow, x_fast, weight, scale, shift


class _OpCalls(TorchDispatchMode):
    """Records the first-argument shape of every call of the fused ops that reaches the dispatcher."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name.startswith("slowfast_fast"):
            self.calls.append((name.split("::")[1], tuple(args[0].shape)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_and_vjp_give_the_reference_gradients(backend):
    """``torch.func.grad`` and ``vjp`` of a loss through ``lateral_concat`` with respect to every input."""
    x_slow, x_fast, weight, scale, shift = _lateral_inputs(1)
    upstream = _rand(torch.Generator().manual_seed(2), 2, 8, 3, 3, 5)

    def loss(fn, *args):
        return (fn(*args) * upstream).sum()

    def fused(xs, xf, w, sc, sh):
        return ops.lateral_concat(xs, xf, w, 3, 1, sc, sh, True, backend=backend)

    def truth(xs, xf, w, sc, sh):
        return reference.lateral_concat(xs, xf, w, 3, 1, sc, sh, True)

    args = (x_slow, x_fast, weight, scale, shift)
    leaves = [t.clone().requires_grad_() for t in args]
    want = torch.autograd.grad(loss(truth, *leaves), leaves)
    got = torch.func.grad(lambda *a: loss(fused, *a), argnums=(0, 1, 2, 3, 4))(*args)
    for g, w in zip(got, want, strict=True):
        assert w.abs().sum() > 0
        torch.testing.assert_close(g, w, **TIGHT)
    out, pullback = torch.func.vjp(fused, *args)
    torch.testing.assert_close(out, truth(*args), **TIGHT)
    for g, w in zip(pullback(upstream), want, strict=True):
        torch.testing.assert_close(g, w, **TIGHT)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacobians_and_hessian_match_the_reference(backend):
    x_slow, x_fast, weight, scale, shift = _lateral_inputs(3)
    x_slow, x_fast = x_slow[:1, :, :, :1, :2], x_fast[:1, :, :, :1, :2]  # small Jacobians

    def fused(w):
        return ops.lateral_concat(x_slow, x_fast, w, 3, 1, scale, shift, True, backend=backend)

    def truth(w):
        return reference.lateral_concat(x_slow, x_fast, w, 3, 1, scale, shift, True)

    want = torch.func.jacrev(truth)(weight)
    assert want.abs().sum() > 0
    torch.testing.assert_close(torch.func.jacrev(fused)(weight), want, **TIGHT)
    torch.testing.assert_close(torch.func.jacfwd(fused)(weight), want, **TIGHT)

    def energy(fn):
        return lambda w: fn(w).pow(3).sum()  # a non-zero Hessian: the op is linear in w

    want = torch.func.hessian(energy(truth))(weight)
    assert want.abs().sum() > 0
    torch.testing.assert_close(torch.func.hessian(energy(fused))(weight), want, **TIGHT)


def _assert_per_sample_weight_grads(backend, samples_slow, samples_fast, weight, scale, shift, relu, **tol):
    """``vmap(grad(...))`` of each sample's loss by the weight (the samples stacked along a new first
    axis, each ``(1, C, T, H, W)``), checked against a loop of autograd over the reference; also the
    vmapped forward. Returns nothing: it asserts."""

    def loss(fn, xs, xf, w):
        return fn(xs, xf, w).square().sum()

    def fused(xs, xf, w):
        return ops.lateral_concat(xs, xf, w, 3, 1, scale, shift, relu, backend=backend)

    def truth(xs, xf, w):
        return reference.lateral_concat(xs, xf, w, 3, 1, scale, shift, relu)

    got = torch.func.vmap(torch.func.grad(lambda xs, xf, w: loss(fused, xs, xf, w), argnums=2),
                          in_dims=(0, 0, None))(samples_slow, samples_fast, weight)  # fmt: skip
    outs = torch.func.vmap(fused, in_dims=(0, 0, None))(samples_slow, samples_fast, weight)
    for i in range(samples_slow.shape[0]):
        w = weight.clone().requires_grad_()
        (want,) = torch.autograd.grad(loss(truth, samples_slow[i], samples_fast[i], w), w)
        torch.testing.assert_close(got[i], want, **tol)
        torch.testing.assert_close(outs[i], truth(samples_slow[i], samples_fast[i], weight), **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_gradients(backend):
    """``vmap(grad(...))``: the weight's gradient of each sample's loss, as a loop over samples gives it."""
    x_slow, x_fast, weight, scale, shift = _lateral_inputs(4, batch=3)
    _assert_per_sample_weight_grads(
        backend, x_slow[:, None], x_fast[:, None], weight, scale, shift, False, **TIGHT
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_resampling_under_grad_transforms(backend):
    gen = torch.Generator().manual_seed(5)
    clip = _rand(gen, 2, 3, 11, 2, 3)
    w_slow, w_fast = _rand(gen, 2, 3, 2, 2, 3), _rand(gen, 2, 3, 7, 2, 3)  # 11 frames: 2 and 7

    def fused(x):
        slow, fast = ops.pathway_split(x, 1 / 4, 2 / 3, backend=backend)
        return (
            (slow * w_slow).sum()
            + (fast * w_fast).sum()
            + ops.temporal_resample(x, 2.5, backend=backend).sum()
        )

    def truth(x):
        slow, fast = reference.pathway_split(x, 1 / 4, 2 / 3)
        return (slow * w_slow).sum() + (fast * w_fast).sum() + reference.temporal_resample(x, 2.5).sum()

    leaf = clip.clone().requires_grad_()
    (want,) = torch.autograd.grad(truth(leaf), leaf)
    torch.testing.assert_close(torch.func.grad(fused)(clip), want, **TIGHT)
    _, pullback = torch.func.vjp(lambda x: ops.temporal_resample(x, 1 / 3, backend=backend), clip)
    upstream = _rand(gen, 2, 3, 3, 2, 3)
    _, want_pullback = torch.func.vjp(lambda x: reference.temporal_resample(x, 1 / 3), clip)
    torch.testing.assert_close(pullback(upstream)[0], want_pullback(upstream)[0], **TIGHT)


VMAP_LAYOUTS = [
    # (x_slow's in_dim, x_fast's in_dim, channels_last_3d)
    (0, 0, False),
    (1, 0, False),
    (None, 2, False),
    (0, None, False),
    (0, 0, True),
]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize(("d_slow", "d_fast", "channels_last"), VMAP_LAYOUTS)
def test_vmap_folds_the_batch_into_one_kernel_call(backend, d_slow, d_fast, channels_last):
    """vmap over the activations: one kernel call with B * N samples, the per-entry results."""
    size = 3
    x_slow, x_fast, weight, scale, shift = _lateral_inputs(6, batch=2)
    gen = torch.Generator().manual_seed(7)
    if channels_last:
        x_slow = x_slow.contiguous(memory_format=torch.channels_last_3d)
        x_fast = x_fast.contiguous(memory_format=torch.channels_last_3d)

    def batched(t, d):
        if d is None:
            return t
        entries = [
            t + 0.5 * torch.randn(t.shape, generator=gen, dtype=t.dtype).to(DEVICE) for _ in range(size)
        ]
        return torch.stack(entries, d)

    bs, bf = batched(x_slow, d_slow), batched(x_fast, d_fast)

    def fused(xs, xf):
        return ops.lateral_concat(xs, xf, weight, 3, 1, scale, shift, True, backend=backend)

    with _OpCalls() as mode:
        got = torch.func.vmap(fused, in_dims=(d_slow, d_fast))(bs, bf)
    assert mode.calls == [("lateral_concat", (size * 2, 3, 3, 3, 5))], mode.calls
    for b in range(size):
        xs = bs if d_slow is None else bs.select(d_slow, b)
        xf = bf if d_fast is None else bf.select(d_fast, b)
        torch.testing.assert_close(
            got[b], reference.lateral_concat(xs, xf, weight, 3, 1, scale, shift, True), **TIGHT
        )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_vmap_over_weights_runs_each_entry(backend):
    """An ensemble: batched weights and affines, shared activations; one kernel call per entry."""
    size = 2
    x_slow, x_fast, weight, scale, shift = _lateral_inputs(8)
    gen = torch.Generator().manual_seed(9)
    weights = torch.stack([weight, _rand(gen, *weight.shape)])
    shifts = torch.stack([shift, _rand(gen, *shift.shape)])

    def fused(w, sh):
        return ops.lateral_concat(x_slow, x_fast, w, 3, 1, scale, sh, False, backend=backend)

    with _OpCalls() as mode:
        got = torch.func.vmap(fused)(weights, shifts)
    assert [name for name, _ in mode.calls] == ["lateral_concat"] * size
    for b in range(size):
        want = reference.lateral_concat(x_slow, x_fast, weights[b], 3, 1, scale, shifts[b], False)
        torch.testing.assert_close(got[b], want, **TIGHT)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("in_dim", [0, 2])
def test_vmap_over_resampling(backend, in_dim):
    size = 3
    gen = torch.Generator().manual_seed(10)
    clips = (
        _rand(gen, 2, 3, 13, 2, 3).unsqueeze(in_dim).expand(*([-1] * in_dim), size, *([-1] * (5 - in_dim)))
    )
    clips = clips + _rand(gen, *clips.shape)
    with _OpCalls() as mode:
        slow, fast = torch.func.vmap(
            lambda x: ops.pathway_split(x, 1 / 8, 1 / 2, backend=backend), in_dims=in_dim
        )(clips)
        up = torch.func.vmap(lambda x: ops.temporal_resample(x, 1.5, backend=backend), in_dims=in_dim)(clips)
    assert mode.calls == [
        ("pathway_split", (size * 2, 3, 13, 2, 3)),
        ("temporal_resample", (size * 2, 3, 13, 2, 3)),
    ]
    for b in range(size):
        clip = clips.select(in_dim, b)
        assert torch.equal(slow[b], reference.temporal_resample(clip, 1 / 8))
        assert torch.equal(fast[b], reference.temporal_resample(clip, 1 / 2))
        assert torch.equal(up[b], reference.temporal_resample(clip, 1.5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transforms_over_channels_last_inputs(backend, dtype):
    """Per-sample gradients and vmap with channels_last_3d inputs (the layout ``to_channels_last_3d``
    gives the model): the reference set its output's memory format, which vmap cannot (NYI), and
    float64 resampling on the CPU gathers by index_select then does the same."""
    cl = torch.channels_last_3d
    x_slow, x_fast, weight, scale, shift = _lateral_inputs(11, batch=3)
    x_slow, x_fast = x_slow.to(dtype), x_fast.to(dtype)
    weight, scale, shift = weight.to(dtype), scale.to(dtype), shift.to(dtype)
    samples_slow = torch.stack([t[None].contiguous(memory_format=cl) for t in x_slow])
    samples_fast = torch.stack([t[None].contiguous(memory_format=cl) for t in x_fast])
    _assert_per_sample_weight_grads(backend, samples_slow, samples_fast, weight, scale, shift, True)
    clips = torch.stack(
        [_rand(torch.Generator().manual_seed(i), 1, 2, 65, 2, 3, dtype=dtype) for i in range(2)]
    )
    clips = torch.stack([c.contiguous(memory_format=cl) for c in clips])
    resampled = torch.func.vmap(lambda c: ops.temporal_resample(c, 6 / 7, backend=backend))(clips)
    grads = torch.func.vmap(
        torch.func.grad(lambda c: ops.temporal_resample(c, 6 / 7, backend=backend).sum())
    )(clips)
    for i in range(2):
        assert torch.equal(resampled[i], reference.temporal_resample(clips[i], 6 / 7))
        leaf = clips[i].clone().requires_grad_()
        (want,) = torch.autograd.grad(reference.temporal_resample(leaf, 6 / 7).sum(), leaf)
        assert torch.equal(grads[i], want)
