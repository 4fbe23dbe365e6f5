"""Using the backbone from mmaction2: registration as ``FastResNet3dSlowFast``, a config with
``custom_imports`` building a whole recognizer around it, and loading that recognizer's checkpoint."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _model_helpers import (
    assert_rel_close,
    clip,
    randomized_state,
    slowfast_kwargs,
    state_dicts_equal,
)

from slowfast_fast.models import ResNet3dSlowFast, load_mmaction_checkpoint

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


BACKBONE = slowfast_kwargs(18, 4, 4, 7, lateral_norm=True, base_channels=16)
HEAD = dict(type="SlowFastHead", in_channels=128 + 16, num_classes=5, spatial_type="avg", dropout_ratio=0.5)

# A base config using mmaction2's backbone, and the README's two-line switch to ours.
BASE_CONFIG = f"""
default_scope = 'mmaction'
model = dict(
    type='Recognizer3D',
    backbone=dict(type='ResNet3dSlowFast', **{BACKBONE!r}),
    cls_head={HEAD!r},
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCTHW'))
"""
SWITCH_CONFIG = """
_base_ = ['./base.py']
custom_imports = dict(imports=['slowfast_fast.models.mmaction'], allow_failed_imports=False)
model = dict(backbone=dict(type='FastResNet3dSlowFast'))
"""


@pytest.fixture(scope="module")
def registry(mmaction_backbones):
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules

    register_all_modules()
    return MODELS


def test_importing_models_does_not_import_mmaction():
    code = (
        "import sys, slowfast_fast.models\n"
        "loaded = [m for m in ('mmaction', 'mmcv', 'mmengine') if m in sys.modules]\n"
        "print('loaded:', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "loaded: []", result.stdout


def test_registry_builds_our_backbone(registry):
    import slowfast_fast.models.mmaction  # noqa: F401  (registers FastResNet3dSlowFast)

    model = registry.build(dict(type="FastResNet3dSlowFast", **copy.deepcopy(BACKBONE)))
    assert type(model) is ResNet3dSlowFast


def test_config_switch_builds_our_backbone(mmaction_backbones, tmp_path):
    """The README's recipe, in a fresh interpreter so that only the config imports our module: the
    child config changes the backbone type and keeps every other argument of the base config."""
    (tmp_path / "base.py").write_text(BASE_CONFIG)
    path = tmp_path / "switch.py"
    path.write_text(SWITCH_CONFIG)
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import conftest
conftest._install_drn_stub()
from mmaction.registry import MODELS
from mmaction.utils import register_all_modules
from mmengine.config import Config
register_all_modules()
assert 'slowfast_fast.models.mmaction' not in sys.modules
cfg = Config.fromfile({str(path)!r})
from slowfast_fast.models import ResNet3dSlowFast
backbone = MODELS.build(cfg.model).backbone
assert type(backbone) is ResNet3dSlowFast
assert (backbone.resample_rate, backbone.speed_ratio) == (4, 4)
assert backbone.slow_path.lateral_norm and backbone.slow_path.fusion_kernel == 7
print("built", type(backbone).__module__)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "built slowfast_fast.models.resnet3d_slowfast"


def test_recognizer_with_our_backbone_matches(registry, tmp_path):
    import slowfast_fast.models.mmaction  # noqa: F401  (registers FastResNet3dSlowFast)

    model_cfg = dict(
        type="Recognizer3D",
        backbone=dict(type="FastResNet3dSlowFast", **copy.deepcopy(BACKBONE)),
        cls_head=HEAD,
    )
    ours = registry.build(copy.deepcopy(model_cfg))
    ours.init_weights()  # mmengine's init walk calls our init_weights
    model_cfg["backbone"]["type"] = "ResNet3dSlowFast"
    ref = registry.build(model_cfg)
    state = randomized_state(ours.state_dict(), seed=0)
    ref.load_state_dict(state, strict=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    ours.eval()
    inputs = clip((1, 2, 3, 16, 33, 33))  # (N, views, C, T, H, W)
    with torch.no_grad():
        want = ref(inputs, mode="tensor", stage="head")
        got = ours(inputs, mode="tensor", stage="head")
    assert_rel_close(got, want, 1e-5, "class scores")

    checkpoint = tmp_path / "recognizer.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": ref.state_dict()}, checkpoint)
    backbone = ResNet3dSlowFast(**copy.deepcopy(BACKBONE))
    ignored = load_mmaction_checkpoint(backbone, checkpoint)
    assert ignored and all(k.startswith("cls_head.") for k in ignored)
    assert state_dicts_equal(backbone.state_dict(), ref.backbone.state_dict())
