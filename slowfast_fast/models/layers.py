"""Conv/norm/activation building blocks with mmcv's module names, built from mmcv-style config dicts.

Only what a SlowFast backbone can be configured with in plain PyTorch is accepted; any other
config raises a ``ValueError`` that names the argument, so nothing is silently computed differently.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

# The defaults of mmaction2's ResNet3d, read-only so that sharing them between instances is safe.
DEFAULT_CONV_CFG = MappingProxyType({"type": "Conv3d"})
DEFAULT_NORM_CFG = MappingProxyType({"type": "BN3d", "requires_grad": True})
DEFAULT_ACT_CFG = MappingProxyType({"type": "ReLU", "inplace": True})
_RELU = MappingProxyType({"type": "ReLU"})  # mmcv ConvModule's default

CONV_TYPES = {"Conv2d": nn.Conv2d, "Conv3d": nn.Conv3d}
NORM_TYPES = {"BN3d": nn.BatchNorm3d, "SyncBN": nn.SyncBatchNorm}
ACT_TYPES = {
    "ReLU": nn.ReLU,
    "LeakyReLU": nn.LeakyReLU,
    "ReLU6": nn.ReLU6,
    "ELU": nn.ELU,
    "SiLU": nn.SiLU,
    "GELU": nn.GELU,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
}
# mmcv's ConvModule gives these no ``inplace`` argument (their torch classes have none).
_NO_INPLACE = ("Tanh", "Sigmoid", "GELU")


def _layer_class(cfg: Mapping, what: str, table: dict) -> tuple[type, dict]:
    """The layer class a config names, and the config's remaining keyword arguments."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"{what} must be a dict with a 'type' key, got {cfg!r}")
    rest = dict(cfg)
    kind = rest.pop("type")
    if inspect.isclass(kind) and kind in table.values():
        return kind, rest
    if kind not in table:
        raise ValueError(
            f"{what} type {kind!r} is not supported by slowfast_fast (supported: {', '.join(table)})"
        )
    return table[kind], rest


def check_conv_cfg(conv_cfg: Mapping | None, what: str = "conv_cfg") -> None:
    """A 3D backbone's convs must be plain ``Conv3d``: mmcv builds a Conv2d for ``None``."""
    if conv_cfg is None:
        raise ValueError(f"{what}=None would build 2D convs; slowfast_fast supports dict(type='Conv3d')")
    cls, rest = _layer_class(conv_cfg, what, CONV_TYPES)
    if cls is not nn.Conv3d or rest:
        raise ValueError(
            f"{what} {dict(conv_cfg)!r} is not supported by slowfast_fast: use dict(type='Conv3d')"
        )


def check_norm_cfg(norm_cfg: Mapping | None, what: str = "norm_cfg") -> None:
    if norm_cfg is None:
        raise ValueError(f"{what}=None (no normalization) is not supported by slowfast_fast")
    _layer_class(norm_cfg, what, NORM_TYPES)


def check_act_cfg(act_cfg: Mapping | None, what: str = "act_cfg") -> None:
    if act_cfg is None:
        raise ValueError(f"{what}=None is not supported (mmaction2's blocks need an activation)")
    _layer_class(act_cfg, what, ACT_TYPES)


def build_norm(norm_cfg: Mapping, num_features: int) -> nn.Module:
    """A norm layer as mmcv's ``build_norm_layer`` makes it (``requires_grad`` key, eps 1e-5)."""
    cls, kwargs = _layer_class(norm_cfg, "norm_cfg", NORM_TYPES)
    requires_grad = kwargs.pop("requires_grad", True)
    kwargs.setdefault("eps", 1e-5)
    layer = cls(num_features, **kwargs)
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return layer


def build_activation(act_cfg: Mapping) -> nn.Module:
    cls, kwargs = _layer_class(act_cfg, "act_cfg", ACT_TYPES)
    return cls(**kwargs)


def act_name(act_cfg: Mapping) -> str:
    kind = act_cfg["type"]
    return kind if isinstance(kind, str) else next(k for k, v in ACT_TYPES.items() if v is kind)


def kaiming_init(module: nn.Module, a: float = 0.0, nonlinearity: str = "relu") -> None:
    """mmengine's ``kaiming_init`` defaults: normal, fan_out, zero bias."""
    nn.init.kaiming_normal_(module.weight, a=a, mode="fan_out", nonlinearity=nonlinearity)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0.0)


def constant_init(module: nn.Module, value: float, bias: float = 0.0) -> None:
    if getattr(module, "weight", None) is not None:
        nn.init.constant_(module.weight, value)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


def uses_batch_stats(bn: _BatchNorm) -> bool:
    """Whether ``bn`` normalizes with the batch's statistics (PyTorch's rule in ``_BatchNorm.forward``)."""
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def folded_batch_norm(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``bn(x) == x * scale + shift`` per channel for a BN using running stats.

    Written with differentiable ops so gradients reach the BN's affine parameters.
    """
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


class ConvModule(nn.Module):
    """conv -> norm -> activation, with mmcv ``ConvModule``'s submodule names ``conv``, ``bn``,
    ``activate`` (so state_dict keys match) and its construction-time initialization.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv3d``.
        bias: ``'auto'`` adds a bias only without a norm layer (mmcv's rule).
        conv_cfg: ``dict(type='Conv3d')`` or ``dict(type='Conv2d')``; ``None`` means Conv2d, as in mmcv.
        norm_cfg: ``dict(type='BN3d'|'SyncBN', ...)`` or ``None`` for no norm.
        act_cfg: an activation config or ``None`` for none.
        inplace: default ``inplace`` for activations that take one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool | str = "auto",
        conv_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = None,
        act_cfg: Mapping | None = _RELU,
        inplace: bool = True,
    ) -> None:
        super().__init__()
        conv_cls, conv_kwargs = _layer_class(conv_cfg or {"type": "Conv2d"}, "conv_cfg", CONV_TYPES)
        self.conv_cfg = None if conv_cfg is None else dict(conv_cfg)
        self.norm_cfg = None if norm_cfg is None else dict(norm_cfg)
        self.act_cfg = None if act_cfg is None else dict(act_cfg)
        self.with_norm = norm_cfg is not None
        self.with_activation = act_cfg is not None
        if bias == "auto":
            bias = not self.with_norm
        self.with_bias = bias
        self.conv = conv_cls(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            **conv_kwargs,
        )
        self.norm_name = None
        if self.with_norm:
            self.norm_name = "bn"
            self.bn = build_norm(norm_cfg, out_channels)
        if self.with_activation:
            cfg = dict(act_cfg)
            if act_name(cfg) not in _NO_INPLACE:
                cfg.setdefault("inplace", inplace)
            self.activate = build_activation(cfg)
        self.init_weights()

    @property
    def norm(self) -> nn.Module | None:
        return self.bn if self.with_norm else None

    def init_weights(self) -> None:
        # As mmcv's ConvModule: the LeakyReLU gain only for the string 'LeakyReLU'; an activation given
        # as a class (type=nn.LeakyReLU) gets the ReLU gain there, so the same weights come out here.
        if self.with_activation and self.act_cfg["type"] == "LeakyReLU":
            kaiming_init(self.conv, a=self.act_cfg.get("negative_slope", 0.01), nonlinearity="leaky_relu")
        else:
            kaiming_init(self.conv)
        if self.with_norm:
            constant_init(self.bn, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.with_norm:
            x = self.bn(x)
        if self.with_activation:
            x = self.activate(x)
        return x


class DeConvModule(nn.Module):
    """Transposed conv -> BN -> ReLU: mmaction2's lateral for ``lateral_inv=True`` (same names)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=(1, 1, 1),
        padding=0,
        bias: bool = False,
        with_bn: bool = True,
        with_relu: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride
        self.with_bn = with_bn
        self.with_relu = with_relu
        self.conv = nn.ConvTranspose3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t, h, w = x.shape
        size = (n, self.out_channels, self.stride[0] * t, self.stride[1] * h, self.stride[2] * w)
        x = self.conv(x, output_size=size)
        if self.with_bn:
            x = self.bn(x)
        if self.with_relu:
            x = self.relu(x)
        return x
