"""TF32 for fp32 is resolved like cuDNN's convolutions resolve it, under both of PyTorch's APIs.

Issue 9, defect 1: after ``torch.backends.cudnn.conv.fp32_precision = "ieee"`` (PyTorch's documented
way to turn TF32 off) the legacy getter ``torch.backends.cudnn.allow_tf32`` raises, and every fp32
lateral op that read it raised too. Each test restores the settings it changed.
"""

from __future__ import annotations

import pytest
import torch

from slowfast_fast import _precision

HAS_PRECISION_API = _precision.conv_precision_settings() is not None
needs_precision_api = pytest.mark.skipif(not HAS_PRECISION_API, reason="torch without fp32_precision")


def _levels():
    """(object, attribute) of each precision setting, most general first (the order to set them in,
    so a child's explicit value is never overwritten by its parent's)."""
    return [
        (torch.backends, "fp32_precision"),
        (torch.backends.cudnn, "fp32_precision"),
        (torch.backends.cudnn.conv, "fp32_precision"),
        (torch.backends.cudnn.rnn, "fp32_precision"),
    ]


@pytest.fixture
def restore_precision():
    """Puts every precision setting (and the legacy flag where it can be read) back afterwards."""
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr in _levels()] if HAS_PRECISION_API else []
    legacy = None if HAS_PRECISION_API else torch.backends.cudnn.allow_tf32
    yield
    for obj, attr, value in saved:
        setattr(obj, attr, value)
    if legacy is not None:
        torch.backends.cudnn.allow_tf32 = legacy


def _set(generic: str, cudnn: str, conv: str) -> None:
    torch.backends.fp32_precision = generic
    torch.backends.cudnn.fp32_precision = cudnn
    torch.backends.cudnn.conv.fp32_precision = conv


# (generic, cudnn, conv) -> TF32?  The most specific setting that is not "none" decides.
CASES = [
    (("none", "none", "ieee"), False),
    (("none", "none", "tf32"), True),
    (("none", "ieee", "none"), False),
    (("none", "tf32", "none"), True),
    (("ieee", "none", "none"), False),
    (("tf32", "none", "none"), True),
    (("none", "none", "none"), False),
    (("ieee", "ieee", "tf32"), True),
    (("tf32", "tf32", "ieee"), False),
    (("tf32", "ieee", "none"), False),
]


@needs_precision_api
@pytest.mark.parametrize("levels,expected", CASES, ids=["/".join(c) for c, _ in CASES])
def test_conv_tf32_resolves_most_specific_setting(levels, expected, restore_precision):
    _set(*levels)
    assert _precision.conv_allows_tf32() is expected


@needs_precision_api
@pytest.mark.parametrize("allow", [False, True])
def test_legacy_flag_is_honoured_through_the_new_api(allow, restore_precision):
    """Setting the legacy flag sets the conv level, which the resolver reads."""
    torch.backends.cudnn.allow_tf32 = allow
    assert _precision.conv_allows_tf32() is allow


@pytest.mark.parametrize("allow", [False, True])
def test_torch_without_precision_api_uses_legacy_flag(allow, monkeypatch, restore_precision):
    monkeypatch.setattr(_precision, "conv_precision_settings", lambda: None)
    # The legacy setter keeps conv and RNN equal, so the legacy getter this path reads does not raise.
    torch.backends.cudnn.allow_tf32 = allow
    assert _precision.conv_allows_tf32() is allow


@needs_precision_api
@pytest.mark.parametrize("level", ["conv", "generic"])
def test_triton_fp32_lateral_runs_in_ieee_after_new_api_turns_tf32_off(level, restore_precision):
    """The reproduction of the issue: the fp32 op must not raise, and must choose IEEE products."""
    pytest.importorskip("triton")
    from slowfast_fast.ops import _triton_ops
    from slowfast_fast.triton import _common

    if _triton_ops.LOAD_ERROR is not None:
        pytest.skip(f"Triton kernels unavailable: {_triton_ops.LOAD_ERROR}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if level == "conv":
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.backends.fp32_precision = "ieee"
        torch.backends.cudnn.fp32_precision = "none"
        torch.backends.cudnn.conv.fp32_precision = "none"
    assert _common.dot_precision(torch.float32) == "ieee"
    gen = torch.Generator().manual_seed(1)
    x_slow = torch.randn(1, 3, 2, 3, 2, generator=gen).to(device)
    x_fast = torch.randn(1, 2, 8, 3, 2, generator=gen).to(device)
    weight = torch.randn(4, 2, 3, 1, 1, generator=gen).to(device)
    out = torch.ops.slowfast_fast_triton.lateral_concat(x_slow, x_fast, weight, 4, 1, None, None, False)
    expected = torch.cat(
        (x_slow, torch.nn.functional.conv3d(x_fast, weight, stride=(4, 1, 1), padding=(1, 0, 0))), 1
    )
    # IEEE fp32 products summed over 6 terms of magnitude ~1: a few fp32 ulps.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@needs_precision_api
@pytest.mark.parametrize("name", ["cuda", pytest.param("triton", marks=pytest.mark.slow)])
def test_gpu_fp32_ops_follow_the_conv_precision_setting(name, restore_precision):
    """On the GPU both backends run after the new API turned TF32 off (and back on), and their
    error shows which it was: IEEE fp32 sums of 320 products stay within 1e-5 of fp64; TF32
    (10-bit mantissas) is far coarser, so its error must be at least ten times larger."""
    from slowfast_fast import _extension

    if name == "cuda" and not _extension.has_kernels("CUDA"):
        pytest.fail("slowfast_fast._C was built without CUDA kernels on a GPU machine")
    ns = torch.ops.slowfast_fast if name == "cuda" else torch.ops.slowfast_fast_triton
    gen = torch.Generator().manual_seed(2)
    x_slow = torch.randn(2, 8, 4, 14, 14, generator=gen).cuda()
    x_fast = torch.randn(2, 64, 32, 14, 14, generator=gen).cuda()
    weight = torch.randn(16, 64, 5, 1, 1, generator=gen).cuda()
    truth = torch.cat(
        (
            x_slow.double(),
            torch.nn.functional.conv3d(x_fast.double(), weight.double(), stride=(8, 1, 1), padding=(2, 0, 0)),
        ),
        1,
    )
    errors = {}
    for setting in ("ieee", "tf32"):
        torch.backends.cudnn.conv.fp32_precision = setting
        out = ns.lateral_concat(x_slow, x_fast, weight, 8, 2, None, None, False)
        grad_x = ns.lateral_concat_grad_input(out, x_fast, weight, None, None, 8, 2)
        ns.lateral_concat_grad_weight(out, x_fast, weight, None, None, 8, 2)
        assert grad_x.shape == x_fast.shape
        errors[setting] = ((out.double() - truth).abs().max() / truth.abs().max()).item()
    assert errors["ieee"] <= 1e-5 and errors["tf32"] >= 10 * errors["ieee"], errors
