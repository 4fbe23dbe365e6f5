"""A SlowFast action recognizer in plain PyTorch: the backbone plus mmaction2's ``SlowFastHead``, with
mmaction2's recognizer checkpoint keys, so a whole mmaction2 SlowFast checkpoint loads strictly and
classifies without mmcv or mmengine."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from slowfast_fast.models.checkpoint import read_recognizer_state_dict
from slowfast_fast.models.resnet3d_slowfast import ResNet3dSlowFast


class SlowFastHead(nn.Module):
    """mmaction2's ``SlowFastHead``: global average pool of each pathway, concat (fast, then slow),
    dropout, then a linear classifier ``fc_cls``.

    Args:
        num_classes: number of classes.
        in_channels: channels of the concatenated features (slow + fast).
        dropout_ratio: dropout probability before ``fc_cls`` (0 for none).
        init_std: std of the normal initialization of ``fc_cls.weight`` (bias 0), as in mmaction2.
    """

    def __init__(
        self, num_classes: int, in_channels: int, dropout_ratio: float = 0.8, init_std: float = 0.01
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.dropout_ratio = dropout_ratio
        self.init_std = init_std
        self.dropout = nn.Dropout(p=dropout_ratio) if dropout_ratio != 0 else None
        self.fc_cls = nn.Linear(in_channels, num_classes)
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))

    def init_weights(self) -> None:
        nn.init.normal_(self.fc_cls.weight, 0.0, self.init_std)
        nn.init.zeros_(self.fc_cls.bias)

    def forward(self, x: Sequence[torch.Tensor]) -> torch.Tensor:
        """Class scores ``(N, num_classes)`` of backbone features ``(x_slow, x_fast)``."""
        x_slow, x_fast = x
        x = torch.cat((self.avg_pool(x_fast), self.avg_pool(x_slow)), dim=1)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc_cls(x.flatten(1))


def _feature_channels(backbone: ResNet3dSlowFast) -> int:
    return backbone.slow_path.feat_dim + backbone.fast_path.feat_dim


class SlowFastRecognizer(nn.Module):
    """SlowFast backbone + classification head, mmaction2's ``Recognizer3D`` with a ``SlowFastHead``
    in plain PyTorch: ``state_dict`` keys ``backbone.*`` and ``cls_head.fc_cls.*``.

    Args:
        num_classes: number of classes (400 for Kinetics-400).
        backbone: a :class:`ResNet3dSlowFast`, or the keyword arguments to build one (default:
            mmaction2's SlowFast R50 4x16).
        dropout_ratio: the head's dropout probability (mmaction2's SlowFast configs use 0.5).
        init_std: std of the head's initialization.

    ``forward`` takes one normalized clip ``(N, C, T, H, W)`` (normalized as mmaction2's
    ``ActionDataPreprocessor`` does: ``(x - mean) / std`` per channel), or the two pathways'
    inputs ``[x_slow, x_fast]``, and returns class scores (logits) ``(N, num_classes)``: mmaction2's
    ``Recognizer3D(..., mode='tensor', stage='head')`` on one view. To average several views of a video as
    mmaction2's ``average_clips='prob'`` does, take the mean of ``scores.softmax(-1)`` over the views.
    """

    def __init__(
        self,
        num_classes: int = 400,
        backbone: ResNet3dSlowFast | Mapping | None = None,
        dropout_ratio: float = 0.5,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if backbone is None:
            backbone = ResNet3dSlowFast()
        elif isinstance(backbone, Mapping):
            backbone = ResNet3dSlowFast(**backbone)
        elif not isinstance(backbone, ResNet3dSlowFast):
            raise TypeError(
                "backbone must be a ResNet3dSlowFast or a dict of its arguments, "
                f"got {type(backbone).__name__}"
            )
        self.backbone = backbone
        self.cls_head = SlowFastHead(num_classes, _feature_channels(backbone), dropout_ratio, init_std)

    def init_weights(self) -> None:
        """Initialize backbone and head as mmaction2 does (the backbone may load its ``pretrained``)."""
        self.backbone.init_weights()
        self.cls_head.init_weights()

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Class scores ``(N, num_classes)`` of a clip ``(N, C, T, H, W)`` or of ``[x_slow, x_fast]``."""
        return self.cls_head(self.backbone(x))

    def load_mmaction_checkpoint(
        self, checkpoint: str | os.PathLike | Mapping, *, weights_only: bool = True
    ) -> None:
        """Load a whole mmaction2 recognizer checkpoint (file, URL or loaded dict) strictly.

        Keys are mmaction2's (``backbone.*``, ``cls_head.fc_cls.*``), under a ``state_dict`` entry or
        not, ``module.`` prefixes dropped; a missing or unexpected key raises. ``weights_only`` is
        passed to ``torch.load`` for a path (False only for files you trust).
        """
        self.load_state_dict(read_recognizer_state_dict(checkpoint, weights_only=weights_only), strict=True)
