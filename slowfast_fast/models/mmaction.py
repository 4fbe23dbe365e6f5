"""Registers the backbone in mmaction2's model registry as ``FastResNet3dSlowFast`` (on import).

In an mmaction2 config::

    custom_imports = dict(imports=['slowfast_fast.models.mmaction'], allow_failed_imports=False)
    model = dict(backbone=dict(type='FastResNet3dSlowFast', ...))  # ResNet3dSlowFast's arguments

mmaction2 1.2.0's wheel omits ``mmaction/models/localizers/drn/``, which ``mmaction.models`` imports,
so on that wheel ``import mmaction.models`` (and every config build) fails. When, and only when,
that folder is missing, importing this module puts a placeholder ``DRN`` in its place: the rest of
``mmaction.models`` then imports; building a DRN (directly, or from a config: the placeholder is
registered as ``DRN``) raises an error that says why. Import this module
before anything imports ``mmaction.models`` (a config's ``custom_imports`` does).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch.nn as nn

_DRN_PACKAGE = "mmaction.models.localizers.drn"


class DRN(nn.Module):
    """Placeholder for mmaction2's DRN localizer where the installed mmaction2 lacks it."""

    def __init__(self, *args, **kwargs) -> None:
        raise ImportError(
            "this mmaction2 installation has no mmaction/models/localizers/drn (the 1.2.0 wheel omits it); "
            "slowfast_fast.models.mmaction put a placeholder there so that the rest of mmaction.models "
            "imports. To use DRN, install mmaction2 from its source repository."
        )


def _install_missing_drn() -> None:
    if _DRN_PACKAGE + ".drn" in sys.modules:
        return
    # Looking the subpackage up with importlib would import mmaction.models, which is what fails:
    # look for the folder next to the top-level package instead.
    spec = importlib.util.find_spec("mmaction")
    if spec is None or not spec.submodule_search_locations:
        return
    if any((Path(p) / "models" / "localizers" / "drn").is_dir() for p in spec.submodule_search_locations):
        return
    package = types.ModuleType(_DRN_PACKAGE)
    package.__path__ = []
    module = types.ModuleType(_DRN_PACKAGE + ".drn")
    module.DRN = DRN
    package.drn = module
    sys.modules[_DRN_PACKAGE] = package
    sys.modules[_DRN_PACKAGE + ".drn"] = module


_install_missing_drn()

from mmaction.registry import MODELS  # noqa: E402  (after the shim: nothing above imports mmaction.models)

from slowfast_fast.models.resnet3d_slowfast import ResNet3dSlowFast  # noqa: E402

MODELS.register_module(name="FastResNet3dSlowFast", module=ResNet3dSlowFast)

# The real DRN registers itself when its module imports; the placeholder is registered here, so that a
# config asking for type='DRN' gets the placeholder's explanation rather than "not in the registry".
if getattr(sys.modules.get(_DRN_PACKAGE + ".drn"), "DRN", None) is DRN and "DRN" not in MODELS.module_dict:
    MODELS.register_module(name="DRN", module=DRN)
