"""How the public ``lateral_concat`` reaches the CPU kernels: the direct call below the autograd
layer (only when nothing can observe the difference) and ``auto``'s measured CPU rule."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import slowfast_fast
from slowfast_fast import _extension, backend, reference

lateral_module = importlib.import_module("slowfast_fast.ops.lateral_concat")

pytestmark = pytest.mark.skipif(
    not _extension.has_kernels("CPU"), reason="slowfast_fast._C built without CPU kernels"
)


def _inputs(dtype=torch.float32, fmt=torch.contiguous_format, grad=False):
    gen = torch.Generator().manual_seed(3)
    x_slow = torch.randn(2, 6, 4, 5, 3, generator=gen).to(dtype).contiguous(memory_format=fmt)
    x_fast = torch.randn(2, 3, 32, 5, 3, generator=gen).to(dtype).contiguous(memory_format=fmt)
    weight = torch.randn(6, 3, 5, 1, 1, generator=gen).to(dtype)
    for t in (x_slow, x_fast, weight):
        t.requires_grad_(grad)
    return x_slow, x_fast, weight, 8, 2


def test_plain_inputs_take_the_direct_call_and_match_the_reference():
    args = _inputs()
    assert lateral_module._direct_call(*args[:3], None, None)
    out = slowfast_fast.lateral_concat(*args, backend="cpu")
    torch.testing.assert_close(out, reference.lateral_concat(*args), rtol=1e-5, atol=1e-5)


def test_inference_mode_tensors_take_the_direct_call():
    with torch.inference_mode():
        args = _inputs()
        assert lateral_module._direct_call(*args[:3], None, None)
        out = slowfast_fast.lateral_concat(*args, backend="cpu")
        torch.testing.assert_close(out, reference.lateral_concat(*args), rtol=1e-5, atol=1e-5)


def test_inputs_needing_grad_go_through_autograd():
    args = _inputs(grad=True)
    assert not lateral_module._direct_call(*args[:3], None, None)
    out = slowfast_fast.lateral_concat(*args, backend="cpu")
    assert out.grad_fn is not None
    out.square().sum().backward()
    ref_args = [a.detach().clone().requires_grad_() if torch.is_tensor(a) else a for a in args]
    reference.lateral_concat(*ref_args).square().sum().backward()
    for ours, ref in zip(args[:3], ref_args[:3], strict=True):
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        assert lateral_module._direct_call(*args[:3], None, None)


def test_a_dispatch_mode_still_sees_the_op():
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    args = _inputs()
    with Record():
        slowfast_fast.lateral_concat(*args, backend="cpu")
    assert "slowfast_fast.lateral_concat.default" in seen


def test_torchscript_tracing_records_the_op():
    """The ONNX TorchScript exporter traces: a direct call would leave the op out of the graph."""
    args = _inputs()
    traced = torch.jit.trace(
        lambda xs, xf, w: slowfast_fast.lateral_concat(xs, xf, w, 8, 2, backend="cpu"), args[:3]
    )
    assert "slowfast_fast::lateral_concat" in str(traced.graph)


def test_fake_tensors_do_not_reach_the_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        args = _inputs()
        out = slowfast_fast.lateral_concat(*args, backend="cpu")
    assert out.shape == (2, 12, 4, 5, 3)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last_3d])
def test_auto_runs_the_reference_for_bf16_on_cpus_with_native_bf16(fmt, monkeypatch):
    args = _inputs(torch.bfloat16, fmt)  # k*C_fast = 15 on 15-pixel frames: the kernels win
    monkeypatch.setattr(backend, "_CPU_FLAGS", frozenset({"avx512f", "avx512_bf16"}))
    assert backend.resolve_lateral_concat(*args[:3], 4) == "cpu"
    wide = torch.randn(6, 128, 7, 1, 1).bfloat16()  # k*C_fast = 896: the reference wins
    x_fast = torch.randn(2, 128, 32, 5, 3).bfloat16().contiguous(memory_format=fmt)
    args = (args[0], x_fast, wide)
    assert backend.resolve_lateral_concat(*args[:3], 4) == "reference"
    assert lateral_module._fast_route(*args, 4, 3, None, None, False, None) == "reference"
    assert backend.resolve_lateral_concat(*args[:3], 4, backend="cpu") == "cpu"  # an explicit choice stands
    with backend.use_backend("cpu"):
        assert backend.resolve_lateral_concat(*args[:3], 4) == "cpu"
    fp32 = _inputs(torch.float32, fmt)
    assert backend.resolve_lateral_concat(*fp32[:3], 8) == "cpu"
    # k = 7 < stride 8: the family where PyTorch's bf16 conv3d gave NaN or crashed; k >= stride is not
    assert backend.reference_bf16_conv_unsafe(7, 8) and backend.reference_bf16_conv_unsafe(3, 4)
    assert not backend.reference_bf16_conv_unsafe(7, 4) and not backend.reference_bf16_conv_unsafe(5, 5)
    assert backend.resolve_lateral_concat(*args[:3], 8) == "cpu"
    assert lateral_module._fast_route(*args, 8, 3, None, None, False, None) == "cpu"
    thin = torch.randn(6, 128, 3, 1, 1).bfloat16()  # k = 3 at stride 4, 896 -> 384 reduction: unsafe
    assert backend.resolve_lateral_concat(args[0], x_fast, thin, 4) == "cpu"
    monkeypatch.setattr(backend, "_CPU_FLAGS", frozenset({"avx512f"}))
    assert backend.resolve_lateral_concat(*args[:3], 4) == "cpu"


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last_3d])
def test_auto_keeps_a_4x16_bf16_lateral_off_pytorchs_conv(fmt, monkeypatch):
    """R50 4x16's layer1 lateral at the bench's CPU size (32 -> 64 channels, k=5, stride 8, 14x14
    frames) in bf16: PyTorch's bf16 conv3d returned NaN there on an AMX Xeon (torch 2.14.1), and ``auto``
    sent channels_last_3d calls to it (the reference measured faster). No bf16 conv3d may run now, and
    the result is the fp32 computation's, rounded."""
    import torch.nn.functional as F

    monkeypatch.setattr(backend, "_CPU_FLAGS", frozenset({"avx512f", "avx512_bf16"}))
    real_conv3d = F.conv3d

    def no_bf16_conv(input, *args, **kwargs):
        assert input.dtype is not torch.bfloat16, "a bf16 conv3d ran"
        return real_conv3d(input, *args, **kwargs)

    monkeypatch.setattr(F, "conv3d", no_bf16_conv)
    g = torch.Generator().manual_seed(0)
    x_slow = torch.randn(2, 64, 4, 14, 14, generator=g).bfloat16().contiguous(memory_format=fmt)
    x_fast = torch.randn(2, 32, 32, 14, 14, generator=g).bfloat16().contiguous(memory_format=fmt)
    weight = (torch.randn(64, 32, 5, 1, 1, generator=g) * 0.1).bfloat16()
    assert backend.resolve_lateral_concat(x_slow, x_fast, weight, 8) == "cpu"
    out = slowfast_fast.lateral_concat(x_slow, x_fast, weight, 8, 2)
    truth = reference.lateral_concat(x_slow.float(), x_fast.float(), weight.float(), 8, 2)
    # One bf16 rounding of fp32 sums: half an ulp, 2^-9 of the largest output, with room for the sums.
    assert (out.float() - truth).abs().max() <= 2.0**-8 * truth.abs().max()


@pytest.mark.parametrize(
    "channels_last,reduction,pixels,kernels",
    [
        (False, 160, 3136, True),  # NCDHW: thin laterals win at any frame size
        (False, 320, 49, True),  # 320 only on small frames
        (False, 320, 784, False),
        (False, 224, 196, False),
        (True, 40, 196, True),  # channels_last_3d: the stem on small frames only
        (True, 40, 3136, False),
        (True, 160, 196, False),
    ],
)
def test_bf16_rule_boxes(channels_last, reduction, pixels, kernels, monkeypatch):
    monkeypatch.setattr(backend, "_CPU_FLAGS", frozenset({"avx512f", "avx512_bf16"}))
    assert backend.cpu_lateral_beats_reference(torch.bfloat16, channels_last, reduction, pixels) is kernels
    assert backend.cpu_lateral_beats_reference(torch.float32, channels_last, reduction, pixels)


def test_auto_result_is_the_same_function_whichever_backend_runs():
    args = _inputs(torch.bfloat16)
    out = slowfast_fast.lateral_concat(*args)
    ref = reference.lateral_concat(*args)
    truth = reference.lateral_concat(*(a.double() if torch.is_tensor(a) else a for a in args))
    err = (out.double() - truth).abs().max().item()
    bound = max(
        2 * (ref.double() - truth).abs().max().item(),
        torch.finfo(torch.bfloat16).eps * truth.abs().max().item(),
    )
    assert err <= bound


def test_cpu_flags_are_read_from_linux():
    flags = backend._cpu_flags()
    assert isinstance(flags, frozenset)
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            has_flags_line = any(line.startswith("flags") for line in info)
    except OSError:
        has_flags_line = False
    assert bool(flags) == has_flags_line


def test_fast_path_raises_the_documented_errors():
    """The direct call lets the kernel check shapes; its failures are re-raised as the Python checks'
    messages (the same as every other backend's)."""
    x_slow, x_fast, weight, s, p = _inputs()
    assert lateral_module._fast_route(x_slow, x_fast, weight, s, p, None, None, False, None) == "cpu"
    with pytest.raises(RuntimeError, match="H/W mismatch"):
        slowfast_fast.lateral_concat(x_slow, x_fast[..., :2], weight, s, p)
    with pytest.raises(RuntimeError, match="padding must be in"):
        slowfast_fast.lateral_concat(x_slow, x_fast, weight, s, 5)
    with pytest.raises(TypeError, match="stride must be an int"):
        slowfast_fast.lateral_concat(x_slow, x_fast, weight, True, p)


def test_fast_route_to_the_reference_checks_shapes_and_matches_it(monkeypatch):
    """bf16 where auto's rule picks the reference: the short route runs the shape checks, then the
    reference itself."""
    monkeypatch.setattr(backend, "_CPU_FLAGS", frozenset({"avx512f", "avx512_bf16"}))
    gen = torch.Generator().manual_seed(5)
    x_slow = torch.randn(2, 6, 8, 5, 3, generator=gen).bfloat16()
    x_fast = torch.randn(2, 64, 32, 5, 3, generator=gen).bfloat16()  # k*C_fast = 448: the reference
    weight = torch.randn(6, 64, 7, 1, 1, generator=gen).bfloat16()  # k = 7 >= stride 4 (8x8's lateral)
    assert lateral_module._fast_route(x_slow, x_fast, weight, 4, 3, None, None, False, None) == "reference"
    out = slowfast_fast.lateral_concat(x_slow, x_fast, weight, 4, 3)
    assert torch.equal(out, reference.lateral_concat(x_slow, x_fast, weight, 4, 3))
    with pytest.raises(RuntimeError, match="H/W mismatch"):
        slowfast_fast.lateral_concat(x_slow, x_fast[..., :2], weight, 4, 3)
    with pytest.raises(RuntimeError, match="padding must be in"):
        slowfast_fast.lateral_concat(x_slow, x_fast, weight, 4, 7)


def test_fast_path_is_not_taken_where_it_would_change_meaning():
    x_slow, x_fast, weight, s, p = _inputs()
    fast = lateral_module._fast_route
    assert fast(x_slow, x_fast, weight, s, p, None, None, False, "reference") is None
    assert fast(x_slow, x_fast, weight, float(s), p, None, None, False, None) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x_slow, x_fast, weight, s, p, None, None, False, None) is None
    with backend.use_backend("reference"):
        assert fast(x_slow, x_fast, weight, s, p, None, None, False, None) is None

    def inside_vmap(x):
        assert not lateral_module._direct_call(x_slow, x_fast, weight, None, None)
        return x

    torch.func.vmap(inside_vmap)(torch.randn(3, 2))
