"""ResNet3d: mmaction2 1.x's 3D ResNet backbone in plain PyTorch (same arguments, module names,
state_dict keys, initialization and outputs)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.utils import _ntuple, _triple

from slowfast_fast.models.blocks import BasicBlock3d, Bottleneck3d
from slowfast_fast.models.checkpoint import (
    load_checkpoint_file,
    load_state_dict_like_mmengine,
    unwrap_state_dict,
)
from slowfast_fast.models.layers import (
    DEFAULT_ACT_CFG,
    DEFAULT_CONV_CFG,
    DEFAULT_NORM_CFG,
    ConvModule,
    check_act_cfg,
    check_conv_cfg,
    check_norm_cfg,
    constant_init,
    kaiming_init,
)

logger = logging.getLogger(__name__)

_EMPTY: Mapping = {}
_SHAPE_WARNING = "The parameter of {} is not loaded due to incompatible shapes."


class ResNet3d(nn.Module):
    """3D ResNet backbone (I3D/SlowOnly-style), a drop-in for ``mmaction.models.ResNet3d``.

    Input ``(N, in_channels, T, H, W)``; output the features of the stages in ``out_indices``
    (a tensor if one, else a tuple).

    Args:
        depth: 18, 34 (BasicBlock3d) or 50, 101, 152 (Bottleneck3d).
        pretrained: path/URL of weights loaded by :meth:`init_weights`, or None.
        stage_blocks: blocks per stage (default: the depth's).
        pretrained2d: ``pretrained`` is a 2D (torchvision-style) ResNet to inflate, not a 3D checkpoint.
        in_channels: input channels.
        num_stages: 1 to 4 residual stages.
        base_channels: channels of the stem; stage i has ``base_channels * 2**i`` planes.
        out_indices: stages whose outputs are returned.
        spatial_strides, temporal_strides, dilations: per stage, for its first block.
        conv1_kernel, conv1_stride_s, conv1_stride_t: the stem conv (padding ``(k-1)//2``).
        pool1_stride_s, pool1_stride_t: the stem max-pool (kernel 1x3x3).
        with_pool1: apply the stem max-pool. with_pool2: max-pool 2x1x1 after stage 1.
        style: ``'pytorch'`` (stride on the 3x3 conv) or ``'caffe'`` (on the first 1x1).
        frozen_stages: stages (0 = the stem) kept in eval mode with frozen parameters by ``train()``.
        inflate: per stage (int or per-block sequence), whether blocks get temporal kernels.
        inflate_style: ``'3x1x1'`` or ``'3x3x3'`` for bottlenecks.
        conv_cfg: must be ``dict(type='Conv3d')``.
        norm_cfg: ``dict(type='BN3d' or 'SyncBN', requires_grad=..., eps=..., momentum=...)``.
        act_cfg: ``dict(type='ReLU', inplace=...)``; also LeakyReLU, ReLU6, ELU, SiLU, GELU, Sigmoid, Tanh.
        norm_eval: keep BN layers in eval mode while training.
        with_cp: activation checkpointing in every block.
        non_local, non_local_cfg: per stage (int or per-block sequence), NonLocal3d blocks and their args.
        zero_init_residual: zero the last BN of every block in :meth:`init_weights`.
        init_cfg: accepted and stored; like mmaction2's ResNet3d (whose ``init_weights`` overrides
            mmengine's), it has no effect.
    """

    arch_settings = {
        18: (BasicBlock3d, (2, 2, 2, 2)),
        34: (BasicBlock3d, (3, 4, 6, 3)),
        50: (Bottleneck3d, (3, 4, 6, 3)),
        101: (Bottleneck3d, (3, 4, 23, 3)),
        152: (Bottleneck3d, (3, 8, 36, 3)),
    }

    def __init__(
        self,
        depth: int = 50,
        pretrained: str | None = None,
        stage_blocks: Sequence[int] | None = None,
        pretrained2d: bool = True,
        in_channels: int = 3,
        num_stages: int = 4,
        base_channels: int = 64,
        out_indices: Sequence[int] = (3,),
        spatial_strides: Sequence[int] = (1, 2, 2, 2),
        temporal_strides: Sequence[int] = (1, 1, 1, 1),
        dilations: Sequence[int] = (1, 1, 1, 1),
        conv1_kernel: Sequence[int] = (3, 7, 7),
        conv1_stride_s: int = 2,
        conv1_stride_t: int = 1,
        pool1_stride_s: int = 2,
        pool1_stride_t: int = 1,
        with_pool1: bool = True,
        with_pool2: bool = True,
        style: str = "pytorch",
        frozen_stages: int = -1,
        inflate: Sequence[int] = (1, 1, 1, 1),
        inflate_style: str = "3x1x1",
        conv_cfg: Mapping = DEFAULT_CONV_CFG,
        norm_cfg: Mapping = DEFAULT_NORM_CFG,
        act_cfg: Mapping = DEFAULT_ACT_CFG,
        norm_eval: bool = False,
        with_cp: bool = False,
        non_local: Sequence[int] = (0, 0, 0, 0),
        non_local_cfg: Mapping = _EMPTY,
        zero_init_residual: bool = True,
        init_cfg: Mapping | Sequence[Mapping] | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments: {', '.join(sorted(kwargs))}")
        if depth not in self.arch_settings:
            raise KeyError(f"invalid depth {depth} for resnet")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be in [1, 4], got {num_stages}")
        if max(out_indices) >= num_stages:
            raise ValueError(f"out_indices {tuple(out_indices)} must be < num_stages={num_stages}")
        if not len(spatial_strides) == len(temporal_strides) == len(dilations) == num_stages:
            raise ValueError("spatial_strides, temporal_strides and dilations need one entry per stage")
        if stage_blocks is not None and len(stage_blocks) != num_stages:
            raise ValueError(f"stage_blocks needs {num_stages} entries, got {tuple(stage_blocks)}")
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        if inflate_style not in ("3x1x1", "3x3x3"):
            raise ValueError(f"inflate_style must be '3x1x1' or '3x3x3', got {inflate_style!r}")
        check_conv_cfg(conv_cfg)
        check_norm_cfg(norm_cfg)
        check_act_cfg(act_cfg)

        self.depth = depth
        self.pretrained = pretrained
        self.pretrained2d = pretrained2d
        self.in_channels = in_channels
        self.base_channels = base_channels
        self.num_stages = num_stages
        self.out_indices = out_indices
        self.spatial_strides = spatial_strides
        self.temporal_strides = temporal_strides
        self.dilations = dilations
        self.conv1_kernel = conv1_kernel
        self.conv1_stride_s = conv1_stride_s
        self.conv1_stride_t = conv1_stride_t
        self.pool1_stride_s = pool1_stride_s
        self.pool1_stride_t = pool1_stride_t
        self.with_pool1 = with_pool1
        self.with_pool2 = with_pool2
        self.style = style
        self.frozen_stages = frozen_stages
        self.stage_inflations = _ntuple(num_stages)(inflate)
        self.non_local_stages = _ntuple(num_stages)(non_local)
        self.inflate_style = inflate_style
        self.conv_cfg = dict(conv_cfg)
        self.norm_cfg = dict(norm_cfg)
        self.act_cfg = dict(act_cfg)
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.non_local_cfg = dict(non_local_cfg)
        self.zero_init_residual = zero_init_residual
        self.init_cfg = init_cfg

        self.block, default_blocks = self.arch_settings[depth]
        self.stage_blocks = tuple(stage_blocks) if stage_blocks is not None else default_blocks[:num_stages]
        self.inplanes = base_channels

        self._make_stem_layer()
        self.res_layers = []
        lateral_inplanes = getattr(self, "lateral_inplanes", [0, 0, 0, 0])
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**i
            res_layer = self.make_res_layer(
                self.block,
                self.inplanes + lateral_inplanes[i],
                planes,
                num_blocks,
                spatial_stride=spatial_strides[i],
                temporal_stride=temporal_strides[i],
                dilation=dilations[i],
                style=style,
                norm_cfg=self.norm_cfg,
                conv_cfg=self.conv_cfg,
                act_cfg=self.act_cfg,
                non_local=self.non_local_stages[i],
                non_local_cfg=self.non_local_cfg,
                inflate=self.stage_inflations[i],
                inflate_style=inflate_style,
                with_cp=with_cp,
            )
            self.inplanes = planes * self.block.expansion
            layer_name = f"layer{i + 1}"
            self.add_module(layer_name, res_layer)
            self.res_layers.append(layer_name)
        self.feat_dim = self.block.expansion * base_channels * 2 ** (len(self.stage_blocks) - 1)

    @staticmethod
    def make_res_layer(
        block: type,
        inplanes: int,
        planes: int,
        blocks: int,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        dilation: int = 1,
        style: str = "pytorch",
        inflate: int | Sequence[int] = 1,
        inflate_style: str = "3x1x1",
        non_local: int | Sequence[int] = 0,
        non_local_cfg: Mapping = _EMPTY,
        norm_cfg: Mapping = DEFAULT_NORM_CFG,
        act_cfg: Mapping = DEFAULT_ACT_CFG,
        conv_cfg: Mapping = DEFAULT_CONV_CFG,
        with_cp: bool = False,
    ) -> nn.Sequential:
        """One residual stage: ``blocks`` blocks, the first carrying the strides and the shortcut conv."""
        inflate = (inflate,) * blocks if isinstance(inflate, int) else tuple(inflate)
        non_local = (non_local,) * blocks if isinstance(non_local, int) else tuple(non_local)
        if len(inflate) != blocks or len(non_local) != blocks:
            raise ValueError(f"per-block inflate {inflate} / non_local {non_local} need {blocks} entries")
        downsample = None
        # A temporal stride alone adds no shortcut conv: mmaction2's rule, kept for identical models.
        if spatial_stride != 1 or inplanes != planes * block.expansion:
            downsample = ConvModule(
                inplanes,
                planes * block.expansion,
                kernel_size=1,
                stride=(temporal_stride, spatial_stride, spatial_stride),
                bias=False,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                act_cfg=None,
            )
        layers = []
        for i in range(blocks):
            first = i == 0
            layers.append(
                block(
                    inplanes if first else planes * block.expansion,
                    planes,
                    spatial_stride=spatial_stride if first else 1,
                    temporal_stride=temporal_stride if first else 1,
                    dilation=dilation,
                    downsample=downsample if first else None,
                    style=style,
                    inflate=inflate[i] == 1,
                    inflate_style=inflate_style,
                    non_local=non_local[i] == 1,
                    non_local_cfg=non_local_cfg,
                    norm_cfg=norm_cfg,
                    conv_cfg=conv_cfg,
                    act_cfg=act_cfg,
                    with_cp=with_cp,
                )
            )
        return nn.Sequential(*layers)

    def _make_stem_layer(self) -> None:
        self.conv1 = ConvModule(
            self.in_channels,
            self.base_channels,
            kernel_size=self.conv1_kernel,
            stride=(self.conv1_stride_t, self.conv1_stride_s, self.conv1_stride_s),
            padding=tuple((k - 1) // 2 for k in _triple(self.conv1_kernel)),
            bias=False,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg,
        )
        self.maxpool = nn.MaxPool3d(
            kernel_size=(1, 3, 3),
            stride=(self.pool1_stride_t, self.pool1_stride_s, self.pool1_stride_s),
            padding=(0, 1, 1),
        )
        self.pool2 = nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1))

    # ---------------------------------------------------------------- weights

    def init_weights(self, pretrained: str | os.PathLike | None = None) -> None:
        """Initialize from scratch (kaiming convs, unit BNs, zero-init residual BNs) when no
        ``pretrained`` is set; else load it: a 3D checkpoint (non-strict, like mmengine) or, with
        ``pretrained2d``, a 2D ResNet inflated to 3D."""
        if pretrained:
            self.pretrained = pretrained
        if isinstance(self.pretrained, (str, os.PathLike)):
            logger.info("load model from: %s", os.fspath(self.pretrained))
            if self.pretrained2d:
                self.inflate_weights()
            else:
                checkpoint = load_checkpoint_file(self.pretrained)
                load_state_dict_like_mmengine(self, unwrap_state_dict(checkpoint), strict=False)
        elif self.pretrained is None:
            for m in self.modules():
                if isinstance(m, nn.Conv3d):
                    kaiming_init(m)
                elif isinstance(m, _BatchNorm):
                    constant_init(m, 1.0)
            if self.zero_init_residual:
                for m in self.modules():
                    if isinstance(m, Bottleneck3d):
                        constant_init(m.conv3.bn, 0.0)
                    elif isinstance(m, BasicBlock3d):
                        constant_init(m.conv2.bn, 0.0)
        else:
            raise TypeError("pretrained must be a str or None")

    def _skip_inflation(self, name: str) -> bool:
        """Modules that have no 2D counterpart to inflate from."""
        return False

    def inflate_weights(self, logger: logging.Logger = logger) -> None:
        """Inflate the 2D ResNet at ``self.pretrained`` into this model.

        A 2D ``k x k`` kernel is repeated over the 3D kernel's ``t`` frames and divided by ``t``;
        BN parameters and buffers are copied. 2D names are torchvision's: ``conv1``/``bn1``,
        ``layerX.Y.convN``/``layerX.Y.bnN``, ``layerX.Y.downsample.0``/``.1``.
        """
        state_dict_2d = unwrap_state_dict(load_checkpoint_file(self.pretrained))
        inflated: list[str] = []
        for name, module in self.named_modules():
            if not isinstance(module, ConvModule) or self._skip_inflation(name):
                continue
            if "downsample" in name:
                conv_name, bn_name = name + ".0", name + ".1"
            else:
                conv_name, bn_name = name, name.replace("conv", "bn")
            if conv_name + ".weight" not in state_dict_2d:
                logger.warning("Module not exist in the state_dict_r2d: %s", conv_name)
            else:
                self._inflate_conv_params(module.conv, state_dict_2d, conv_name, inflated)
            if bn_name + ".weight" not in state_dict_2d:
                logger.warning("Module not exist in the state_dict_r2d: %s", bn_name)
            else:
                _inflate_bn_params(module.bn, state_dict_2d, bn_name, inflated)
        remaining = set(state_dict_2d) - set(inflated)
        if remaining:
            logger.info("These parameters in the 2d checkpoint are not loaded: %s", sorted(remaining))

    def _inflate_conv_params(
        self, conv3d: nn.Conv3d, state_dict_2d: Mapping, name_2d: str, inflated: list[str]
    ) -> None:
        weight_2d = state_dict_2d[name_2d + ".weight"]
        shape_3d = conv3d.weight.shape
        if weight_2d.shape != shape_3d[:2] + shape_3d[3:]:
            logger.warning(
                "Weight shape mismatch for : %s : 3d weight shape: %s; 2d weight shape: %s. ",
                name_2d,
                tuple(shape_3d),
                tuple(weight_2d.shape),
            )
            return
        _copy_inflated(conv3d, weight_2d, state_dict_2d, name_2d, inflated)

    # ---------------------------------------------------------------- forward / train

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = self.conv1(x)
        if self.with_pool1:
            x = self.maxpool(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i == 0 and self.with_pool2:
                x = self.pool2(x)
            if i in self.out_indices:
                outs.append(x)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.conv1] + [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for param in m.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> ResNet3d:
        """Set train/eval mode; frozen stages stay in eval mode, and all BNs do with ``norm_eval``."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


def _copy_inflated(
    conv3d: nn.Module, weight_2d: torch.Tensor, state_dict_2d: Mapping, name_2d: str, inflated: list[str]
) -> None:
    kernel_t = conv3d.weight.shape[2]
    if weight_2d.shape != conv3d.weight.shape[:2] + conv3d.weight.shape[3:]:
        raise ValueError(
            f"cannot inflate {name_2d}: 2D weight {tuple(weight_2d.shape)} does not fit the 3D weight "
            f"{tuple(conv3d.weight.shape)}"
        )
    with torch.no_grad():
        conv3d.weight.copy_(weight_2d.unsqueeze(2).expand_as(conv3d.weight) / kernel_t)
    inflated.append(name_2d + ".weight")
    if conv3d.bias is not None:
        with torch.no_grad():
            conv3d.bias.copy_(state_dict_2d[name_2d + ".bias"])
        inflated.append(name_2d + ".bias")


def _inflate_bn_params(bn: nn.Module, state_dict_2d: Mapping, name_2d: str, inflated: list[str]) -> None:
    with torch.no_grad():
        for param_name, param in bn.named_parameters():
            param_2d = state_dict_2d[f"{name_2d}.{param_name}"]
            if param.shape != param_2d.shape:
                warnings.warn(_SHAPE_WARNING.format(name_2d), stacklevel=3)
                return
            param.copy_(param_2d)
            inflated.append(f"{name_2d}.{param_name}")
        for buffer_name, buffer in bn.named_buffers():
            key = f"{name_2d}.{buffer_name}"
            # num_batches_tracked may be absent from old checkpoints.
            if key in state_dict_2d:
                buffer.copy_(state_dict_2d[key])
                inflated.append(key)
