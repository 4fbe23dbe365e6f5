"""SlowFast: mmaction2 1.x's ResNet3dPathway and ResNet3dSlowFast in plain PyTorch, with the
pathway split and every "lateral conv, then concat" running as the fused ops of
:mod:`slowfast_fast.ops`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch
import torch.fx._symbolic_trace
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules import module as _module
from torch.nn.modules.batchnorm import _BatchNorm

from slowfast_fast import ops
from slowfast_fast._precision import autocast_enabled
from slowfast_fast.models.checkpoint import (
    load_checkpoint_file,
    load_state_dict_like_mmengine,
    unwrap_state_dict,
)
from slowfast_fast.models.layers import (
    ConvModule,
    DeConvModule,
    folded_batch_norm,
    kaiming_init,
    uses_batch_stats,
)
from slowfast_fast.models.resnet3d import _SHAPE_WARNING, ResNet3d, _copy_inflated


class ResNet3dPathway(ResNet3d):
    """One pathway of SlowFast: a :class:`ResNet3d` that also owns the lateral connections feeding it.

    Each lateral maps the other pathway's features after the stem (``conv1_lateral``) and after
    stage i (``layer{i}_lateral``, none after the last stage) to extra input channels of the next
    stage: ``Conv3d(C, C * lateral_infl // channel_ratio, (fusion_kernel, 1, 1),
    stride=(speed_ratio, 1, 1))``, plus norm and activation if ``lateral_norm``.

    Args:
        lateral: build lateral connections into this pathway.
        lateral_inv: laterals are transposed convs (upsampling time) instead.
        lateral_norm: laterals are conv -> norm -> act instead of a bare conv.
        speed_ratio: frame-rate ratio between the pathways (alpha); the laterals' temporal stride.
        channel_ratio: channel ratio between the pathways (beta).
        fusion_kernel: temporal kernel size of the laterals.
        lateral_infl: channel inflation of the laterals.
        lateral_activate: per lateral (conv1, layer1, layer2, layer3), whether it exists.
        **kwargs: the :class:`ResNet3d` arguments.
    """

    def __init__(
        self,
        lateral: bool = False,
        lateral_inv: bool = False,
        lateral_norm: bool = False,
        speed_ratio: int = 8,
        channel_ratio: int = 8,
        fusion_kernel: int = 5,
        lateral_infl: int = 2,
        lateral_activate: Sequence[int] = (1, 1, 1, 1),
        **kwargs,
    ) -> None:
        # ResNet3d.__init__ reads lateral_inplanes to widen each stage's input.
        self.lateral = lateral
        self.lateral_inv = lateral_inv
        self.lateral_norm = lateral_norm
        self.speed_ratio = speed_ratio
        self.channel_ratio = channel_ratio
        self.fusion_kernel = fusion_kernel
        self.lateral_infl = lateral_infl
        self.lateral_activate = lateral_activate
        self.lateral_inplanes = self._lateral_inplanes(kwargs)
        super().__init__(**kwargs)

        self.inplanes = self.base_channels
        if lateral and lateral_activate[0] == 1:
            self.conv1_lateral = self._make_lateral(self.inplanes)
        self.lateral_connections = []
        for i in range(len(self.stage_blocks)):
            self.inplanes = self.base_channels * 2**i * self.block.expansion
            if lateral and i != self.num_stages - 1 and lateral_activate[i + 1]:
                name = f"layer{i + 1}_lateral"
                setattr(self, name, self._make_lateral(self.inplanes))
                self.lateral_connections.append(name)

    def _make_lateral(self, inplanes: int) -> nn.Module:
        kernel = (self.fusion_kernel, 1, 1)
        stride = (self.speed_ratio, 1, 1)
        padding = ((self.fusion_kernel - 1) // 2, 0, 0)
        if self.lateral_inv:
            return DeConvModule(
                inplanes * self.channel_ratio,
                inplanes * self.channel_ratio // self.lateral_infl,
                kernel_size=kernel,
                stride=stride,
                padding=padding,
            )
        return ConvModule(
            inplanes // self.channel_ratio,
            inplanes * self.lateral_infl // self.channel_ratio,
            kernel_size=kernel,
            stride=stride,
            padding=padding,
            bias=False,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg if self.lateral_norm else None,
            act_cfg=self.act_cfg if self.lateral_norm else None,
        )

    def _lateral_inplanes(self, kwargs: Mapping) -> list[int]:
        """Extra input channels of each stage, by mmaction2's formula (which the laterals' widths follow)."""
        expansion = 1 if kwargs.get("depth", 50) < 50 else 4
        base_channels = kwargs.get("base_channels", 64)
        inplanes = []
        for i in range(kwargs.get("num_stages", 4)):
            if expansion % 2 == 0:
                planes = base_channels * 2**i * (expansion // 2) ** (i > 0)
            else:
                planes = base_channels * 2**i // 2 ** (i > 0)
            if not (self.lateral and self.lateral_activate[i]):
                inplanes.append(0)
            elif self.lateral_inv:
                inplanes.append(planes * self.channel_ratio // self.lateral_infl)
            else:
                inplanes.append(planes * self.lateral_infl // self.channel_ratio)
        return inplanes

    def fuse(self, x_slow: torch.Tensor, x_fast: torch.Tensor, lateral_name: str) -> torch.Tensor:
        """``cat([x_slow, <lateral_name>(x_fast)], dim=1)``, fused into one op where that is exact.

        The lateral module is called instead (mmaction2's computation) whenever the fused op would not
        compute what the call computes, or would skip something the call does (see :func:`_fusable`),
        and under ``torch.fx`` symbolic tracing (whose proxies the fused op cannot take).
        """
        lateral = getattr(self, lateral_name, None)
        if lateral is None:
            return x_slow
        modules = _fusable(lateral)
        if modules is None or isinstance(x_fast, torch.fx.Proxy):
            return torch.cat((x_slow, lateral(x_fast)), dim=1)
        conv, bn, relu = modules
        weight, bias, stride, padding = conv.weight, conv.bias, conv.stride[0], conv.padding[0]
        scale, shift = None, bias
        if bn is not None:
            scale, shift = folded_batch_norm(bn)
            if bias is not None:  # bn(conv(x) + b) == conv(x) * scale + (b * scale + shift)
                shift = shift + bias * scale
        if scale is None and shift is None and not relu:
            return ops.lateral_concat(x_slow, x_fast, weight, stride, padding)
        out = ops.lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift, relu=relu)
        return _as_module_path_under_autocast(out, x_slow, x_fast)

    def init_weights(self, pretrained: str | os.PathLike | None = None) -> None:
        """As :meth:`ResNet3d.init_weights`, then the stage laterals are kaiming-initialized (after
        loading too; ``conv1_lateral`` is not, exactly as in mmaction2)."""
        if pretrained:
            self.pretrained = pretrained
        super().init_weights()
        for name in self.lateral_connections:
            for m in getattr(self, name).modules():
                if isinstance(m, (nn.Conv3d, nn.Conv2d)):
                    kaiming_init(m)

    def _skip_inflation(self, name: str) -> bool:
        return "lateral" in name

    def _inflate_conv_params(
        self, conv3d: nn.Conv3d, state_dict_2d: Mapping, name_2d: str, inflated: list[str]
    ) -> None:
        """Lateral inputs widen a stage's first convs: the 2D weight is zero-padded over those channels."""
        weight_2d = state_dict_2d[name_2d + ".weight"]
        in_2d, in_3d = weight_2d.shape[1], conv3d.weight.shape[1]
        if in_3d < in_2d:
            warnings.warn(_SHAPE_WARNING.format(name_2d), stacklevel=3)
            return
        if in_3d > in_2d:
            pad = weight_2d.new_zeros((weight_2d.shape[0], in_3d - in_2d, *weight_2d.shape[2:]))
            weight_2d = torch.cat((weight_2d, pad), dim=1)
        _copy_inflated(conv3d, weight_2d, state_dict_2d, name_2d, inflated)

    def _frozen_modules(self) -> list[nn.Module]:
        modules = super()._frozen_modules()
        for i in range(1, self.frozen_stages + 1):
            lateral = getattr(self, f"layer{i}_lateral", None)
            if lateral is not None:
                modules.append(lateral)
        return modules


def _as_module_path_under_autocast(
    out: torch.Tensor, x_slow: torch.Tensor, x_fast: torch.Tensor
) -> torch.Tensor:
    """``out`` in the dtype calling the lateral module gives under autocast. The op computes
    ``conv * scale + shift`` as the reference does, promoted by the float32 folded BN to float32; the
    module's conv gives the autocast dtype and its BN keeps it, so ``cat`` gives
    ``promote(x_slow, autocast dtype)`` (bf16 for a bf16 slow pathway), as mmaction2 does."""
    device_type = x_fast.device.type
    if not autocast_enabled(device_type) or x_fast.dtype == torch.float64:
        return out
    want = torch.promote_types(x_slow.dtype, torch.get_autocast_dtype(device_type))
    return out if out.dtype == want else out.to(want)


def _fx_symbolic_tracing() -> bool:
    """Whether ``torch.fx.symbolic_trace`` is tracing the caller (not dynamo / torch.compile, which
    traces the fused ops: ``is_compiling`` comes first so that dynamo never reads the thread-local
    flag)."""
    return not torch.compiler.is_compiling() and _is_fx_tracing()


# is_fx_symbolic_tracing tells fx.symbolic_trace from torch.export (is_fx_tracing is true for both, and
# logs a warning): torch versions without it get is_fx_tracing.
_is_fx_tracing = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", None) or (
    torch.fx._symbolic_trace.is_fx_tracing
)


def _called_plainly(module: nn.Module) -> bool:
    """Calling ``module`` runs just its class's ``forward``: no forward or backward hooks or pre-hooks
    on it (the ``with_kwargs`` and ``always_call`` variants are kept in these dicts too), and no
    ``forward`` replaced on the instance. The global module hooks are checked once, in :func:`_fusable`."""
    return not (
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or "forward" in module.__dict__
    )


def _fusable(lateral: nn.Module) -> tuple[nn.Conv3d, _BatchNorm | None, bool] | None:
    """``(conv, bn or None, relu)`` when :meth:`ResNet3dPathway.fuse` may compute ``lateral(x_fast)``
    as ``lateral_concat`` without calling the module, else None.

    Only when nothing observes or changes the call (no module hooks, global or on the lateral or its
    submodules: pruning, old-style weight_norm and spectral_norm recompute the weight in a forward
    pre-hook), and the modules are what the fused op computes: a :class:`ConvModule` whose conv is a
    plain zero-padded ``(k, 1, 1)`` ``nn.Conv3d`` (a parametrization, computing ``weight`` on access,
    is fine; a bias is folded into the shift), whose norm, if any, is a BatchNorm using running
    statistics, and whose activation, if any, is ReLU. Checked on every call, since any of it can
    change between calls: a few dict and type tests, with the submodules read from ``_modules``
    (several times cheaper than ``nn.Module.__getattr__``). Under ``torch.fx`` symbolic tracing,
    :meth:`ResNet3dPathway.fuse` calls the module whatever this says.
    """
    if (
        _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    ):
        return None
    if type(lateral).forward is not ConvModule.forward or not _called_plainly(lateral):
        return None
    modules = lateral._modules
    conv = modules.get("conv")
    if not (
        isinstance(conv, nn.Conv3d)
        and type(conv).forward is nn.Conv3d.forward
        and type(conv)._conv_forward is nn.Conv3d._conv_forward
        and _called_plainly(conv)
        and conv.kernel_size[1:] == (1, 1)
        and conv.stride[1:] == (1, 1)
        and type(conv.padding) is tuple
        and conv.padding[1:] == (0, 0)
        and conv.padding[0] < conv.kernel_size[0]
        and conv.dilation == (1, 1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    ):
        return None
    bn = None
    if lateral.with_norm:
        bn = modules.get("bn")
        if not (
            isinstance(bn, _BatchNorm)
            and type(bn).forward in _BN_FORWARDS
            and _called_plainly(bn)
            and not uses_batch_stats(bn)
        ):
            return None
    relu = lateral.with_activation
    if relu:
        act = modules.get("activate")
        if type(act) is not nn.ReLU or not _called_plainly(act):
            return None
    return conv, bn, relu


# BatchNorm forwards that, using running statistics, are the per-channel affine of folded_batch_norm.
_BN_FORWARDS = (_BatchNorm.forward, nn.SyncBatchNorm.forward)


PATHWAY_TYPES = {"resnet3d": ResNet3dPathway}


def build_pathway(cfg: Mapping) -> ResNet3dPathway:
    """A pathway from a config dict whose ``type`` is ``'resnet3d'``."""
    if not (isinstance(cfg, Mapping) and "type" in cfg):
        raise TypeError('cfg must be a dict containing the key "type"')
    kwargs = dict(cfg)
    kind = kwargs.pop("type")
    if kind not in PATHWAY_TYPES:
        raise KeyError(f"Unrecognized pathway type {kind}")
    return PATHWAY_TYPES[kind](**kwargs)


DEFAULT_SLOW_PATHWAY = MappingProxyType(
    dict(
        type="resnet3d",
        depth=50,
        pretrained=None,
        lateral=True,
        conv1_kernel=(1, 7, 7),
        conv1_stride_t=1,
        pool1_stride_t=1,
        inflate=(0, 0, 1, 1),
    )
)
DEFAULT_FAST_PATHWAY = MappingProxyType(
    dict(
        type="resnet3d",
        depth=50,
        pretrained=None,
        lateral=False,
        base_channels=8,
        conv1_kernel=(5, 7, 7),
        conv1_stride_t=1,
        pool1_stride_t=1,
    )
)


class ResNet3dSlowFast(nn.Module):
    """SlowFast backbone (Feichtenhofer et al., https://arxiv.org/abs/1812.03982), a drop-in for
    ``mmaction.models.ResNet3dSlowFast``: same arguments, module names, state_dict keys and outputs.

    Input ``(N, C, T, H, W)`` or ``[x_slow, x_fast]`` (see :meth:`forward`); returns ``(x_slow, x_fast)``,
    the last-stage features of each pathway.
    The slow pathway sees every ``resample_rate``-th frame, the fast one every
    ``resample_rate // speed_ratio``-th.

    Args:
        pretrained: a 3D checkpoint of this whole backbone, loaded strictly by :meth:`init_weights`.
        resample_rate: temporal stride of the slow pathway's input (tau); a float works as in mmaction2.
        speed_ratio: frame-rate ratio fast/slow (alpha).
        channel_ratio: channel ratio slow/fast (beta).
        slow_pathway, fast_pathway: :class:`ResNet3dPathway` configs with ``type='resnet3d'``; the slow
            one gets ``speed_ratio`` and ``channel_ratio`` when it has laterals.
        init_cfg: accepted and stored; like mmaction2's (whose ``init_weights`` overrides mmengine's),
            it has no effect.

    Like mmaction2, the forward always applies each pathway's stem max-pool and never pool2, and
    ignores the pathways' ``with_pool1``, ``with_pool2`` and ``out_indices``.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        resample_rate: float = 8,
        speed_ratio: int = 8,
        channel_ratio: int = 8,
        slow_pathway: Mapping = DEFAULT_SLOW_PATHWAY,
        fast_pathway: Mapping = DEFAULT_FAST_PATHWAY,
        init_cfg: Mapping | Sequence[Mapping] | None = None,
    ) -> None:
        super().__init__()
        self.pretrained = pretrained
        # mmaction2 takes a float too (its forward divides by it): an integral one is kept as the int
        # it equals, any other as a float (10.5: the slow pathway reads frames 0, 10, 21, 31, ...).
        # Checked where a clip is split (pathway_inputs), not here: [x_slow, x_fast] inputs never use it.
        if isinstance(resample_rate, float) and resample_rate.is_integer():
            resample_rate = int(resample_rate)
        self.resample_rate = resample_rate
        self.speed_ratio = speed_ratio
        self.channel_ratio = channel_ratio
        self.init_cfg = init_cfg
        slow_pathway = dict(slow_pathway)
        if slow_pathway.get("lateral", False):
            slow_pathway["speed_ratio"] = speed_ratio
            slow_pathway["channel_ratio"] = channel_ratio
        self.slow_path = build_pathway(slow_pathway)
        self.fast_path = build_pathway(fast_pathway)

    def init_weights(self, pretrained: str | os.PathLike | None = None) -> None:
        """Load ``pretrained`` (strict, mmengine's key rules) if set, else initialize both pathways."""
        if pretrained:
            self.pretrained = pretrained
        if isinstance(self.pretrained, (str, os.PathLike)):
            checkpoint = load_checkpoint_file(self.pretrained)
            load_state_dict_like_mmengine(self, unwrap_state_dict(checkpoint), strict=True)
        elif self.pretrained is None:
            self.fast_path.init_weights()
            self.slow_path.init_weights()
        else:
            raise TypeError("pretrained must be a str or None")

    def pathway_inputs(self, x: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The two pathways' input clips: ``x`` split as mmaction2 does (nearest temporal resampling)
        when it is one clip, or ``x`` itself when it is already ``[x_slow, x_fast]``."""
        if isinstance(x, torch.Tensor):
            return ops.pathway_inputs(x, self.resample_rate, self.speed_ratio)
        if isinstance(x, Sequence) and not isinstance(x, str) and len(x) == 2:
            if all(isinstance(t, torch.Tensor) for t in x):
                for name, t in zip(("x_slow", "x_fast"), x, strict=True):
                    if t.dim() != 5:
                        raise ValueError(f"{name} must be (N, C, T, H, W), got shape {tuple(t.shape)}")
                return x[0], x[1]
        got = type(x).__name__
        if isinstance(x, Sequence) and not isinstance(x, str):
            got += f" of {len(x)} items ({', '.join(type(t).__name__ for t in x[:4])})"
        raise TypeError(
            "ResNet3dSlowFast takes a clip tensor (N, C, T, H, W) or a sequence [x_slow, x_fast] of two "
            f"such tensors (one per pathway, already sampled); got {got}"
        )

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_slow, x_fast)`` features of clip ``x`` ``(N, C, T, H, W)``, or of pathway inputs
        ``[x_slow, x_fast]`` sampled by the data pipeline (the PySlowFast / pytorchvideo convention:
        PySlowFast picks the slow frames with linspace, not nearest resampling); a single clip is
        processed exactly as mmaction2 does."""
        if _fx_symbolic_tracing():
            return self._forward_as_mmaction(x)
        slow, fast = self.slow_path, self.fast_path
        x_slow, x_fast = self.pathway_inputs(x)
        x_slow = slow.maxpool(slow.conv1(x_slow))
        x_fast = fast.maxpool(fast.conv1(x_fast))
        if slow.lateral:
            x_slow = slow.fuse(x_slow, x_fast, "conv1_lateral")
        last = len(slow.res_layers) - 1
        for i, layer_name in enumerate(slow.res_layers):
            x_slow = getattr(slow, layer_name)(x_slow)
            x_fast = getattr(fast, layer_name)(x_fast)
            if i != last and slow.lateral:
                x_slow = slow.fuse(x_slow, x_fast, f"layer{i + 1}_lateral")
        return x_slow, x_fast

    def _forward_as_mmaction(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mmaction2's forward, call for call (``F.interpolate``, every lateral module called, then
        ``torch.cat``): what ``torch.fx.symbolic_trace`` records, as it does for mmaction2's model (the
        fused ops validate their arguments, which a trace's proxies cannot be)."""
        slow, fast = self.slow_path, self.fast_path
        x_slow = F.interpolate(x, mode="nearest", scale_factor=(1.0 / self.resample_rate, 1.0, 1.0))
        x_slow = slow.maxpool(slow.conv1(x_slow))
        x_fast = F.interpolate(
            x, mode="nearest", scale_factor=(1.0 / (self.resample_rate // self.speed_ratio), 1.0, 1.0)
        )
        x_fast = fast.maxpool(fast.conv1(x_fast))
        if slow.lateral:
            x_slow = torch.cat((x_slow, slow.conv1_lateral(x_fast)), dim=1)
        last = len(slow.res_layers) - 1
        for i, layer_name in enumerate(slow.res_layers):
            x_slow = getattr(slow, layer_name)(x_slow)
            x_fast = getattr(fast, layer_name)(x_fast)
            if i != last and slow.lateral:
                x_slow = torch.cat((x_slow, getattr(slow, f"layer{i + 1}_lateral")(x_fast)), dim=1)
        return x_slow, x_fast
