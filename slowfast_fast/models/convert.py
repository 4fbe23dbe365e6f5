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

The stages' spatial strides and dilations are not in the weights either: they are read from the
pytorchvideo model's convs or the PySlowFast config's ``RESNET.SPATIAL_STRIDES`` / ``SPATIAL_DILATIONS``,
and are the SlowFast defaults (strides (1, 2, 2, 2), dilation 1) for a bare state_dict. So is the head's
dropout: the pytorchvideo model's (0 without an ``nn.Dropout``), the config's ``MODEL.DROPOUT_RATE``, else
0.5 (both projects' default); it only matters in training. Detection (AVA) models, whose head pools RoIs,
are refused.

Assumed, as in both projects' SlowFast configs: 7x7 stride-2 stems with a 3x3 stride-2 max-pool, no stage
temporal strides, no non-local blocks, and a head that averages each pathway's whole final feature map
(their fixed-size head pool does exactly that at the input size the model was trained at). Given a
pytorchvideo model, every conv's stride, padding, dilation and groups are checked against the converted
model's.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping

import torch
import torch.nn as nn

from slowfast_fast.models.checkpoint import load_checkpoint_file
from slowfast_fast.models.recognizer import SlowFastRecognizer

_PATHS = ("slow_path", "fast_path")
_BOTTLENECK_CONVS = {"a": "conv1", "b": "conv2", "c": "conv3"}
_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
# The head dropout both projects default to (pytorchvideo's dropout_rate, PySlowFast's MODEL.DROPOUT_RATE).
_DEFAULT_DROPOUT = 0.5
# Prefixes of wrapped models' keys: (Distributed)DataParallel's and torch.compile's.
_WRAPPER_PREFIX = re.compile(r"^(?:(?:module|_orig_mod)\.)+")


def _strip_wrappers(key: str) -> str:
    """``key`` without the ``module.`` / ``_orig_mod.`` prefixes of DataParallel and torch.compile."""
    return _WRAPPER_PREFIX.sub("", key)


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
    for key, value in state_dict.items():
        key = _strip_wrappers(key)
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


def _backbone_config(state: Mapping, speed_ratio: int, geometry: Mapping | None = None) -> dict:
    """ResNet3dSlowFast arguments that reproduce the network whose (renamed) weights are ``state``.

    ``geometry`` maps each pathway (``slow_path``, ``fast_path``) to its ``spatial_strides`` and
    ``dilations``; None keeps ResNet3d's defaults, SlowFast's (1, 2, 2, 2) and (1, 1, 1, 1).
    """
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
        if geometry is not None:
            pathways[path].update(geometry[path])
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


def _recognizer(
    state: OrderedDict, speed_ratio: int, dropout_ratio: float, geometry: Mapping | None = None
) -> SlowFastRecognizer:
    """The recognizer for renamed weights ``state``, loaded strictly (classifier columns permuted)."""
    if not (isinstance(speed_ratio, int) and speed_ratio >= 1):
        raise ValueError(f"speed_ratio (alpha) must be a positive int, got {speed_ratio!r}")
    fc = _weight(state, "cls_head.fc_cls.weight")
    model = SlowFastRecognizer(
        num_classes=fc.shape[0],
        backbone=_backbone_config(state, speed_ratio, geometry),
        dropout_ratio=dropout_ratio,
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


def _unwrap_checkpoint(checkpoint: Mapping) -> Mapping:
    """The weights of a checkpoint: its ``model_state`` (PySlowFast's and pytorchvideo's model-zoo
    ``.pyth``) or ``state_dict`` entry, else the mapping itself."""
    for key in ("model_state", "state_dict"):
        if key in checkpoint:
            return checkpoint[key]
    return checkpoint


def _source_convs(model: nn.Module) -> dict[str, tuple[str, nn.Conv3d]]:
    """The pytorchvideo model's convs under our module names, with their own names."""
    convs = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv3d):
            ours = _pytorchvideo_key(_strip_wrappers(f"{name}.weight"))
            if ours is not None:
                convs[ours.removesuffix(".weight")] = (name, module)
    return convs


def _stage_geometry(convs: Mapping[str, tuple[str, nn.Conv3d]]) -> dict | None:
    """Each pathway's stage spatial strides and dilations, from its blocks' 3x3 convs (pytorchvideo's
    ``conv_b``, our ``conv2``: the stride is the first block's), or None if a stage has no such conv."""
    geometry = {}
    for path in _PATHS:
        strides, dilations = [], []
        for stage in range(1, 5):
            if f"{path}.layer{stage}.0.conv2.conv" not in convs:
                return None
            name, conv_a = convs.get(f"{path}.layer{stage}.0.conv1.conv", (None, None))
            if conv_a is not None and conv_a.stride[0] != 1:
                raise ValueError(
                    f"cannot convert this pytorchvideo model: stage {stage} of its {path.split('_')[0]} "
                    f"pathway has temporal stride {int(conv_a.stride[0])} ({name!r}); pytorchvideo puts a "
                    "stage's temporal stride on conv_a, mmaction2's ResNet3d on conv2, so only models with "
                    "stage_temporal_strides all 1 convert"
                )
            strides.append(convs[f"{path}.layer{stage}.0.conv2.conv"][1].stride[-1])
            dilations.append(convs[f"{path}.layer{stage}.0.conv2.conv"][1].dilation[-1])
        geometry[path] = dict(spatial_strides=tuple(strides), dilations=tuple(dilations))
    return geometry


def _ints(value):
    """A conv attribute (an int or a tuple of ints, numpy's included) as Python ints, for comparing."""
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else value


def _check_conv_geometry(model: SlowFastRecognizer, convs: Mapping[str, tuple[str, nn.Conv3d]]) -> None:
    """Raise if a converted conv's stride, padding, dilation or groups differ from the source's."""
    for ours, (name, conv) in convs.items():
        mine = model.backbone.get_submodule(ours)
        for attr in ("stride", "padding", "dilation", "groups"):
            theirs, converted = _ints(getattr(conv, attr)), _ints(getattr(mine, attr))
            if theirs != converted:
                raise ValueError(
                    f"cannot convert this pytorchvideo model: its conv {name!r} has {attr}={theirs} where "
                    f"the converted {ours!r} would have {converted}. "
                    "Only SlowFast ResNets with 7x7 stride-2 stems, stage strides and dilations on conv_b "
                    "and no stage temporal strides (stage_temporal_strides all 1) convert."
                )


def _pytorchvideo_module_settings(model: nn.Module, speed_ratio: int | None) -> tuple[int | None, float]:
    """Alpha (the fuse convs' temporal stride, checked against ``speed_ratio`` if given) and the head's
    dropout probability (0 if it has no ``nn.Dropout``) of a pytorchvideo model; refuses detection models."""
    if any(hasattr(m, "roi_layer") for m in model.modules()):
        raise ValueError(
            "this pytorchvideo model has an RoI detection head (create_slowfast_with_roi_head); "
            "SlowFastRecognizer has a classification head only, so it cannot be converted"
        )
    fuse_strides = {
        int(m.stride[0]) for name, m in model.named_modules() if name.endswith("conv_fast_to_slow")
    }
    if len(fuse_strides) > 1:
        raise ValueError(f"the model's fuse convs have different temporal strides {sorted(fuse_strides)}")
    if fuse_strides:
        (alpha,) = fuse_strides
        if speed_ratio is not None and speed_ratio != alpha:
            raise ValueError(
                f"speed_ratio={speed_ratio} disagrees with the model's fuse conv temporal stride {alpha} "
                "(alpha): leave speed_ratio unset to use the model's"
            )
        speed_ratio = alpha
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    return speed_ratio, dropouts[-1].p if dropouts else 0.0


def from_pytorchvideo(
    model_or_state_dict: nn.Module | Mapping | str | os.PathLike,
    *,
    speed_ratio: int | None = None,
    weights_only: bool = True,
) -> SlowFastRecognizer:
    """A :class:`SlowFastRecognizer` computing what pytorchvideo's ``create_slowfast`` model computes.

    Args:
        model_or_state_dict: the pytorchvideo model (also wrapped by DataParallel or torch.compile); or
            its ``state_dict``, bare or under ``model_state`` / ``state_dict`` (as in pytorchvideo's
            model-zoo ``.pyth`` files), loaded or as a path.
        speed_ratio: alpha; read from the model's fuse conv stride when a model is given (passing
            another value raises), required with a state_dict.
        weights_only: passed to ``torch.load`` for a path (False only for files you trust).

    From a model, the stages' spatial strides and dilations and the head's dropout are the model's
    (and every conv's geometry is checked); a state_dict does not hold them, so it gets SlowFast's
    defaults: spatial strides (1, 2, 2, 2), dilation 1, dropout 0.5 (pass the model itself where they
    differ, e.g. for pytorchvideo's AVA backbone settings: res5 stride 1, dilation 2). The returned
    model takes ``[x_slow, x_fast]`` as pytorchvideo's does (or one clip, split as mmaction2 does) and
    returns class scores (pytorchvideo's head has no activation by default). Every key must map (else
    a KeyError names the first that does not) and the load is strict.
    """
    source = model_or_state_dict
    dropout_ratio, convs = _DEFAULT_DROPOUT, None
    if isinstance(source, nn.Module):
        speed_ratio, dropout_ratio = _pytorchvideo_module_settings(source, speed_ratio)
        convs = _source_convs(source)
        state_dict = source.state_dict()
    elif isinstance(source, Mapping):
        state_dict = _unwrap_checkpoint(source)
    elif isinstance(source, (str, os.PathLike)):
        state_dict = _unwrap_checkpoint(load_checkpoint_file(source, weights_only=weights_only))
    else:
        raise TypeError(
            "from_pytorchvideo takes a pytorchvideo model (nn.Module), its state_dict (a mapping, bare "
            f"or under 'model_state' / 'state_dict') or a checkpoint path; got {type(source).__name__}"
        )
    if speed_ratio is None:
        raise ValueError(
            "speed_ratio (alpha, the fuse conv's temporal stride) is not stored in a state_dict: pass it "
            "(pytorchvideo's slowfast_r50 uses 4, slowfast_16x8_r101_50_50 uses 4)"
        )
    model = _recognizer(
        _rename(state_dict, _pytorchvideo_key, "pytorchvideo"),
        speed_ratio,
        dropout_ratio,
        _stage_geometry(convs) if convs else None,
    )
    if convs:
        _check_conv_geometry(model, convs)
    return model


def _cfg_value(cfg, section: str, key: str):
    """``section.key`` of a PySlowFast checkpoint's ``cfg`` or None: from a dict (a saved CfgNode) the
    value itself, from the YAML dump PySlowFast saves the value's text (the rest of the key's line and
    the lines of a block list under it). Only the section's own keys match, not those of a subsection."""
    if isinstance(cfg, Mapping):
        entries = cfg.get(section)
        return entries.get(key) if isinstance(entries, Mapping) else None
    if not isinstance(cfg, str):
        return None
    body = re.search(rf"^{section}:[ \t]*\n((?:[ \t]+.*\n?)*)", cfg, flags=re.MULTILINE)
    if not body:
        return None
    indent = re.escape(re.match(r"[ \t]*", body.group(1)).group())
    # A block list may sit at the key's own indentation ("- " lines), as PyYAML writes it.
    value = re.search(
        rf"^{indent}{key}:(.*)\n?((?:{indent}(?:[ \t]|- ).*\n?)*)", body.group(1), flags=re.MULTILINE
    )
    return (value.group(1) + "\n" + value.group(2)).strip() if value else None


def _pyslowfast_alpha(cfg) -> int | None:
    """``SLOWFAST.ALPHA`` of a PySlowFast checkpoint's ``cfg`` (its YAML dump, or a dict)."""
    alpha = _cfg_value(cfg, "SLOWFAST", "ALPHA")
    if isinstance(alpha, str):
        return int(alpha) if alpha.isdigit() else None
    return int(alpha) if alpha is not None else None


def _pyslowfast_dropout(cfg) -> float:
    """``MODEL.DROPOUT_RATE`` of a PySlowFast checkpoint's ``cfg``, else PySlowFast's default 0.5."""
    rate = _cfg_value(cfg, "MODEL", "DROPOUT_RATE")
    if rate is None:
        return _DEFAULT_DROPOUT
    try:
        return float(rate)
    except ValueError:
        raise ValueError(f"the checkpoint's cfg has MODEL.DROPOUT_RATE {rate!r}, not a number") from None


def _pyslowfast_detection(cfg) -> bool:
    """Whether a PySlowFast checkpoint's ``cfg`` sets ``DETECTION.ENABLE`` (an AVA detection model)."""
    enable = _cfg_value(cfg, "DETECTION", "ENABLE")
    return enable is True or (isinstance(enable, str) and enable.lower() == "true")


def _flat_ints(value) -> list[int]:
    """The integers of a (nested) list, or of its YAML text, in order."""
    if isinstance(value, str):
        return [int(v) for v in re.findall(r"\d+", value)]
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in _flat_ints(v)]
    return [int(value)]


def _pyslowfast_geometry(cfg) -> dict | None:
    """Each pathway's stage spatial strides and dilations from a PySlowFast ``cfg``'s
    ``RESNET.SPATIAL_STRIDES`` and ``RESNET.SPATIAL_DILATIONS`` (per stage, ``[slow, fast]``), each
    PySlowFast's default where the config lacks it; None without a config."""
    if cfg is None:
        return None
    geometry = {path: {} for path in _PATHS}
    for key, ours in (("SPATIAL_STRIDES", "spatial_strides"), ("SPATIAL_DILATIONS", "dilations")):
        value = _cfg_value(cfg, "RESNET", key)
        if value is None:
            continue
        values = _flat_ints(value)
        if len(values) != 2 * 4:
            raise ValueError(
                f"the checkpoint's cfg has RESNET.{key} {value!r}; expected [slow, fast] for each of the 4 "
                "stages (pass a state_dict without the cfg to use the defaults)"
            )
        for p, path in enumerate(_PATHS):
            geometry[path][ours] = tuple(values[p::2])
    return geometry


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
            ``.pyth`` first. pytorchvideo's model-zoo ``.pyth`` files (e.g. ``SLOWFAST_8x8_R50.pyth``:
            pytorchvideo's ``blocks.*`` keys under ``model_state``, no config) are recognized by their
            keys and converted as :func:`from_pytorchvideo` converts a state_dict.
        speed_ratio: alpha; by default the checkpoint config's ``SLOWFAST.ALPHA``, required when the
            checkpoint has no config.
        weights_only: passed to ``torch.load`` for a path (False only for files you trust).

    The stages' spatial strides and dilations come from the config's ``RESNET.SPATIAL_STRIDES`` and
    ``RESNET.SPATIAL_DILATIONS``, the head's dropout from ``MODEL.DROPOUT_RATE``; without a config they
    are PySlowFast's defaults (strides (1, 2, 2, 2), dilation 1, dropout 0.5). A config with
    ``DETECTION.ENABLE`` (an AVA model, whose head pools RoIs) is refused.

    Feed it ``[x_slow, x_fast]`` sampled as PySlowFast does (slow frames picked with linspace) to get
    PySlowFast's numbers; a single clip is split by nearest resampling, as mmaction2 does.
    """
    checkpoint = checkpoint_path_or_state_dict
    if isinstance(checkpoint, nn.Module):
        raise TypeError(
            "from_pyslowfast takes a checkpoint or state_dict; for a pytorchvideo model use from_pytorchvideo"
        )
    if not isinstance(checkpoint, Mapping):
        checkpoint = load_checkpoint_file(checkpoint, weights_only=weights_only)
    state_dict = checkpoint.get("model_state", checkpoint)
    cfg = checkpoint.get("cfg")
    if _pyslowfast_detection(cfg):
        raise ValueError(
            "this is a detection checkpoint (its cfg sets DETECTION.ENABLE: an AVA model with an RoI "
            "head); SlowFastRecognizer has a classification head only, so it cannot be converted"
        )
    if speed_ratio is None:
        speed_ratio = _pyslowfast_alpha(cfg)
    if speed_ratio is None:
        raise ValueError(
            "the checkpoint has no config giving SLOWFAST.ALPHA: pass speed_ratio (alpha; 4 for the "
            "8x8 models, 8 for the 4x16 ones)"
        )
    if any(_strip_wrappers(key).startswith("blocks.") for key in state_dict):
        rename, source = _pytorchvideo_key, "pytorchvideo"
    else:
        rename, source = _pyslowfast_key, "PySlowFast"
    return _recognizer(
        _rename(state_dict, rename, source), speed_ratio, _pyslowfast_dropout(cfg), _pyslowfast_geometry(cfg)
    )
