"""Weights in and out: state_dict round trips with mmaction2 (strict, both ways), ``pretrained`` 3D
checkpoints, inflation of a 2D (torchvision-style) ResNet checkpoint compared with mmaction2's
inflation of the same file, and whole mmaction2 recognizer checkpoints."""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict

import pytest
import torch
from _model_helpers import (
    build_slowfast_pair,
    randomized_state,
    slowfast_kwargs,
    state_dicts_equal,
)

from slowfast_fast.models import ResNet3d, ResNet3dSlowFast, load_mmaction_checkpoint

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


SMALL = slowfast_kwargs(50, 4, 4, 7, lateral_norm=True, base_channels=16)


def test_state_dict_round_trips_strict_both_ways(mmaction_backbones):
    for kwargs in (slowfast_kwargs(50, 8, 8, 5), SMALL):
        ref = mmaction_backbones.ResNet3dSlowFast(**copy.deepcopy(kwargs))
        ours = ResNet3dSlowFast(**copy.deepcopy(kwargs))
        assert list(ours.state_dict()) == list(ref.state_dict())
        state = randomized_state(ref.state_dict(), seed=0)
        ours.load_state_dict(state, strict=True)
        ref.load_state_dict(randomized_state(ref.state_dict(), seed=1), strict=True)
        ref.load_state_dict(ours.state_dict(), strict=True)
        assert state_dicts_equal(ref.state_dict(), ours.state_dict())
    keys = ours.state_dict().keys()
    for key in (
        "slow_path.conv1.conv.weight",
        "slow_path.conv1.bn.running_var",
        "slow_path.conv1_lateral.conv.weight",
        "slow_path.layer1_lateral.conv.weight",
        "slow_path.layer1_lateral.bn.weight",
        "fast_path.layer1.0.conv1.conv.weight",
        "fast_path.layer1.0.downsample.bn.num_batches_tracked",
    ):
        assert key in keys


def test_pretrained_3d_checkpoint_loads_strictly(mmaction_backbones, tmp_path):
    source = ResNet3dSlowFast(**copy.deepcopy(SMALL))
    state = randomized_state(source.state_dict(), seed=3)
    path = tmp_path / "slowfast.pth"
    # As DataParallel saves it: mmengine strips the "module." prefix.
    torch.save({"state_dict": OrderedDict(("module." + k, v) for k, v in state.items()), "meta": {}}, path)
    kwargs = {**copy.deepcopy(SMALL), "pretrained": str(path)}
    ref = mmaction_backbones.ResNet3dSlowFast(**copy.deepcopy(kwargs))
    ours = ResNet3dSlowFast(**copy.deepcopy(kwargs))
    ref.init_weights()
    ours.init_weights()
    assert state_dicts_equal(ours.state_dict(), state)
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())

    del state["slow_path.layer1_lateral.conv.weight"]
    torch.save(state, path)
    with pytest.raises(
        RuntimeError, match="missing keys in checkpoint: slow_path.layer1_lateral.conv.weight"
    ):
        ResNet3dSlowFast(**copy.deepcopy(kwargs)).init_weights()


def test_pretrained_3d_checkpoint_for_resnet3d_is_lenient_like_mmengine(mmaction_backbones, tmp_path):
    kwargs = dict(depth=18, base_channels=8, pretrained2d=False)
    state = randomized_state(ResNet3d(**kwargs).state_dict(), seed=4)
    state["layer1.0.conv1.conv.weight"] = torch.zeros(3, 3, 1, 1, 1)  # wrong shape: skipped
    del state["layer2.0.conv2.bn.weight"]  # missing: keeps its current value
    state["fc.weight"] = torch.ones(2)  # unexpected: ignored
    path = tmp_path / "r3d.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    ref = mmaction_backbones.ResNet3d(**kwargs, pretrained=str(path))
    torch.manual_seed(0)
    ours = ResNet3d(**kwargs, pretrained=str(path))
    ref.init_weights()
    with pytest.warns(UserWarning, match="size mismatch for layer1.0.conv1.conv.weight"):
        ours.init_weights()
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    assert torch.equal(ours.layer4[1].conv2.bn.running_var, state["layer4.1.conv2.bn.running_var"])


def _resnet2d_state(depth: int, base_channels: int, seed: int) -> OrderedDict:
    """A torchvision-style 2D ResNet state_dict (conv1/bn1, layerX.Y.convN/bnN, downsample.0/.1, fc)
    with random weights."""
    gen = torch.Generator().manual_seed(seed)
    bottleneck = depth >= 50
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    expansion = 4 if bottleneck else 1
    state = OrderedDict()

    def conv(name, cin, cout, k):
        state[name + ".weight"] = torch.randn(cout, cin, k, k, generator=gen) * 0.1

    def bn(name, c):
        state[name + ".weight"] = torch.rand(c, generator=gen) + 0.5
        state[name + ".bias"] = torch.randn(c, generator=gen) * 0.1
        state[name + ".running_mean"] = torch.randn(c, generator=gen) * 0.1
        state[name + ".running_var"] = torch.rand(c, generator=gen) + 0.5
        state[name + ".num_batches_tracked"] = torch.tensor(7)

    conv("conv1", 3, base_channels, 7)
    bn("bn1", base_channels)
    inplanes = base_channels
    for i, n in enumerate(blocks):
        planes = base_channels * 2**i
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            if bottleneck:
                convs = [(inplanes, planes, 1), (planes, planes, 3), (planes, planes * 4, 1)]
            else:
                convs = [(inplanes, planes, 3), (planes, planes, 3)]
            for c, (cin, cout, k) in enumerate(convs, start=1):
                conv(f"{p}.conv{c}", cin, cout, k)
                bn(f"{p}.bn{c}", cout)
            if j == 0 and (i > 0 or inplanes != planes * expansion):
                conv(f"{p}.downsample.0", inplanes, planes * expansion, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    state["fc.weight"] = torch.randn(10, inplanes, generator=gen)
    state["fc.bias"] = torch.randn(10, generator=gen)
    return state


@pytest.mark.parametrize("depth", [18, 50])
def test_inflating_2d_checkpoint_matches_mmaction(mmaction_backbones, tmp_path, caplog, depth):
    state_2d = _resnet2d_state(depth, base_channels=16, seed=depth)
    path = tmp_path / f"resnet{depth}_2d.pth"
    torch.save({"state_dict": state_2d}, path)
    kwargs = slowfast_kwargs(depth, 8, 8, 5, base_channels=16, slow_extra=dict(pretrained=str(path)))
    torch.manual_seed(0)
    ref = mmaction_backbones.ResNet3dSlowFast(**copy.deepcopy(kwargs))
    torch.manual_seed(0)
    ours = ResNet3dSlowFast(**copy.deepcopy(kwargs))
    torch.manual_seed(1)
    ref.init_weights()
    torch.manual_seed(1)
    with caplog.at_level(logging.INFO, logger="slowfast_fast"):
        ours.init_weights()
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    assert "fc.weight" in caplog.text  # reported as not loaded, as mmaction2 does

    # The slow stem's (1, 7, 7) kernel is the 2D kernel; layer1's first conv takes 16 + 4 lateral
    # channels: the 2D weight, zero-padded.
    assert torch.equal(ours.slow_path.conv1.conv.weight[:, :, 0], state_2d["conv1.weight"])
    first = ours.slow_path.layer1[0].conv1.conv.weight
    assert torch.equal(first[:, :16, 0], state_2d["layer1.0.conv1.weight"][:, :16])
    assert torch.count_nonzero(first[:, 16:]) == 0


def test_inflating_2d_checkpoint_into_resnet3d_matches_mmaction(mmaction_backbones, tmp_path):
    state_2d = _resnet2d_state(50, base_channels=16, seed=5)
    path = tmp_path / "resnet50_2d.pth"
    torch.save(state_2d, path)
    kwargs = dict(
        depth=50, base_channels=16, pretrained=str(path), inflate=(1, 1, 1, 1), conv1_kernel=(3, 7, 7)
    )
    torch.manual_seed(0)
    ref = mmaction_backbones.ResNet3d(**kwargs)
    torch.manual_seed(0)
    ours = ResNet3d(**kwargs)
    ref.init_weights()
    ours.init_weights()
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    torch.testing.assert_close(ours.conv1.conv.weight.sum(2), state_2d["conv1.weight"])


def test_load_mmaction_checkpoint(mmaction_backbones, tmp_path):
    ref, ours = build_slowfast_pair(mmaction_backbones, SMALL, seed=6)
    state = OrderedDict(("backbone." + k, v) for k, v in ref.state_dict().items())
    state["cls_head.fc_cls.weight"] = torch.randn(5, 2304)
    state["cls_head.fc_cls.bias"] = torch.randn(5)
    checkpoint = {"meta": {"epoch": 3}, "state_dict": state}
    target = ResNet3dSlowFast(**copy.deepcopy(SMALL))
    assert load_mmaction_checkpoint(target, checkpoint) == ["cls_head.fc_cls.weight", "cls_head.fc_cls.bias"]
    assert state_dicts_equal(target.state_dict(), ref.state_dict())

    path = tmp_path / "recognizer.pth"
    torch.save(checkpoint, path)
    target = ResNet3dSlowFast(**copy.deepcopy(SMALL))
    load_mmaction_checkpoint(target, path)
    assert state_dicts_equal(target.state_dict(), ref.state_dict())

    del state["backbone.fast_path.layer2.1.conv2.bn.bias"]
    with pytest.raises(RuntimeError, match="fast_path.layer2.1.conv2.bn.bias"):
        load_mmaction_checkpoint(target, checkpoint)
    with pytest.raises(KeyError, match="no 'backbone"):
        load_mmaction_checkpoint(target, {"state_dict": ref.state_dict()})


class _TrainingState:
    """Stands in for the Python objects (e.g. mmengine's message hub) of a full training checkpoint."""


def test_load_mmaction_checkpoint_refuses_pickled_objects_unless_trusted(tmp_path):
    model = ResNet3dSlowFast(**copy.deepcopy(SMALL))
    state = OrderedDict(("backbone." + k, v) for k, v in model.state_dict().items())
    path = tmp_path / "full.pth"
    torch.save({"state_dict": state, "message_hub": _TrainingState()}, path)
    with pytest.raises(RuntimeError, match="weights_only"):
        load_mmaction_checkpoint(model, path)
    assert load_mmaction_checkpoint(model, path, weights_only=False) == []
    with pytest.raises(RuntimeError, match="holds pickled objects besides tensors"):
        load_mmaction_checkpoint(model, path)


def test_a_file_that_is_no_checkpoint_is_reported_as_such(tmp_path):
    """A failed download's HTML page: not "pickled objects" with advice to unpickle it (which fails too)."""
    model = ResNet3dSlowFast(**copy.deepcopy(SMALL))
    path = tmp_path / "slowfast.pth"
    path.write_text("<html><body>404 Not Found</body></html>")
    with pytest.raises(RuntimeError, match=r"could not be read as a PyTorch checkpoint \(") as info:
        load_mmaction_checkpoint(model, path)
    assert "pickled objects" not in str(info.value)


def test_weights_only_false_is_refused_where_mmengine_loads(tmp_path):
    """mmengine's loaders (any scheme but http(s)) call torch.load with its default, weights_only=True:
    ``weights_only=False`` cannot reach them, so it is refused with what to do instead of a pickling error
    that contradicts the argument."""
    from slowfast_fast.models.checkpoint import load_checkpoint_file

    with pytest.raises(ValueError, match="download the file and pass its local path"):
        load_checkpoint_file("s3://bucket/slowfast.pth", weights_only=False)
