"""Registers the backbone in mmaction2's model registry as ``FastResNet3dSlowFast`` (on import).

In an mmaction2 config::

    custom_imports = dict(imports=['slowfast_fast.models.mmaction'], allow_failed_imports=False)
    model = dict(backbone=dict(type='FastResNet3dSlowFast', ...))  # ResNet3dSlowFast's arguments
"""

from mmaction.registry import MODELS

from slowfast_fast.models.resnet3d_slowfast import ResNet3dSlowFast

MODELS.register_module(name="FastResNet3dSlowFast", module=ResNet3dSlowFast)
