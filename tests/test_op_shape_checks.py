"""Every backend's kernels reject bad shapes themselves, called through ``torch.ops`` directly.

Issue 9, defect 7: the CUDA kernel checked the conv's output length with C++'s truncating division,
``(t_fast + 2p - k) / s + 1``, so with ``t_fast + 2p < k`` (a negative numerator) a direct call
passed the check and the kernel read outside x_fast. The Python wrappers validate first, but
``torch.ops.slowfast_fast.*`` and ``torch.ops.slowfast_fast_triton.*`` are reachable too, so every
kernel must check what the Python validation checks (the Triton launchers run it once per launch
plan). The CPU kernels and the Triton kernels (under the interpreter) run here; the CUDA kernels and
Triton on CUDA tensors on a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch

from slowfast_fast import _extension
from slowfast_fast.ops import _triton_ops

# target -> (op namespace, device)
TARGETS = {
    "cpu": (torch.ops.slowfast_fast, "cpu"),
    "cuda": (torch.ops.slowfast_fast, "cuda"),
    "triton-cpu": (torch.ops.slowfast_fast_triton, "cpu"),
    "triton-cuda": (torch.ops.slowfast_fast_triton, "cuda"),
}

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda),
    pytest.param("triton-cpu", id="triton-cpu"),
    pytest.param("triton-cuda", id="triton-cuda", marks=pytest.mark.cuda),
]


@pytest.fixture(autouse=True)
def _needs_kernels(request):
    target = request.node.callspec.params["device"]
    device = TARGETS[target][1]
    if target.startswith("triton"):
        if _triton_ops.LOAD_ERROR is not None:
            pytest.skip(f"no Triton backend: {_triton_ops.LOAD_ERROR}")
        if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("Triton runs on CPU tensors only under TRITON_INTERPRET=1 (set without a GPU)")
        return
    if not _extension.has_kernels(device.upper()):
        if device == "cuda" and torch.cuda.is_available():
            pytest.fail("slowfast_fast._C was built without CUDA kernels on a GPU machine")
        pytest.skip(f"slowfast_fast._C has no {device} kernels here")


def _ops(target):
    return TARGETS[target][0]


def _randn(*shape, device):
    return torch.randn(*shape).to(TARGETS[device][1])


def _lateral(device, t_slow, t_fast, k, stride, padding, c_lat=4):
    """(x_slow, x_fast, weight, stride, padding) of a small lateral with the given geometry."""
    x_slow = _randn(1, 3, t_slow, 2, 3, device=device)
    x_fast = _randn(1, 2, t_fast, 2, 3, device=device)
    weight = _randn(c_lat, 2, k, 1, 1, device=device)
    return x_slow, x_fast, weight, stride, padding


# (t_slow, t_fast, k, stride, padding, message): each is rejected by the Python validation too.
BAD_GEOMETRY = [
    # t_fast + 2p - k = -2: truncating division made this 1 frame, matching t_slow = 1.
    pytest.param(1, 1, 5, 8, 1, "empty temporal output|lateral conv", id="negative-numerator"),
    pytest.param(1, 2, 7, 4, 2, "empty temporal output|lateral conv", id="negative-numerator-k7"),
    pytest.param(3, 16, 5, 8, 2, "lateral conv", id="wrong-t-slow"),
    pytest.param(4, 16, 5, 4, 5, "padding", id="padding-not-below-k"),
    pytest.param(2, 16, 5, 0, 2, "stride", id="zero-stride"),
]


# (x_fast shape, weight shape, x_slow H, message): only the batch and C_slow may be 0.
ZERO_SIZES = [
    pytest.param((1, 0, 16, 2, 3), (4, 0, 5, 1, 1), 2, "needs channels", id="no-fast-channels"),
    pytest.param((1, 2, 16, 2, 3), (0, 2, 5, 1, 1), 2, "needs channels", id="no-lateral-channels"),
    pytest.param((1, 2, 0, 2, 3), (4, 2, 5, 1, 1), 2, "no frames", id="no-fast-frames"),
    pytest.param((1, 2, 16, 0, 3), (4, 2, 5, 1, 1), 0, "must have pixels", id="no-pixels"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fast_shape,weight_shape,h,message", ZERO_SIZES)
def test_lateral_concat_rejects_zero_sizes(device, fast_shape, weight_shape, h, message):
    """A conv over no channels, frames or pixels: the reference (F.conv3d) raises, so the kernels must
    too (the CPU kernel returned tensors)."""
    x_slow = _randn(1, 3, 4, h, 3, device=device)
    x_fast = _randn(*fast_shape, device=device)
    weight = _randn(*weight_shape, device=device)
    with pytest.raises(RuntimeError, match=message):
        _ops(device).lateral_concat(x_slow, x_fast, weight, 4, 2, None, None, False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("t_slow,t_fast,k,stride,padding,message", BAD_GEOMETRY)
def test_lateral_concat_rejects_bad_geometry(device, t_slow, t_fast, k, stride, padding, message):
    args = _lateral(device, t_slow, t_fast, k, stride, padding)
    with pytest.raises(RuntimeError, match=message):
        _ops(device).lateral_concat(*args, None, None, False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("t_slow,t_fast,k,stride,padding,message", BAD_GEOMETRY)
@pytest.mark.parametrize("op", ["lateral_concat_grad_input", "lateral_concat_grad_weight"])
def test_lateral_gradients_reject_bad_geometry(device, t_slow, t_fast, k, stride, padding, message, op):
    """The gradient ops take T_slow from grad_out, so the same geometry check must guard them."""
    x_slow, x_fast, weight, stride, padding = _lateral(device, t_slow, t_fast, k, stride, padding)
    grad_out = _randn(1, 3 + weight.shape[0], t_slow, 2, 3, device=device)
    with pytest.raises(RuntimeError, match=message):
        getattr(_ops(device), op)(grad_out, x_fast, weight, None, None, stride, padding)


@pytest.mark.parametrize("device", DEVICES)
def test_lateral_ops_accept_the_good_geometry(device):
    """The geometry next to the bad ones above passes the same checks (the checks are not just
    rejecting everything): k=5, stride 8, padding 2 turns 16 fast frames into 2."""
    x_slow, x_fast, weight, stride, padding = _lateral(device, 2, 16, 5, 8, 2)
    out = _ops(device).lateral_concat(x_slow, x_fast, weight, stride, padding, None, None, False)
    expected = torch.cat(
        (x_slow, torch.nn.functional.conv3d(x_fast, weight, stride=(8, 1, 1), padding=(2, 0, 0))), 1
    )
    # fp32 sums of 10 products (TF32 would be ~1e-3 on CUDA; the default fixture does not disable it).
    torch.testing.assert_close(out, expected, rtol=2e-3, atol=2e-3)
    grad_x = _ops(device).lateral_concat_grad_input(out, x_fast, weight, None, None, stride, padding)
    assert grad_x.shape == x_fast.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "make,message",
    [
        pytest.param(lambda w, d: _randn(w.shape[0] + 1, device=d), "scale", id="scale-length"),
        pytest.param(lambda w, d: _randn(w.shape[0], 1, device=d), "scale", id="scale-2d"),
        pytest.param(lambda w, d: _randn(w.shape[0], device=d).double(), "scale", id="scale-dtype"),
    ],
)
def test_lateral_concat_rejects_bad_scale(device, make, message):
    x_slow, x_fast, weight, stride, padding = _lateral(device, 2, 16, 5, 8, 2)
    with pytest.raises(RuntimeError, match=message):
        scale = make(weight, device)
        _ops(device).lateral_concat(x_slow, x_fast, weight, stride, padding, scale, None, False)


@pytest.mark.parametrize("device", DEVICES)
def test_lateral_concat_rejects_mismatched_pixels_and_weight(device):
    x_slow, x_fast, weight, stride, padding = _lateral(device, 2, 16, 5, 8, 2)
    with pytest.raises(RuntimeError, match="H, W|N, H, W|must match|H/W mismatch"):
        _ops(device).lateral_concat(x_slow[..., :2], x_fast, weight, stride, padding, None, None, False)
    with pytest.raises(RuntimeError, match="weight"):
        _ops(device).lateral_concat(x_slow, x_fast, weight[:, :1], stride, padding, None, None, False)


@pytest.mark.parametrize("device", DEVICES)
def test_resample_ops_reject_bad_scales_and_lengths(device):
    x = _randn(1, 2, 4, 3, 3, device=device)
    for bad in (0.0, -0.5, float("inf"), float("nan")):
        with pytest.raises(RuntimeError, match="scale"):
            _ops(device).temporal_resample(x, bad)
    # 4 frames at scale 1/8 give floor(0.5) = 0 frames.
    with pytest.raises(RuntimeError, match="empty temporal output"):
        _ops(device).temporal_resample(x, 0.125)
    with pytest.raises(RuntimeError, match="empty temporal output"):
        _ops(device).pathway_split(x, 0.125, 1.0)
    # grad_out must have floor(t_in * scale) frames: 8 * 0.5 = 4, not 3.
    with pytest.raises(RuntimeError, match="grad_out has 3"):
        _ops(device).temporal_resample_backward(_randn(1, 2, 3, 3, 3, device=device), 8, 0.5)
    with pytest.raises(RuntimeError, match="t_in|empty temporal output"):
        _ops(device).temporal_resample_backward(_randn(1, 2, 0, 3, 3, device=device), -1, 0.5)
    with pytest.raises(RuntimeError, match="5-D"):
        _ops(device).temporal_resample(x[0], 0.5)


# (x shape): no channels, no rows, no columns. F.interpolate (the reference) refuses each, also where
# the result would be the input; the kernels returned empty tensors.
EMPTY_FRAMES = [
    pytest.param((2, 0, 8, 3, 3), id="no-channels"),
    pytest.param((2, 3, 8, 0, 3), id="no-rows"),
    pytest.param((2, 3, 8, 3, 0), id="no-columns"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", EMPTY_FRAMES)
def test_resample_ops_reject_frames_without_channels_or_pixels(device, shape):
    x = _randn(*shape, device=device)
    with pytest.raises(RuntimeError, match="needs channels and pixels"):
        _ops(device).temporal_resample(x, 0.5)
    with pytest.raises(RuntimeError, match="needs channels and pixels"):
        _ops(device).pathway_split(x, 0.25, 1.0)
    grad_out = _randn(shape[0], shape[1], 4, shape[3], shape[4], device=device)
    with pytest.raises(RuntimeError, match="needs channels and pixels"):
        _ops(device).temporal_resample_backward(grad_out, 8, 0.5)


@pytest.mark.parametrize("device", DEVICES)
def test_resample_ops_accept_an_empty_batch(device):
    """The batch alone may be 0, as in F.interpolate."""
    x = _randn(0, 3, 8, 3, 3, device=device)
    assert _ops(device).temporal_resample(x, 0.5).shape == (0, 3, 4, 3, 3)
    slow, fast = _ops(device).pathway_split(x, 0.25, 1.0)
    assert slow.shape == (0, 3, 2, 3, 3) and fast.shape == (0, 3, 8, 3, 3)
    grad_x = _ops(device).temporal_resample_backward(_randn(0, 3, 4, 3, 3, device=device), 8, 0.5)
    assert grad_x.shape == x.shape


TRITON_TARGETS = [p for p in DEVICES if p.values[0].startswith("triton")]


@pytest.mark.parametrize("device", TRITON_TARGETS)
def test_triton_backward_rejects_what_the_compiled_kernels_reject(device):
    """The Triton namespace's gradient ops (also its fused ``lateral_concat_backward``) check grad_out's
    channels and ``out`` as the compiled kernels' ``check_grad`` does."""
    ops = _ops(device)
    x_slow, x_fast, weight, stride, padding = _lateral(device, 2, 16, 5, 8, 2)
    grad_out = _randn(1, 3 + weight.shape[0], 2, 2, 3, device=device)
    dx, dw, dscale, dshift = ops.lateral_concat_backward(
        grad_out, x_fast, weight, None, None, stride, padding, True, True
    )
    assert dx.shape == x_fast.shape and dw.shape == weight.shape and dshift.shape == (weight.shape[0],)
    with pytest.raises(RuntimeError, match="fewer than the lateral conv's 4 output channels"):
        ops.lateral_concat_backward(grad_out[:, :3], x_fast, weight, None, None, stride, padding, True, True)
    with pytest.raises(RuntimeError, match="out must have grad_out's shape and dtype"):
        ops.lateral_concat_grad_input(grad_out, x_fast, weight, None, grad_out[:, 1:], stride, padding)
    with pytest.raises(RuntimeError, match="out must have grad_out's shape and dtype"):
        ops.lateral_concat_grad_weight(grad_out, x_fast, weight, None, grad_out.double(), stride, padding)
    with pytest.raises(RuntimeError, match="grad_out, x_fast and weight must share one dtype"):
        ops.lateral_concat_grad_weight(grad_out.double(), x_fast, weight, None, None, stride, padding)
    with pytest.raises(RuntimeError, match="scale must have shape"):
        ops.lateral_concat_grad_input(grad_out, x_fast, weight, _randn(5, device=device), None, 8, 2)


@pytest.mark.parametrize("device", TRITON_TARGETS)
def test_triton_launchers_check_devices_on_every_call(device):
    """Shapes are checked once per launch plan (on meta tensors); devices on every call. The launchers
    are called directly here (the dispatcher would route a meta tensor to the fake kernel): an input on
    another device than the first raises instead of giving the kernel an address it cannot read."""
    from slowfast_fast import triton as kernels

    x_slow, x_fast, weight, stride, padding = _lateral(device, 2, 16, 5, 8, 2)
    scale = _randn(weight.shape[0], device=device)
    kernels.lateral_concat(x_slow, x_fast, weight, stride, padding, scale, None, False)  # the plan exists
    for i in range(3):  # x_fast, weight, scale
        args = [x_fast, weight, scale]
        args[i] = args[i].to("meta")
        with pytest.raises(RuntimeError, match=r"must be on one device \((cpu|cuda:\d)\), got .*meta"):
            kernels.lateral_concat(x_slow, *args[:2], stride, padding, args[2], None, False)
    grad_out = _randn(1, 3 + weight.shape[0], 2, 2, 3, device=device)
    with pytest.raises(RuntimeError, match="must be on one device"):
        kernels.lateral_concat_backward(grad_out, x_fast, weight, scale, grad_out.to("meta"), 8, 2)
    with pytest.raises(RuntimeError, match="must be on one device"):
        kernels.lateral_concat_backward(grad_out, x_fast.to("meta"), weight, None, None, 8, 2)
