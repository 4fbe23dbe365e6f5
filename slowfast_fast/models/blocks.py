"""Residual blocks of ResNet3d, with mmaction2's arguments, kernel/stride rules and module names."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from slowfast_fast.models.layers import (
    DEFAULT_ACT_CFG,
    DEFAULT_CONV_CFG,
    DEFAULT_NORM_CFG,
    ConvModule,
    build_activation,
)
from slowfast_fast.models.non_local import NonLocal3d

_EMPTY = MappingProxyType({})


class _ResidualBlock(nn.Module):
    """The shared forward: ``act(convs(x) + shortcut(x))``, then the optional non-local block."""

    expansion = 1
    last_conv_name = ""  # the branch's last conv, which the shortcut is added to
    # Set by :func:`slowfast_fast.models.optimize_for_inference` once the last conv adds the shortcut
    # and applies the block's activation itself (one fused op instead of conv, add and activation).
    fused_tail = False

    def _branch_head(self, x: torch.Tensor) -> torch.Tensor:
        """The branch up to (not including) its last conv."""
        raise NotImplementedError

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return getattr(self, self.last_conv_name)(self._branch_head(x)) + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_tail:
            identity = x if self.downsample is None else self.downsample(x)
            out = getattr(self, self.last_conv_name)(self._branch_head(x), identity)
        else:
            if self.with_cp and x.requires_grad:
                out = cp.checkpoint(self._inner_forward, x, use_reentrant=False)
            else:
                out = self._inner_forward(x)
            out = self.relu(out)
        if self.non_local:
            out = self.non_local_block(out)
        return out

    def _finish(self, downsample, act_cfg, non_local, non_local_cfg, out_channels) -> None:
        # Registered after the convs, as in mmaction2, so state_dict keys come in the same order.
        self.downsample = downsample
        self.relu = build_activation(act_cfg)
        if non_local:
            self.non_local_block = NonLocal3d(out_channels, **non_local_cfg)


class BasicBlock3d(_ResidualBlock):
    """Two 3x3(x3) convs. ``style`` has no effect here (the first conv carries the stride), as in mmaction2.

    Args:
        inplanes, planes: input channels, and output channels ``planes * expansion``.
        spatial_stride, temporal_stride, dilation: of the first conv.
        downsample: the shortcut module, or ``None`` for the identity.
        style: ``'pytorch'`` or ``'caffe'``.
        inflate: 3x3x3 kernels if True, else 1x3x3.
        inflate_style: accepted for symmetry with Bottleneck3d; unused.
        non_local, non_local_cfg: append a NonLocal3d block with these arguments.
        conv_cfg, norm_cfg, act_cfg: layer configs (see :mod:`slowfast_fast.models.layers`).
        with_cp: recompute the block in backward (activation checkpointing) to save memory.
    """

    expansion = 1
    last_conv_name = "conv2"

    def __init__(
        self,
        inplanes: int,
        planes: int,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
        inflate: bool = True,
        inflate_style: str = "3x1x1",
        non_local: bool = False,
        non_local_cfg: Mapping = _EMPTY,
        conv_cfg: Mapping = DEFAULT_CONV_CFG,
        norm_cfg: Mapping = DEFAULT_NORM_CFG,
        act_cfg: Mapping = DEFAULT_ACT_CFG,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        self.inplanes, self.planes = inplanes, planes
        self.spatial_stride, self.temporal_stride, self.dilation = spatial_stride, temporal_stride, dilation
        self.style, self.inflate, self.with_cp, self.non_local = style, inflate, with_cp, non_local
        kt, pt = (3, 1) if inflate else (1, 0)
        self.conv1 = ConvModule(
            inplanes,
            planes,
            (kt, 3, 3),
            stride=(temporal_stride, spatial_stride, spatial_stride),
            padding=(pt, dilation, dilation),
            dilation=(1, dilation, dilation),
            bias=False,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
        )
        self.conv2 = ConvModule(
            planes,
            planes * self.expansion,
            (kt, 3, 3),
            stride=1,
            padding=(pt, 1, 1),
            bias=False,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=None,
        )
        self._finish(downsample, act_cfg, non_local, non_local_cfg, planes * self.expansion)

    def _branch_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class Bottleneck3d(_ResidualBlock):
    """1x1 -> 3x3 -> 1x1 bottleneck with a 3-frame temporal kernel on conv1 (``3x1x1``) or conv2 (``3x3x3``).

    Args are those of :class:`BasicBlock3d`; ``style='pytorch'`` puts the stride on conv2, ``'caffe'``
    on conv1; ``inflate_style`` is ``'3x1x1'`` or ``'3x3x3'``.
    """

    expansion = 4
    last_conv_name = "conv3"

    def __init__(
        self,
        inplanes: int,
        planes: int,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
        inflate: bool = True,
        inflate_style: str = "3x1x1",
        non_local: bool = False,
        non_local_cfg: Mapping = _EMPTY,
        conv_cfg: Mapping = DEFAULT_CONV_CFG,
        norm_cfg: Mapping = DEFAULT_NORM_CFG,
        act_cfg: Mapping = DEFAULT_ACT_CFG,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        if inflate_style not in ("3x1x1", "3x3x3"):
            raise ValueError(f"inflate_style must be '3x1x1' or '3x3x3', got {inflate_style!r}")
        self.inplanes, self.planes = inplanes, planes
        self.spatial_stride, self.temporal_stride, self.dilation = spatial_stride, temporal_stride, dilation
        self.style, self.inflate, self.inflate_style = style, inflate, inflate_style
        self.with_cp, self.non_local = with_cp, non_local
        stride = (temporal_stride, spatial_stride, spatial_stride)
        stride1, stride2 = ((1, 1, 1), stride) if style == "pytorch" else (stride, (1, 1, 1))
        kt1, kt2 = (3, 1) if inflate and inflate_style == "3x1x1" else (1, 3) if inflate else (1, 1)
        common = dict(bias=False, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
        self.conv1 = ConvModule(
            inplanes, planes, (kt1, 1, 1), stride=stride1, padding=(kt1 // 2, 0, 0), act_cfg=act_cfg, **common
        )
        self.conv2 = ConvModule(
            planes,
            planes,
            (kt2, 3, 3),
            stride=stride2,
            padding=(kt2 // 2, dilation, dilation),
            dilation=(1, dilation, dilation),
            act_cfg=act_cfg,
            **common,
        )
        self.conv3 = ConvModule(planes, planes * self.expansion, 1, act_cfg=None, **common)
        self._finish(downsample, act_cfg, non_local, non_local_cfg, planes * self.expansion)

    def _branch_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))
