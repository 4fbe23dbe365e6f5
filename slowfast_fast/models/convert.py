"""SlowFast weights of PySlowFast and pytorchvideo, converted to a :class:`SlowFastRecognizer`.

Both projects build the same network as mmaction2's SlowFast with ``lateral_norm=True`` (their fuse
is conv + BN + ReLU); only the names differ, and their head concatenates the pooled features slow
then fast where mmaction2's concatenates fast then slow, so the classifier's input columns are
permuted. The architecture is read from the weights' shapes: depth (blocks per stage), channel
ratio (beta), fusion kernel and channel inflation, stem kernels, and which blocks have temporal
kernels. The speed ratio (alpha, the fuse conv's stride) is not in the weights: it is read from the
pytorchvideo model or the PySlowFast checkpoint's config when they have it, or passed. The converted
model takes ``[x_slow, x_fast]`` as theirs do; given one clip, its fast pathway sees every frame and
its slow pathway every alpha-th (``resample_rate = speed_ratio``, nearest resampling as in mmaction2).

Assumed, as in both projects' SlowFast configs: spatial strides (1, 2, 2, 2), 7x7 stems with a 3x3
max-pool, no non-local blocks, and a head that averages each pathway's whole final feature map
(their fixed-size head pool does exactly that at the input size the model was trained at).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping

import torch
import torch.nn as nn

from slowfast_fast.models.checkpoint import _strip_module_prefix, load_checkpoint_file
from slowfast_fast.models.recognizer import SlowFastRecognizer

_PATHS = ("slow_path", "fast_path")
_BOTTLENECK_CONVS = {"a": "conv1", "b": "conv2", "c": "conv3"}
_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


def _lateral_name(fuse_index: int) -> str:
    """The mmaction2 lateral after the stem (fuse 0) or after stage ``fuse_index``."""
    return "conv1_lateral" if fuse_index == 0 else f"layer{fuse_index}_lateral"


def _pytorchvideo_key(key: str) -> str | None:
    """Our name for a pytorchvideo ``create_slowfast`` key, or None."""
    if m := re.fullmatch(r"blocks\.0\.multipathway_blocks\.([01])\.(conv|norm)\.(\w+)", key):
        path, kind, leaf = m.groups()
        return f"{_PATHS[int(path)]}.conv1.{'conv' if kind == 'conv' else 'bn'}.{leaf}"
    if m := re.fullmatch(r"blocks\.(\d+)\.multipathway_fusion\.(conv_fast_to_slow|norm)\.(\w+)", key):
        fuse, kind, leaf = m.groups()
        return (
            f"slow_path.{_lateral_name(int(fuse))}.{'conv' if kind == 'conv_fast_to_slow' else 'bn'}.{leaf}"
        )
    block = r"blocks\.(\d+)\.multipathway_blocks\.([01])\.res_blocks\.(\d+)\."
    if m := re.fullmatch(block + r"branch1_(conv|norm)\.(\w+)", key):
        stage, path, index, kind, leaf = m.groups()
        part = "conv" if kind == "conv" else "bn"
        return f"{_PATHS[int(path)]}.layer{stage}.{index}.downsample.{part}.{leaf}"
    if m := re.fullmatch(block + r"branch2\.(conv|norm)_([abc])\.(\w+)", key):
        stage, path, index, kind, which, leaf = m.groups()
        part = "conv" if kind == "conv" else "bn"
        return f"{_PATHS[int(path)]}.layer{stage}.{index}.{_BOTTLENECK_CONVS[which]}.{part}.{leaf}"
    if m := re.fullmatch(r"blocks\.\d+\.proj\.(weight|bias)", key):
        return f"cls_head.fc_cls.{m.group(1)}"
    return None


def _pyslowfast_key(key: str) -> str | None:
    """Our name for a PySlowFast ``SlowFast`` model key, or None."""
    if m := re.fullmatch(r"s1\.pathway([01])_stem\.(conv|bn)\.(\w+)", key):
        path, kind, leaf = m.groups()
        return f"{_PATHS[int(path)]}.conv1.{kind}.{leaf}"
    if m := re.fullmatch(r"s(\d+)_fuse\.(conv_f2s|bn)\.(\w+)", key):
        stage, kind, leaf = m.groups()
        return f"slow_path.{_lateral_name(int(stage) - 1)}.{'conv' if kind == 'conv_f2s' else 'bn'}.{leaf}"
    block = r"s(\d+)\.pathway([01])_res(\d+)\."
    if m := re.fullmatch(block + r"branch1(_bn)?\.(\w+)", key):
        stage, path, index, bn, leaf = m.groups()
        layer = f"{_PATHS[int(path)]}.layer{int(stage) - 1}.{index}"
        return f"{layer}.downsample.{'bn' if bn else 'conv'}.{leaf}"
    if m := re.fullmatch(block + r"branch2\.([abc])(_bn)?\.(\w+)", key):
        stage, path, index, which, bn, leaf = m.groups()
        layer = f"{_PATHS[int(path)]}.layer{int(stage) - 1}.{index}"
        return f"{layer}.{_BOTTLENECK_CONVS[which]}.{'bn' if bn else 'conv'}.{leaf}"
    if m := re.fullmatch(r"head\.projection\.(weight|bias)", key):
        return f"cls_head.fc_cls.{m.group(1)}"
    return None


def _rename(state_dict: Mapping, rename: Callable[[str], str | None], source: str) -> OrderedDict:
    """``state_dict`` under our names: the backbone's keys (as in ResNet3dSlowFast) and ``cls_head.*``."""
    renamed = OrderedDict()
    for key, value in _strip_module_prefix(state_dict).items():
        ours = rename(key)
        if ours is None:
            raise KeyError(
                f"cannot convert {source} key {key!r}: not part of a SlowFast ResNet as "
                "slowfast_fast.models.SlowFastRecognizer builds it (a checkpoint of another architecture?)"
            )
        renamed[ours] = value
    return renamed


def _stage_blocks(state: Mapping, path: str) -> list[int]:
    counts = []
    for stage in range(1, 5):
        pattern = re.compile(rf"{path}\.layer{stage}\.(\d+)\.conv1\.conv\.weight")
        indices = [int(m.group(1)) for k in state if (m := pattern.fullmatch(k))]
        if not indices:
            raise KeyError(
                f"the checkpoint has no blocks for stage {stage} of the {path.split('_')[0]} pathway"
            )
        counts.append(max(indices) + 1)
    return counts


def _inflate(state: Mapping, path: str, blocks: list[int]) -> tuple[tuple[int, ...], ...]:
    """Per block, whether its first conv has a temporal kernel (mmaction2's ``inflate`` with '3x1x1')."""
    return tuple(
        tuple(
            int(_weight(state, f"{path}.layer{s + 1}.{b}.conv1.conv.weight").shape[2] > 1) for b in range(n)
        )
        for s, n in enumerate(blocks)
    )


def _weight(state: Mapping, key: str) -> torch.Tensor:
    if key not in state:
        raise KeyError(f"the checkpoint has no weight for {key!r} (after renaming)")
    return state[key]


def _backbone_config(state: Mapping, speed_ratio: int) -> dict:
    """ResNet3dSlowFast arguments that reproduce the network whose (renamed) weights are ``state``."""
    slow_stem = _weight(state, "slow_path.conv1.conv.weight")
    fast_stem = _weight(state, "fast_path.conv1.conv.weight")
    lateral = _weight(state, "slow_path.conv1_lateral.conv.weight")
    if "slow_path.layer1.0.conv3.conv.weight" not in state:
        raise KeyError(
            "the checkpoint's blocks are not bottlenecks (no third conv); only SlowFast R50/R101/R152 convert"
        )
    base, fast_base = slow_stem.shape[0], fast_stem.shape[0]
    if base % fast_base:
        raise ValueError(f"slow stem width {base} is not a multiple of the fast stem width {fast_base}")
    if lateral.shape[0] % fast_base:
        raise ValueError(
            f"lateral width {lateral.shape[0]} is not a multiple of the fast stem width {fast_base}"
        )
    pathways = {}
    for path in _PATHS:
        blocks = _stage_blocks(state, path)
        stem = _weight(state, f"{path}.conv1.conv.weight")
        pathways[path] = dict(
            type="resnet3d",
            depth=_DEPTHS.get(tuple(blocks), 50),
            stage_blocks=tuple(blocks),
            pretrained=None,
            base_channels=stem.shape[0],
            conv1_kernel=tuple(stem.shape[2:]),
            conv1_stride_t=1,
            pool1_stride_t=1,
            inflate=_inflate(state, path, blocks),
        )
    pathways["slow_path"].update(
        lateral=True,
        lateral_norm=True,
        fusion_kernel=lateral.shape[2],
        lateral_infl=lateral.shape[0] // fast_base,
    )
    pathways["fast_path"].update(lateral=False)
    return dict(
        pretrained=None,
        resample_rate=speed_ratio,
        speed_ratio=speed_ratio,
        channel_ratio=base // fast_base,
        slow_pathway=pathways["slow_path"],
        fast_pathway=pathways["fast_path"],
    )


def _recognizer(state: OrderedDict, speed_ratio: int, dropout_ratio: float) -> SlowFastRecognizer:
    if not (isinstance(speed_ratio, int) and speed_ratio >= 1):
        raise ValueError(f"speed_ratio (alpha) must be a positive int, got {speed_ratio!r}")
    fc = _weight(state, "cls_head.fc_cls.weight")
    model = SlowFastRecognizer(
        num_classes=fc.shape[0], backbone=_backbone_config(state, speed_ratio), dropout_ratio=dropout_ratio
    )
    c_slow = model.backbone.slow_path.feat_dim
    if fc.shape[1] != model.cls_head.in_channels:
        raise ValueError(
            f"classifier takes {fc.shape[1]} features, the backbone gives {model.cls_head.in_channels}"
        )
    # Their head concatenates (slow, fast); mmaction2's (fast, slow).
    state["cls_head.fc_cls.weight"] = torch.cat((fc[:, c_slow:], fc[:, :c_slow]), dim=1)
    model.load_state_dict(
        OrderedDict((k if k.startswith("cls_head.") else f"backbone.{k}", v) for k, v in state.items()),
        strict=True,
    )
    return model


def from_pytorchvideo(
    model_or_state_dict: nn.Module | Mapping, *, speed_ratio: int | None = None
) -> SlowFastRecognizer:
    """A :class:`SlowFastRecognizer` computing what pytorchvideo's ``create_slowfast`` model computes.

    Args:
        model_or_state_dict: the pytorchvideo model, or its ``state_dict``.
        speed_ratio: alpha; read from the model's fuse conv stride when a model is given, required
            with a bare state_dict.

    The returned model takes ``[x_slow, x_fast]`` as pytorchvideo's does (or one clip, split as
    mmaction2 does) and returns class scores (pytorchvideo's head has no activation by default).
    Every key must map (else a KeyError names the first that does not) and the load is strict.
    """
    dropout_ratio = 0.5
    if isinstance(model_or_state_dict, nn.Module):
        fuse_convs = [
            m for name, m in model_or_state_dict.named_modules() if name.endswith("conv_fast_to_slow")
        ]
        if fuse_convs and speed_ratio is None:
            speed_ratio = fuse_convs[0].stride[0]
        dropouts = [m for m in model_or_state_dict.modules() if isinstance(m, nn.Dropout)]
        if dropouts:
            dropout_ratio = dropouts[-1].p
        model_or_state_dict = model_or_state_dict.state_dict()
    if speed_ratio is None:
        raise ValueError(
            "speed_ratio (alpha, the fuse conv's temporal stride) is not stored in a state_dict: pass it "
            "(pytorchvideo's slowfast_r50 uses 4, slowfast_16x8_r101_50_50 uses 4)"
        )
    return _recognizer(
        _rename(model_or_state_dict, _pytorchvideo_key, "pytorchvideo"), speed_ratio, dropout_ratio
    )


def _pyslowfast_alpha(cfg) -> int | None:
    """``SLOWFAST.ALPHA`` of a PySlowFast checkpoint's ``cfg`` (its YAML dump, or a dict)."""
    if isinstance(cfg, Mapping):
        alpha = cfg.get("SLOWFAST", {}).get("ALPHA")
        return int(alpha) if alpha is not None else None
    if not isinstance(cfg, str):
        return None
    section = re.search(r"^SLOWFAST:\n((?:[ \t]+.*\n?)*)", cfg, flags=re.MULTILINE)
    alpha = section and re.search(r"^[ \t]+ALPHA:[ \t]*(\d+)", section.group(1), flags=re.MULTILINE)
    return int(alpha.group(1)) if alpha else None


def from_pyslowfast(
    checkpoint_path_or_state_dict: str | os.PathLike | Mapping,
    *,
    speed_ratio: int | None = None,
    weights_only: bool = True,
) -> SlowFastRecognizer:
    """A :class:`SlowFastRecognizer` computing what a PySlowFast (facebookresearch/SlowFast) SlowFast
    model computes, up to its head's activation: PySlowFast applies softmax to the scores in eval
    mode, this model returns the scores (logits).

    Args:
        checkpoint_path_or_state_dict: a ``.pyth`` checkpoint (path or loaded dict, weights under
            ``model_state``) or the model's state_dict. The model zoo's Caffe2 ``.pkl`` files hold
            Caffe2 blob names: load one into PySlowFast (``CHECKPOINT_TYPE: caffe2``) and save a
            ``.pyth`` first.
        speed_ratio: alpha; by default the checkpoint config's ``SLOWFAST.ALPHA``, required when the
            checkpoint has no config.
        weights_only: passed to ``torch.load`` for a path (False only for files you trust).

    Feed it ``[x_slow, x_fast]`` sampled as PySlowFast does (slow frames picked with linspace) to get
    PySlowFast's numbers; a single clip is split by nearest resampling, as mmaction2 does.
    """
    checkpoint = checkpoint_path_or_state_dict
    if not isinstance(checkpoint, Mapping):
        checkpoint = load_checkpoint_file(checkpoint, weights_only=weights_only)
    state_dict = checkpoint.get("model_state", checkpoint)
    if speed_ratio is None:
        speed_ratio = _pyslowfast_alpha(checkpoint.get("cfg"))
    if speed_ratio is None:
        raise ValueError(
            "the checkpoint has no config giving SLOWFAST.ALPHA: pass speed_ratio (alpha; 4 for the "
            "8x8 models, 8 for the 4x16 ones)"
        )
    return _recognizer(_rename(state_dict, _pyslowfast_key, "PySlowFast"), speed_ratio, 0.5)
