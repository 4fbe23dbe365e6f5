"""ResNet3dSlowFast against real mmaction2 1.2.0 on CPU: same outputs, gradients and running statistics.

Tolerances (relative, ``||ours - mmaction|| / ||mmaction||`` per tensor):

* fp32 on the ``reference`` backend, 1e-5. Everything but the folded lateral BN computes exactly
  what mmaction2 computes, so train mode and ``lateral_norm=False`` agree to the bit; folding an
  eval-mode BN into the lateral changes outputs by ~1e-6.
* Gradients with a folded BN are compared in fp64 (below), not fp32: a forward that differs by one
  ulp can flip a ReLU or max-pool decision whose pre-activation is ~1e-7 from the kink, and one
  flipped element moves upstream gradients by ~1e-3 relative on these small clips. That is a
  property of any computation not bitwise identical to mmaction2 (the fused kernels too), not an
  error in the fold.
* fp64 on the default backend (what a user gets: the compiled CPU kernels when built), 1e-9, for
  outputs and every gradient, in eval mode (BN folded into the fused lateral) and train mode.
  fp64 rounding (~1e-16), amplified by train-mode BN over the few positions of a small clip, stays
  far below that.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _model_helpers import (
    assert_rel_close,
    build_slowfast_pair,
    clip,
    compare_with_reference,
    run_forward_backward,
    slowfast_kwargs,
    state_dicts_equal,
)

import slowfast_fast
from slowfast_fast import ops
from slowfast_fast.models import ResNet3dSlowFast

# name: (ResNet3dSlowFast arguments, input clip shape). T is a multiple of resample_rate (as
# mmaction2 needs); H and W are odd; T=24 and T=20 give odd slow-pathway lengths (3 and 5).
CASES = {
    "r50_4x16": (slowfast_kwargs(50, 8, 8, 5), (1, 3, 32, 33, 33)),
    "r50_8x8_lateral_norm": (slowfast_kwargs(50, 4, 4, 7, lateral_norm=True), (1, 3, 16, 37, 37)),
    "r18_4x16_lateral_norm": (slowfast_kwargs(18, 8, 8, 5, lateral_norm=True), (2, 3, 24, 33, 33)),
    "r101_8x8_lateral_norm": (slowfast_kwargs(101, 4, 4, 7, lateral_norm=True), (1, 3, 20, 33, 33)),
}
FP64_HW = 21  # fp64 runs use a smaller frame to stay fast
SMALL = slowfast_kwargs(18, 8, 8, 5, lateral_norm=True, base_channels=16)
SMALL_CLIP = (2, 3, 16, 21, 21)

_pairs: dict = {}


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def model_pair(mmaction_backbones):
    """``get(case, dtype)`` gives mmaction2's model and ours with identical random weights (built
    once per module, weights and buffers reset on every call)."""

    def get(case: str, dtype=torch.float32):
        key = (case, dtype)
        if key not in _pairs:
            ref, ours = build_slowfast_pair(mmaction_backbones, CASES[case][0])
            ref.to(dtype)
            ours.to(dtype)
            _pairs[key] = (ref, ours, copy.deepcopy(ref.state_dict()))
        ref, ours, state = _pairs[key]
        ref.load_state_dict(state)
        ours.load_state_dict(state)
        return ref, ours

    yield get
    _pairs.clear()


def _set_mode(mode: str, *models) -> None:
    for m in models:
        m.train(mode == "train")


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_mmaction_fp32(model_pair, case, mode):
    kwargs, shape = CASES[case]
    ref, ours = model_pair(case)
    _set_mode(mode, ref, ours)
    folded = mode == "eval" and kwargs["slow_pathway"]["lateral_norm"]
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, clip(shape), tol=1e-5, grads=not folded)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", ["r50_8x8_lateral_norm", "r18_4x16_lateral_norm"])
def test_matches_mmaction_fp64_default_backend(model_pair, case, mode):
    _, shape = CASES[case]
    shape = (*shape[:3], FP64_HW, FP64_HW)
    ref, ours = model_pair(case, torch.float64)
    _set_mode(mode, ref, ours)
    compare_with_reference(ref, ours, clip(shape, dtype=torch.float64), tol=1e-9)


@pytest.mark.parametrize("case", ["r50_4x16", "r50_8x8_lateral_norm"])
def test_matches_mmaction_fp32_default_backend_eval(model_pair, case):
    _, shape = CASES[case]
    ref, ours = model_pair(case)
    _set_mode("eval", ref, ours)
    with torch.no_grad():
        for got, want in zip(ours(clip(shape)), ref(clip(shape)), strict=True):
            assert_rel_close(got, want, 1e-5, "output")


class _Recorder:
    """Wraps an op to record how it was called."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize(
    "lateral_norm,mode,fused,folded",
    [
        (False, "eval", True, False),
        (False, "train", True, False),
        (True, "eval", True, True),
        (True, "train", False, False),
    ],
)
def test_fused_ops_replace_interpolate_and_lateral_concat(monkeypatch, lateral_norm, mode, fused, folded):
    kwargs = slowfast_kwargs(18, 8, 8, 5, lateral_norm=lateral_norm, base_channels=16)
    model = ResNet3dSlowFast(**kwargs).train(mode == "train")
    split = _Recorder(ops.pathway_inputs)
    lateral = _Recorder(ops.lateral_concat)
    monkeypatch.setattr(ops, "pathway_inputs", split)
    monkeypatch.setattr(ops, "lateral_concat", lateral)
    model(clip(SMALL_CLIP))
    assert [args[1:] for args, _ in split.calls] == [(8, 8)]
    assert len(lateral.calls) == (4 if fused else 0)
    for args, kwargs in lateral.calls:
        stride, padding = args[3], args[4]
        assert (stride, padding) == (8, 2)
        has_affine = len(args) > 5
        assert has_affine == folded
        if folded:
            scale, shift = args[5], args[6]
            assert scale.requires_grad and shift.requires_grad  # gradients reach the BN's weight and bias
            assert kwargs["relu"] is True


def test_folded_lateral_bn_matches_conv_bn_relu():
    model = ResNet3dSlowFast(**SMALL).eval()
    lateral = model.slow_path.layer1_lateral
    with torch.no_grad():
        lateral.bn.running_mean.uniform_(-1, 1)
        lateral.bn.running_var.uniform_(0.5, 2)
        lateral.bn.weight.uniform_(0.5, 2)
        lateral.bn.bias.uniform_(-1, 1)
    x_fast = clip((2, 2, 16, 5, 5), seed=3, dtype=torch.float64)
    x_slow = clip((2, 16, 2, 5, 5), seed=4, dtype=torch.float64)
    model.double()
    got = model.slow_path.fuse(x_slow, x_fast, "layer1_lateral")
    want = torch.cat((x_slow, lateral(x_fast)), dim=1)
    assert_rel_close(got, want, 1e-12, "fused lateral")


def test_channels_last_3d_matches(mmaction_backbones):
    ref, ours = build_slowfast_pair(mmaction_backbones, SMALL)
    cl = torch.channels_last_3d
    ours.to(memory_format=cl)
    x = clip(SMALL_CLIP)
    ref.eval()
    ours.eval()
    with torch.no_grad():
        for got, want in zip(ours(x.contiguous(memory_format=cl)), ref(x), strict=True):
            assert_rel_close(got, want, 1e-5, "eval output")
    ref.double().train()
    ours.double().train()
    x64 = x.double()
    ref_outs, ref_grad = run_forward_backward(ref, x64)
    outs, grad = run_forward_backward(ours, x64.contiguous(memory_format=cl))
    for got, want in zip(outs, ref_outs, strict=True):
        assert_rel_close(got, want, 1e-9, "train output")
    assert_rel_close(grad, ref_grad, 1e-9, "input grad")
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert_rel_close(param.grad, ref_params[name].grad, 1e-9, name)


@pytest.mark.filterwarnings("ignore:torch.utils.checkpoint")  # mmaction2 omits use_reentrant
def test_with_cp_matches(mmaction_backbones):
    kwargs = slowfast_kwargs(
        18, 8, 8, 5, base_channels=16, slow_extra=dict(with_cp=True), fast_extra=dict(with_cp=True)
    )
    ref, ours = build_slowfast_pair(mmaction_backbones, kwargs)
    ref.train()
    ours.train()
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, clip(SMALL_CLIP), tol=1e-5)


def test_frozen_stages_and_norm_eval_match(mmaction_backbones):
    extra = dict(frozen_stages=1, norm_eval=True)
    kwargs = slowfast_kwargs(
        18, 8, 8, 5, lateral_norm=True, base_channels=16, slow_extra=extra, fast_extra=extra
    )
    ref, ours = build_slowfast_pair(mmaction_backbones, kwargs)
    ref.train()
    ours.train()
    assert [(n, m.training) for n, m in ours.named_modules()] == [
        (n, m.training) for n, m in ref.named_modules()
    ]
    assert [(n, p.requires_grad) for n, p in ours.named_parameters()] == [
        (n, p.requires_grad) for n, p in ref.named_parameters()
    ]
    assert not ours.slow_path.layer1_lateral.bn.training  # frozen with stage 1
    # Every BN uses running statistics (norm_eval), so the laterals run fused even in train mode.
    ref.double()
    ours.double()
    compare_with_reference(ref, ours, clip(SMALL_CLIP, dtype=torch.float64), tol=1e-9)


@pytest.mark.parametrize("lateral_norm", [False, True])
def test_seeded_construction_and_init_weights_match(mmaction_backbones, lateral_norm):
    kwargs = slowfast_kwargs(50, 4, 4, 7, lateral_norm=lateral_norm)
    torch.manual_seed(0)
    ref = mmaction_backbones.ResNet3dSlowFast(**copy.deepcopy(kwargs))
    torch.manual_seed(0)
    ours = ResNet3dSlowFast(**copy.deepcopy(kwargs))
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    torch.manual_seed(1)
    ref.init_weights()
    torch.manual_seed(1)
    ours.init_weights()
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    # zero_init_residual: the last BN of every block starts at zero.
    assert torch.count_nonzero(ours.slow_path.layer2[0].conv3.bn.weight) == 0


def test_default_arguments_match(mmaction_backbones):
    ref = mmaction_backbones.ResNet3dSlowFast()
    ours = ResNet3dSlowFast()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_unknown_pathway_type_raises():
    with pytest.raises(KeyError, match="Unrecognized pathway type"):
        ResNet3dSlowFast(fast_pathway=dict(type="bninception"))
    with pytest.raises(TypeError, match='"type"'):
        ResNet3dSlowFast(fast_pathway=dict(depth=50))


def test_shape_inference_on_the_meta_device():
    """A model built and run under ``torch.device("meta")`` (shape inference without memory): the fused
    laterals' autocast check raised "unknown device type for autocast" there."""
    with torch.device("meta"):
        model = ResNet3dSlowFast(pretrained=None)
        x_slow, x_fast = model(torch.empty(1, 3, 32, 64, 64))
    assert x_slow.device.type == x_fast.device.type == "meta"
    assert x_slow.shape == (1, 2048, 4, 2, 2) and x_fast.shape == (1, 256, 32, 2, 2)
