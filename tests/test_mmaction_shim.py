"""mmaction2 1.2.0's wheel lacks mmaction/models/localizers/drn: importing slowfast_fast.models.mmaction
must make README's config recipe work on it, with a placeholder only where the module is missing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmengine")
pytest.importorskip("mmcv")
mmaction_spec = importlib.util.find_spec("mmaction")
if mmaction_spec is None:
    pytest.skip("mmaction2 is not installed", allow_module_level=True)
MMACTION_DIR = Path(mmaction_spec.submodule_search_locations[0])
SHIPPED = (
    MMACTION_DIR
    / ".mim"
    / "configs"
    / "recognition"
    / "slowfast"
    / "slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb.py"
)


def run_fresh(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(
    (MMACTION_DIR / "models" / "localizers" / "drn").is_dir(), reason="this mmaction2 ships the drn module"
)
def test_readme_recipe_on_the_stock_wheel(tmp_path):
    """A fresh interpreter with no test stub: the shipped SlowFast config with README's two lines
    builds a recognizer around our backbone, and DRN says why it is unavailable, also built from a
    config (the placeholder is registered)."""
    switch = tmp_path / "switch.py"
    switch.write_text(
        f"_base_ = [{str(SHIPPED)!r}]\n"
        "custom_imports = dict(imports=['slowfast_fast.models.mmaction'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(type='FastResNet3dSlowFast'))\n"
    )
    code = f"""
from mmengine.config import Config
from mmaction.registry import MODELS
from mmaction.utils import register_all_modules
cfg = Config.fromfile({str(switch)!r})
register_all_modules()
model = MODELS.build(cfg.model)
print(type(model).__name__, type(model.backbone).__module__, model.backbone.speed_ratio)
from mmaction.models.localizers import DRN
try:
    DRN()
except ImportError as exc:
    print("DRN:", exc)
try:
    MODELS.build(dict(type="DRN"))
except ImportError as exc:
    print("DRN from a config:", exc)
"""
    result = run_fresh(code)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-3] == "Recognizer3D slowfast_fast.models.resnet3d_slowfast 4", result.stdout
    assert lines[-2].startswith("DRN: this mmaction2 installation has no mmaction/models/localizers/drn")
    # mmengine's build prefixes the class it failed to build: the placeholder's reason is in it
    assert lines[-1].startswith("DRN from a config:")
    assert "localizers/drn (the 1.2.0 wheel omits it)" in lines[-1]


def test_no_placeholder_when_drn_exists(mmaction_backbones, monkeypatch, tmp_path):
    """With a drn folder next to mmaction's models, nothing is put in sys.modules."""
    import slowfast_fast.models.mmaction as shim

    (tmp_path / "models" / "localizers" / "drn").mkdir(parents=True)
    fake_spec = importlib.util.spec_from_loader("mmaction", loader=None, is_package=True)
    fake_spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: fake_spec)
    monkeypatch.delitem(sys.modules, "mmaction.models.localizers.drn", raising=False)
    monkeypatch.delitem(sys.modules, "mmaction.models.localizers.drn.drn", raising=False)
    shim._install_missing_drn()
    assert "mmaction.models.localizers.drn.drn" not in sys.modules
