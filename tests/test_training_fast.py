"""``to_channels_last_3d``: a training step in channels_last_3d computes what the NCDHW model
computes: outputs, running statistics, input gradient and every parameter gradient, with
``with_cp``, frozen stages and lateral BNs.

fp32 uses flash-attention's criterion: against a float64 run of the same step, the channels-last
model's relative error may be at most a small multiple of the NCDHW model's own, plus 1e-5 (~80
fp32 units, for tensors the NCDHW model happens to get almost exact). The layouts reduce in
different orders (BN's backward, the convs' weight gradients), and BN's weight gradient, a long sum
of products that mostly cancel, carries relative errors of 4e-5 to 1e-4 in either layout, measured
up to 2.1x the NCDHW one: so 4x, an error of the same order, while a layout bug (a wrong channel or
frame) is an O(1) error. fp64 is compared directly at 1e-10.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _model_helpers import (
    clip,
    compare_with_reference,
    randomized_state,
    rel_err,
    run_forward_backward,
    slowfast_kwargs,
)

from slowfast_fast.models import ResNet3dSlowFast
from slowfast_fast.models.training import to_channels_last_3d

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

CL = torch.channels_last_3d


def _model(dtype, **extra) -> ResNet3dSlowFast:
    # Seeded: the conv weights are the constructor's random init. With weights drawn afresh each run,
    # about one run in ten had a pre-activation within fp32 rounding of zero, where one layout's ReLU
    # passes the gradient and the other's does not: one flipped element of 2048 moved a gradient by
    # 6% in one layout and not the other (a branch flip, not a wrong result).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ResNet3dSlowFast(**slowfast_kwargs(18, lateral_norm=True, slow_extra=extra, fast_extra=extra))
    model.load_state_dict(randomized_state(model.state_dict(), seed=0))
    return model.to(dtype).train()


def _step(model, x) -> dict[str, torch.Tensor]:
    """Everything a training step produces: outputs, input gradient, parameter gradients, buffers."""
    outs, grad = run_forward_backward(model, x)
    result = {f"output {i}": o for i, o in enumerate(outs)} | {"input grad": grad}
    result |= {f"grad of {n}": p.grad for n, p in model.named_parameters() if p.grad is not None}
    return result | {n: b for n, b in model.named_buffers() if b.is_floating_point()}


@pytest.mark.parametrize("extra", [{}, dict(with_cp=True, frozen_stages=1)], ids=["plain", "with_cp_frozen"])
def test_fp32_training_step_as_accurate_as_ncdhw(extra):
    ncdhw = _model(torch.float32, **extra)
    truth_model = copy.deepcopy(ncdhw).double()
    ours = to_channels_last_3d(copy.deepcopy(ncdhw))
    x = clip((2, 3, 16, 32, 32))
    truth, want, got = _step(truth_model, x.double()), _step(ncdhw, x), _step(ours, x)
    assert got.keys() == want.keys() == truth.keys()
    for name, value in got.items():
        assert value.dtype == torch.float32
        bound = 4 * rel_err(want[name], truth[name]) + 1e-5
        assert rel_err(value, truth[name]) <= bound, name
    # Frozen parameters get no gradient; trained weights get theirs in channels_last_3d.
    assert ("grad of slow_path.layer1.0.conv1.conv.weight" in got) != ("frozen_stages" in extra)
    assert ours.slow_path.layer2[0].conv1.conv.weight.grad.is_contiguous(memory_format=CL)


def test_fp64_training_step_matches_ncdhw():
    """Also with a non-local block in concatenation mode, whose Conv2d keeps its 4-D weight's layout."""
    ref = _model(
        torch.float64, with_cp=True, non_local=(0, 1, 0, 0), non_local_cfg=dict(mode="concatenation")
    )
    ours = to_channels_last_3d(copy.deepcopy(ref))
    assert to_channels_last_3d(ours) is ours and len(ours._forward_pre_hooks) == 1
    compare_with_reference(ref, ours, clip((2, 3, 16, 32, 32), dtype=torch.float64), 1e-10)


def test_rejects_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        to_channels_last_3d(torch.zeros(1))


@pytest.mark.parametrize("kind", [list, tuple])
def test_a_two_pathway_input_is_converted_too(kind):
    """``[x_slow, x_fast]`` (the PySlowFast convention): both clips reach the model in channels_last_3d
    (the hook converted a single clip only), and the step computes what the NCDHW model computes."""
    ref = _model(torch.float64)
    ours = to_channels_last_3d(copy.deepcopy(ref))
    seen = []
    ours.register_forward_pre_hook(lambda module, args: seen.append(args[0]))  # runs after the converter
    pair = kind((clip((2, 3, 2, 32, 32), dtype=torch.float64), clip((2, 3, 16, 32, 32), dtype=torch.float64)))
    outs = {}
    for name, model in (("ref", ref), ("ours", ours)):
        out = model(pair)
        sum(o.square().mean() for o in out).backward()
        outs[name] = list(out) + [p.grad for p in model.parameters() if p.grad is not None]
    assert len(outs["ours"]) == len(outs["ref"]) > 2
    for got, want in zip(outs["ours"], outs["ref"], strict=True):
        assert rel_err(got, want) <= 1e-10
    assert seen and all(type(arg) is kind and len(arg) == 2 for arg in seen)
    assert all(t.is_contiguous(memory_format=CL) for arg in seen for t in arg)
    assert not any(t.is_contiguous(memory_format=CL) for t in pair)  # the caller's clips are untouched
