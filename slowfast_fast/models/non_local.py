"""The 3D non-local block (Wang et al., "Non-local Neural Networks") with mmcv ``NonLocal3d``'s
arguments, module names and initialization."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from slowfast_fast.models.layers import DEFAULT_CONV_CFG, ConvModule, check_conv_cfg, check_norm_cfg

MODES = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")


def _normal_init(module: nn.Module, std: float) -> None:
    nn.init.normal_(module.weight, 0.0, std)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0.0)


class NonLocal3d(nn.Module):
    """``x + conv_out(pairwise(theta(x), phi(x)) @ g(x))`` over all T*H*W positions.

    Args:
        in_channels: channels of the input ``(N, C, T, H, W)``.
        sub_sample: max-pool g and phi by (1, 2, 2) (spatially) before the pairwise product.
        conv_cfg: must be ``dict(type='Conv3d')``.
        reduction: ``inter_channels = max(in_channels // reduction, 1)``.
        use_scale: divide the ``embedded_gaussian`` logits by ``sqrt(inter_channels)``.
        norm_cfg: optional norm after ``conv_out`` (BN3d or SyncBN).
        mode: one of ``gaussian``, ``embedded_gaussian``, ``dot_product``, ``concatenation``.
        std, zeros_init: initialization (normal with ``std``; ``conv_out`` zero so the block starts
            as the identity).
    """

    def __init__(
        self,
        in_channels: int,
        sub_sample: bool = False,
        conv_cfg: Mapping = DEFAULT_CONV_CFG,
        reduction: int = 2,
        use_scale: bool = True,
        norm_cfg: Mapping | None = None,
        mode: str = "embedded_gaussian",
        std: float = 0.01,
        zeros_init: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"non_local_cfg mode must be one of {MODES}, got {mode!r}")
        check_conv_cfg(conv_cfg, "non_local_cfg conv_cfg")
        if norm_cfg is not None:
            check_norm_cfg(norm_cfg, "non_local_cfg norm_cfg")
        self.in_channels = in_channels
        self.reduction = reduction
        self.use_scale = use_scale
        self.inter_channels = max(in_channels // reduction, 1)
        self.mode = mode
        self.sub_sample = sub_sample
        inter = self.inter_channels

        # Construction order follows mmcv so that a seeded build draws the same random numbers.
        self.g = ConvModule(in_channels, inter, 1, conv_cfg=conv_cfg, act_cfg=None)
        self.conv_out = ConvModule(inter, in_channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=None)
        if mode != "gaussian":
            self.theta = ConvModule(in_channels, inter, 1, conv_cfg=conv_cfg, act_cfg=None)
            self.phi = ConvModule(in_channels, inter, 1, conv_cfg=conv_cfg, act_cfg=None)
        if mode == "concatenation":
            # A 2D conv over the (N, 2*inter, THW, THW) pair map, as mmcv builds it.
            self.concat_project = ConvModule(inter * 2, 1, 1, bias=False)
        self.init_weights(std, zeros_init)

        if sub_sample:
            pool = nn.MaxPool3d(kernel_size=(1, 2, 2))
            self.g = nn.Sequential(self.g, pool)
            self.phi = nn.Sequential(self.phi, pool) if mode != "gaussian" else pool

    def init_weights(self, std: float = 0.01, zeros_init: bool = True) -> None:
        for name in ("g",) if self.mode == "gaussian" else ("g", "theta", "phi"):
            _normal_init(getattr(self, name).conv, std)
        target = self.conv_out.conv if self.conv_out.norm_cfg is None else self.conv_out.bn
        if zeros_init:
            nn.init.constant_(target.weight, 0.0)
            if target.bias is not None:
                nn.init.constant_(target.bias, 0.0)
        else:
            _normal_init(target, std)

    def _pairwise(self, theta_x: torch.Tensor, phi_x: torch.Tensor) -> torch.Tensor:
        if self.mode == "concatenation":
            h, w = theta_x.shape[2], phi_x.shape[3]
            pair = torch.cat([theta_x.repeat(1, 1, 1, w), phi_x.repeat(1, 1, h, 1)], dim=1)
            weight = self.concat_project(pair).reshape(pair.shape[0], h, w)
            return weight / weight.shape[-1]
        weight = torch.matmul(theta_x, phi_x)
        if self.mode == "dot_product":
            return weight / weight.shape[-1]
        if self.mode == "embedded_gaussian" and self.use_scale:
            weight = weight / theta_x.shape[-1] ** 0.5
        return weight.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        inter = self.inter_channels
        g_x = self.g(x).reshape(n, inter, -1).permute(0, 2, 1)
        if self.mode == "gaussian":
            theta_x = x.reshape(n, c, -1).permute(0, 2, 1)
            phi_x = (self.phi(x) if self.sub_sample else x).reshape(n, c, -1)
        elif self.mode == "concatenation":
            theta_x = self.theta(x).reshape(n, inter, -1, 1)
            phi_x = self.phi(x).reshape(n, inter, 1, -1)
        else:
            theta_x = self.theta(x).reshape(n, inter, -1).permute(0, 2, 1)
            phi_x = self.phi(x).reshape(n, inter, -1)
        y = torch.matmul(self._pairwise(theta_x, phi_x), g_x)
        y = y.permute(0, 2, 1).reshape(n, inter, *x.shape[2:])
        return x + self.conv_out(y)
