"""NaN and infinities through lateral_concat's ReLU, on every backend that runs on the CPU.

The reference applies torch.relu, which keeps NaN (relu(nan) = nan, relu(inf) = inf, relu(-inf) = 0)
and whose backward (threshold_backward) zeroes the gradient only where the output is <= 0: where
the output is NaN the gradient passes. A kernel that writes ``v > 0 ? v : 0`` (or Triton's
``tl.maximum``, which returns the number for a NaN operand) maps NaN to 0, and a backward mask of
``out > 0`` blocks the gradient there: both hide diverging activations, so the kernels must do
neither.

The inputs are poisoned so that some lateral pre-activations are NaN, +inf and -inf:

* ``x_fast``: a NaN (NaN at every lateral channel of the pixels whose windows read it); +inf and -inf
  at one position of two channels (NaN where the two channels' weights have the same sign, else
  +-inf); a lone +inf and a lone -inf (+-inf by the weights' signs, so relu gives inf or 0).
* ``weight``: a NaN at the centre tap of one lateral channel (k = 2 * padding + 1, so that tap always
  reads a real frame): that channel is NaN everywhere. A NaN at a tap that can land in the temporal
  padding is left out: PyTorch's conv multiplies the padding's zeros (0 * NaN = NaN) where the
  kernels skip those taps, a difference that has nothing to do with ReLU.

Checks: NaN, +inf and -inf at the same positions as the fp64 reference, in the forward output and
in every gradient; the finite values within the bounds of the backend's own test file:
test_cuda_kernels.py's for the CPU kernels, the emulated CUDA kernels and the reference (fp32: 1e-5
of the largest finite magnitude, or absolute below 1; bf16: twice PyTorch's own bf16 error, at least
two epsilons), test_triton_kernels.py's for Triton (twice PyTorch's own error plus 4 ulps of the
largest). The gradients' truth is the fp64 reference without ReLU given ``grad_out`` masked where
the kernel's own output is <= 0 (as test_cuda_kernels.py does: where a pre-activation rounds across
zero the fp64 mask may differ from the one the kernel ran with); at the NaN positions, equal to the
reference's by the forward check, that mask passes the gradient, as torch.relu's backward does.
"""

from __future__ import annotations

import pytest
import torch

from slowfast_fast import _extension, backend, ops, reference
from slowfast_fast._layout import output_memory_format

CL = torch.channels_last_3d
NC = torch.contiguous_format
EPS = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}

# (N, C_slow, C_fast, C_lat, T_fast, H, W, k, stride, padding); k = 2 * padding + 1 (see above).
# H*W = 16 and C_lat = 16: whole 8- and 16-lane vectors for the CPU's SIMD kernel in both layouts.
CPU_SHAPE = (2, 3, 5, 16, 12, 4, 4, 3, 2, 1)
# Tiny for Triton's interpreter; still two samples, odd channels and frames.
TRITON_SHAPE = (2, 2, 3, 5, 9, 3, 2, 3, 2, 1)

POISONS = ("x_fast", "weight")


def _out_len(t_fast, k, s, p):
    return (t_fast + 2 * p - k) // s + 1


def poisoned_inputs(shape, dtype, fmt, poison, device="cpu", seed=0):
    """(x_slow, x_fast, weight, stride, padding, scale, shift) with NaN/inf planted per ``poison``,
    and grad_out; finite values random (fp64 rounded to ``dtype``)."""
    n, c_s, c_f, c_l, t_f, h, w, k, s, p = shape
    assert k == 2 * p + 1 and c_f >= 3 and h * w >= 4
    t_s = _out_len(t_f, k, s, p)
    assert s * (t_s - 1) < t_f and t_s >= 3
    gen = torch.Generator().manual_seed(seed)

    def rand(*size):
        return torch.randn(*size, generator=gen, dtype=torch.float64).to(dtype)

    x_slow = rand(n, c_s, t_s, h, w)
    x_fast = rand(n, c_f, t_f, h, w)
    weight = rand(c_l, c_f, k, 1, 1)
    scale = (torch.randn(c_l, generator=gen, dtype=torch.float64).abs() + 0.5).to(dtype)
    shift = rand(c_l)
    grad_out = rand(n, c_s + c_l, t_s, h, w)
    nan, inf = float("nan"), float("inf")
    last = n - 1
    if poison == "x_fast":
        # Fast frame s * to is read by output frame to's centre tap (and by neighbours' other taps).
        x_fast[0, 1, s, 0, 1] = nan
        x_fast[last, 0, 2 * s, 1 // w, 1 % w] = inf  # with the -inf below: inf - inf = NaN or +-inf
        x_fast[last, 2, 2 * s, 1 // w, 1 % w] = -inf
        x_fast[0, 0, 0, h - 1, w - 1] = inf
        x_fast[last, c_f - 1, s * (t_s - 1), h - 1, w - 1] = -inf
    else:
        weight[c_l // 2, c_f - 1, p] = nan
    fmt_t = [t.contiguous(memory_format=fmt).to(device) for t in (x_slow, x_fast, grad_out)]
    x_slow, x_fast, grad_out = fmt_t
    inputs = (x_slow, x_fast, weight.to(device), s, p, scale.to(device), shift.to(device))
    return inputs, grad_out


def relu_mask(grad_out, out, c_slow):
    """grad_out with its lateral channels zeroed where ``out`` <= 0: torch.relu's backward (which
    passes the gradient where out is NaN)."""
    grad = grad_out.clone()
    grad[:, c_slow:] = torch.where(out[:, c_slow:] <= 0, torch.zeros_like(grad[:, c_slow:]), grad[:, c_slow:])
    return grad


def _cast(t, dtype):
    return t.detach().to(dtype) if isinstance(t, torch.Tensor) else t


def reference_grads(inputs, grad_out, dtype):
    """Grads of the reference without ReLU, in ``dtype``, for x_slow, x_fast, weight, scale, shift."""
    leaves = [_cast(t, dtype) for t in inputs]
    tensors = [leaves[i].requires_grad_(True) for i in (0, 1, 2, 5, 6)]
    out = reference.lateral_concat(*leaves[:5], leaves[5], leaves[6], False)
    return torch.autograd.grad(out, tensors, grad_out.to(dtype))


def assert_matches(got, same, truth, dtype, what, triton_rule=False):
    """``got`` has NaN, +inf and -inf exactly where the fp64 ``truth`` has them, and its finite
    values within the bound of test_cuda_kernels.py, or with ``triton_rule`` test_triton_kernels.py's
    (``same``: PyTorch's result in ``dtype``)."""
    assert got.shape == truth.shape and got.dtype == dtype, what
    got, truth = got.detach().cpu().double(), truth.detach().cpu()
    for kind in (torch.isnan, torch.isposinf, torch.isneginf):
        wrong = (kind(got) != kind(truth)).sum().item()
        assert wrong == 0, f"{what}: {wrong} positions differ in {kind.__name__}"
    finite = torch.isfinite(truth)

    largest = torch.where(finite, truth, torch.zeros_like(truth)).abs().max().item()

    def abs_err(t):
        t = t.detach().cpu().double()
        ok = finite & torch.isfinite(t)
        return torch.where(ok, t - truth, torch.zeros_like(truth)).abs().max().item()

    if triton_rule:  # twice PyTorch's own error plus 4 ulps of the largest output
        bound = 2.0 * abs_err(same) + 4 * torch.finfo(dtype).eps * largest
        assert abs_err(got) <= bound, f"{what}: error {abs_err(got):.3e} > {bound:.3e}"
        return
    # relative to the largest output, or absolute below 1
    rel = max(largest, 1.0)
    bound = 1e-5 if dtype == torch.float32 else max(2.0 * abs_err(same) / rel, 2.0 * EPS[dtype])
    assert abs_err(got) / rel <= bound, f"{what}: error {abs_err(got) / rel:.3e} > {bound:.3e}"


def check_relu_nan(inputs, grad_out, dtype, run, check_layout=True, triton_rule=False):
    """``run(leaves, relu)`` is the op under test, given leaves that require grad; checks its forward
    output and every gradient against the reference (and the output's memory format with
    ``check_layout``; ``triton_rule``: see :func:`assert_matches`)."""
    c_slow = inputs[0].shape[1]
    leaves = [t.detach().requires_grad_(True) if isinstance(t, torch.Tensor) else t for t in inputs]
    tensors = [leaves[i] for i in (0, 1, 2, 5, 6)]
    out = run(leaves, True)
    grads = torch.autograd.grad(out, tensors, grad_out)
    out = out.detach()

    truth = reference.lateral_concat(*(_cast(t, torch.float64) for t in inputs), True)
    same = reference.lateral_concat(*(_cast(t, dtype) for t in inputs), True)
    assert torch.isnan(truth[:, c_slow:]).any(), "no NaN reached the ReLU"
    if check_layout:
        assert out.is_contiguous(memory_format=output_memory_format(inputs[0]))
    assert torch.equal(out[:, :c_slow], inputs[0])
    assert_matches(out, same, truth, dtype, "out", triton_rule)

    masked = relu_mask(grad_out, out, c_slow)
    want = reference_grads(inputs, masked, torch.float64)
    want_same = reference_grads(inputs, masked, dtype)
    names = ("x_slow", "x_fast", "weight", "scale", "shift")
    for name, got, same_g, truth_g in zip(names, grads, want_same, want, strict=True):
        assert_matches(got, same_g, truth_g, dtype, f"grad {name}", triton_rule)


def check_backward_nan(inputs, grad_out, dtype, backward, triton_rule=False):
    """The backward's ReLU mask alone: ``backward(grad_out, x_fast, weight, scale, out, stride,
    padding)`` gives (grad_x_fast, grad_weight, grad_scale, grad_shift) for ``out`` the reference's own
    forward output (NaN included), checked as :func:`check_relu_nan` checks the gradients."""
    x_slow, x_fast, weight, s, p, scale, _ = inputs
    out = reference.lateral_concat(*inputs, True)
    assert torch.isnan(out).any()
    got = backward(grad_out, x_fast, weight, scale, out, s, p)
    masked = relu_mask(grad_out, out, x_slow.shape[1])
    want = reference_grads(inputs, masked, torch.float64)[1:]
    want_same = reference_grads(inputs, masked, dtype)[1:]
    names = ("x_fast", "weight", "scale", "shift")
    for name, g, same_g, truth_g in zip(names, got, want_same, want, strict=True):
        assert_matches(g, same_g, truth_g, dtype, f"grad {name}", triton_rule)


def cpu_backward(*args):
    """The compiled library's two gradient ops (CPU or CUDA, by the tensors' device)."""
    ops_ = torch.ops.slowfast_fast
    return (ops_.lateral_concat_grad_input(*args), *ops_.lateral_concat_grad_weight(*args))


def _triton_device():
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not backend.usable("triton", torch.device(device))[0]:
        pytest.skip("the triton backend is not usable here")
    return device


DTYPES = [torch.float32, torch.bfloat16]
FORMATS = [pytest.param(NC, id="ncdhw"), pytest.param(CL, id="ndhwc")]


def test_relu_keeps_nan_and_signed_zero():
    """What the kernels must match: torch.relu keeps NaN and -0.0, and its backward passes the
    gradient at NaN and blocks it at -0.0 and 0."""
    x = torch.tensor([float("nan"), -0.0, 0.0, -1.0, float("inf"), float("-inf"), 2.0], requires_grad=True)
    y = torch.relu(x)
    assert torch.isnan(y[0]) and torch.equal(y[1:].signbit(), torch.tensor([True] + [False] * 5))
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert grad.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("shape", [CPU_SHAPE, TRITON_SHAPE])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_poison_reaches_the_relu(shape, dtype):
    """The planted values give NaN, +inf and -inf pre-activations (x_fast) and a lateral channel that
    is NaN everywhere (weight), so the ReLU sees each kind."""
    c_slow = shape[1]
    inputs, _ = poisoned_inputs(shape, dtype, NC, "x_fast")
    pre = reference.lateral_concat(*(_cast(t, torch.float64) for t in inputs), False)[:, c_slow:]
    assert torch.isnan(pre).any() and torch.isposinf(pre).any() and torch.isneginf(pre).any()
    inputs, _ = poisoned_inputs(shape, dtype, NC, "weight")
    pre = reference.lateral_concat(*(_cast(t, torch.float64) for t in inputs), False)[:, c_slow:]
    assert torch.isnan(pre).all(dim=0).all(dim=(1, 2, 3)).any()


@pytest.mark.skipif(not _extension.has_kernels("CPU"), reason="slowfast_fast._C built without CPU kernels")
@pytest.mark.parametrize("path", ["simd", "blas"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("poison", POISONS)
def test_cpu(path, dtype, fmt, poison, monkeypatch):
    monkeypatch.setenv("SLOWFAST_FAST_CPU_LATERAL", path)
    inputs, grad_out = poisoned_inputs(CPU_SHAPE, dtype, fmt, poison)
    check_relu_nan(inputs, grad_out, dtype, lambda a, relu: ops.lateral_concat(*a, relu, backend="cpu"))


@pytest.mark.skipif(not _extension.has_kernels("CPU"), reason="slowfast_fast._C built without CPU kernels")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("poison", POISONS)
def test_cpu_backward(dtype, fmt, poison):
    inputs, grad_out = poisoned_inputs(CPU_SHAPE, dtype, fmt, poison)
    check_backward_nan(inputs, grad_out, dtype, cpu_backward)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("poison", POISONS)
def test_triton_backward(dtype, fmt, poison):
    """The fused backward op that the Triton backend's autograd formula calls."""
    inputs, grad_out = poisoned_inputs(TRITON_SHAPE, dtype, fmt, poison, device=_triton_device())

    def backward(*args):
        return torch.ops.slowfast_fast_triton.lateral_concat_backward(*args, True, True)

    check_backward_nan(inputs, grad_out, dtype, backward, triton_rule=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("poison", POISONS)
def test_triton(dtype, fmt, poison):
    inputs, grad_out = poisoned_inputs(TRITON_SHAPE, dtype, fmt, poison, device=_triton_device())
    check_relu_nan(
        inputs,
        grad_out,
        dtype,
        lambda a, relu: ops.lateral_concat(*a, relu, backend="triton"),
        triton_rule=True,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("poison", POISONS)
def test_reference_backend(dtype, fmt, poison):
    """The public op on the reference backend is the reference itself (whose bf16 conv returns
    NCDHW from channels_last_3d inputs: the layout is not checked here)."""
    inputs, grad_out = poisoned_inputs(CPU_SHAPE, dtype, fmt, poison)
    check_relu_nan(
        inputs,
        grad_out,
        dtype,
        lambda a, relu: ops.lateral_concat(*a, relu, backend="reference"),
        check_layout=False,
    )
