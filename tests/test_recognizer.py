"""SlowFastRecognizer against the real mmaction2 Recognizer3D built from a SlowFast config shipped in the
mmaction2 package, and the backbone's two-pathway input."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from _model_helpers import assert_rel_close, clip, randomized_state, slowfast_kwargs

from slowfast_fast import ops
from slowfast_fast.models import ResNet3dSlowFast, SlowFastRecognizer

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SHIPPED_CONFIG = "recognition/slowfast/slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb.py"


@pytest.fixture(scope="module")
def mmaction_pair(mmaction_backbones, tmp_path_factory):
    """mmaction2's Recognizer3D from the shipped SlowFast R50 8x8 config, with random weights and
    BN statistics, and our recognizer loaded from that model's checkpoint file."""
    import mmaction
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(Path(mmaction.__file__).parent / ".mim" / "configs" / SHIPPED_CONFIG))
    ref = MODELS.build(cfg.model)
    ref.load_state_dict(randomized_state(ref.state_dict(), seed=0))
    checkpoint = tmp_path_factory.mktemp("ckpt") / "slowfast_r50_8x8.pth"
    torch.save({"meta": {"epoch": 256}, "state_dict": ref.state_dict()}, checkpoint)

    backbone = cfg.to_dict()["model"]["backbone"]
    assert backbone.pop("type") == "ResNet3dSlowFast"
    head = cfg.model.cls_head
    ours = SlowFastRecognizer(head.num_classes, backbone=backbone, dropout_ratio=head.dropout_ratio)
    ours.load_mmaction_checkpoint(checkpoint)
    return ref.eval(), ours.eval()


def test_state_dict_keys_are_mmaction2s(mmaction_pair):
    ref, ours = mmaction_pair
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_class_scores_match_mmaction2(mmaction_pair):
    """Two views of one video through Recognizer3D's tensor mode (which folds views into the batch)
    against ours on the same clips. Both run the same fp32 convs except the fused laterals, whose
    rounding differs from oneDNN's conv by ~1e-6 relative, so 1e-5 holds with margin."""
    ref, ours = mmaction_pair
    inputs = clip((1, 2, 3, 16, 32, 32), seed=3)  # (N, views, C, T, H, W); 8x8: T=16 gives 4 slow frames
    with torch.no_grad():
        want = ref(inputs, mode="tensor", stage="head")
        got = ours(inputs.flatten(0, 1))
    assert got.shape == (2, 400)
    assert_rel_close(got, want, 1e-5, "class scores")


def test_checkpoint_loads_strictly(mmaction_pair):
    ref, ours = mmaction_pair
    state = dict(ref.state_dict())
    del state["cls_head.fc_cls.bias"]
    fresh = copy.deepcopy(ours)
    with pytest.raises(RuntimeError, match=r"cls_head\.fc_cls\.bias"):
        fresh.load_mmaction_checkpoint({"state_dict": state})


def test_init_weights_is_mmaction2s():
    """Backbone as ResNet3dSlowFast.init_weights (zero-initialized last BN of each residual block) and
    fc_cls ~ N(0, init_std) with zero bias, as mmaction2's SlowFastHead.init_weights."""
    model = SlowFastRecognizer(1000, backbone=copy.deepcopy(SMALL), init_std=0.02)
    torch.manual_seed(0)
    model.init_weights()
    assert torch.equal(model.cls_head.fc_cls.bias, torch.zeros(1000))
    std = model.cls_head.fc_cls.weight.std().item()
    assert 0.019 < std < 0.021, std  # 144k samples: relative standard error 0.2%, so 5% is ~25 sigma
    assert torch.equal(model.backbone.slow_path.layer1[0].conv2.bn.weight, torch.zeros(16))


def test_backbone_argument_must_be_a_backbone():
    with pytest.raises(TypeError, match="ResNet3dSlowFast or a dict"):
        SlowFastRecognizer(10, backbone=torch.nn.Conv3d(3, 8, 1))


# ---- two-pathway input ------------------------------------------------------------------------------

SMALL = slowfast_kwargs(18, 4, 4, 7, lateral_norm=True, base_channels=16)


@pytest.fixture(scope="module")
def small_backbone():
    model = ResNet3dSlowFast(**copy.deepcopy(SMALL))
    model.load_state_dict(randomized_state(model.state_dict(), seed=1))
    return model.eval()


def test_two_pathway_input_is_what_the_split_feeds(small_backbone):
    """``[x_slow, x_fast]`` runs exactly the network that a clip runs after its split."""
    x = clip((2, 3, 16, 32, 32), seed=4)
    x_slow, x_fast = ops.pathway_inputs(x, 4, 4)
    with torch.no_grad():
        want = small_backbone(x)
        got = small_backbone([x_slow, x_fast])
        got_tuple = small_backbone((x_slow, x_fast))
    for w, g, t in zip(want, got, got_tuple, strict=True):
        assert torch.equal(w, g) and torch.equal(w, t)


def test_two_pathway_input_takes_other_samplings(small_backbone):
    """PySlowFast's linspace sampling picks other slow frames than nearest resampling: the slow
    output changes, the fast one (same frames) does not."""
    x = clip((1, 3, 16, 32, 32), seed=5)
    linspace = torch.linspace(0, 15, 4).long()  # PySlowFast: frames 0, 5, 10, 15; nearest: 0, 4, 8, 12
    with torch.no_grad():
        nearest_slow, nearest_fast = small_backbone(x)
        slow, fast = small_backbone([x[:, :, linspace], x])
    assert torch.equal(fast, nearest_fast)
    assert not torch.allclose(slow, nearest_slow)


def test_recognizer_takes_two_pathways(small_backbone):
    model = SlowFastRecognizer(7, backbone=copy.deepcopy(small_backbone)).eval()
    x = clip((2, 3, 16, 32, 32), seed=6)
    with torch.no_grad():
        assert torch.equal(model(list(ops.pathway_inputs(x, 4, 4))), model(x))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((1, 3, 16, 32, 32), dtype=np.float32), r"got ndarray"),
        ([1.0, 2.0], r"got list of 2 items \(float, float\)"),
        ([torch.ones(1, 3, 4, 8, 8)] * 3, r"got list of 3 items"),
        ("clip", r"got str"),
    ],
)
def test_bad_input_type_says_what_is_expected(small_backbone, bad, message):
    with pytest.raises(TypeError, match=r"clip tensor \(N, C, T, H, W\) or a sequence \[x_slow, x_fast\]"):
        small_backbone(bad)
    with pytest.raises(TypeError, match=message):
        small_backbone(bad)


def test_two_pathway_input_must_be_5d(small_backbone):
    with pytest.raises(ValueError, match=r"x_fast must be \(N, C, T, H, W\), got shape \(3, 16, 32, 32\)"):
        small_backbone([torch.ones(1, 3, 4, 32, 32), torch.ones(3, 16, 32, 32)])
