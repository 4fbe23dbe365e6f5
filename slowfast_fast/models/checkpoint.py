"""Checkpoint loading without mmengine: files and URLs, mmengine's lenient/strict key matching, and
whole mmaction2 recognizer checkpoints."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn


def load_checkpoint_file(path: str | os.PathLike, weights_only: bool = True) -> Mapping:
    """Load a checkpoint onto the CPU from a local path or an http(s) URL.

    Other URL schemes (``torchvision://``, ``open-mmlab://``, ``s3://``, ...) are resolved by mmengine
    when it is installed; its loaders call ``torch.load`` with torch's default, ``weights_only=True``,
    so ``weights_only=False`` is refused for them (download the file and pass its path).
    ``weights_only=True`` (the default) refuses pickled Python objects other than tensors and
    containers; pass False only for files you trust.
    """
    name = os.fspath(path)
    try:
        if name.startswith(("http://", "https://")):
            return torch.hub.load_state_dict_from_url(name, map_location="cpu", weights_only=weights_only)
        if "://" in name:
            if not weights_only:
                raise ValueError(
                    f"weights_only=False cannot reach mmengine's loader for {name!r} (it loads with "
                    "torch's default, weights_only=True): download the file and pass its local path"
                )
            return _load_with_mmengine(name)
        return torch.load(os.path.expanduser(name), map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        if not weights_only:
            raise
        text = str(exc)
        if "Unsupported global" in text:
            raise RuntimeError(
                f"{name} holds pickled objects besides tensors, which weights_only loading refuses. "
                "If you trust the file, load it with torch.load(..., weights_only=False) and pass the "
                "resulting dict (e.g. to load_mmaction_checkpoint)."
            ) from exc
        # Not a checkpoint at all (a failed download's HTML page, a truncated file): say so, with
        # torch's own reason, rather than advising to unpickle it.
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        reason = detail.group(1).strip() if detail else text.splitlines()[0]
        raise RuntimeError(f"{name} could not be read as a PyTorch checkpoint ({reason})") from exc


def _load_with_mmengine(name: str) -> Mapping:
    try:
        from mmengine.runner.checkpoint import _load_checkpoint
    except ImportError as exc:
        raise ValueError(
            f"cannot load {name!r}: URL schemes other than http(s) need mmengine installed "
            "(or download the file and pass its local path)"
        ) from exc
    return _load_checkpoint(name, map_location="cpu")


def unwrap_state_dict(checkpoint: Mapping) -> Mapping:
    """The model weights of a checkpoint: its ``state_dict`` entry if it has one, else itself."""
    return checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint


def _strip_module_prefix(state_dict: Mapping) -> OrderedDict:
    """Drop the ``module.`` prefix (Distributed)DataParallel adds, as mmengine does on loading."""
    stripped = OrderedDict((re.sub(r"^module\.", "", k), v) for k, v in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        stripped._metadata = metadata
    return stripped


def load_state_dict_like_mmengine(module: nn.Module, state_dict: Mapping, strict: bool) -> None:
    """mmengine's ``load_checkpoint`` key matching: ``module.`` prefixes stripped, missing
    ``num_batches_tracked`` buffers tolerated, and (when not strict) mismatched keys and shapes
    skipped with a warning instead of raising."""
    state_dict = _strip_module_prefix(state_dict)
    own = module.state_dict()
    problems = []
    for key in [k for k in state_dict if k in own and state_dict[k].shape != own[k].shape]:
        problems.append(
            f"size mismatch for {key}: checkpoint {tuple(state_dict[key].shape)}, "
            f"model {tuple(own[key].shape)}"
        )
        del state_dict[key]
    result = module.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if "num_batches_tracked" not in k]
    if result.unexpected_keys:
        problems.append(f"unexpected keys in checkpoint: {', '.join(result.unexpected_keys)}")
    if missing:
        problems.append(f"missing keys in checkpoint: {', '.join(missing)}")
    if problems:
        message = "The model and loaded state dict do not match exactly\n" + "\n".join(problems)
        if strict:
            raise RuntimeError(message)
        warnings.warn(message, stacklevel=2)


def read_recognizer_state_dict(checkpoint, *, weights_only: bool = True) -> Mapping:
    """The weights of an mmaction2 checkpoint (a file path or URL, or a loaded dict): under its
    ``state_dict`` key or not, ``module.`` prefixes (DataParallel/DDP) dropped."""
    if not isinstance(checkpoint, Mapping):
        checkpoint = load_checkpoint_file(checkpoint, weights_only=weights_only)
    return _strip_module_prefix(unwrap_state_dict(checkpoint))


def load_mmaction_checkpoint(
    model: nn.Module, checkpoint: str | os.PathLike | Mapping, *, weights_only: bool = True
) -> list[str]:
    """Load the backbone weights of an mmaction2 recognizer checkpoint into ``model``.

    Args:
        model: the backbone (e.g. a :class:`~slowfast_fast.models.ResNet3dSlowFast`).
        checkpoint: a file path or URL, or an already loaded checkpoint dict. Its weights may sit
            under a ``state_dict`` key; ``module.`` prefixes are dropped.
        weights_only: passed to ``torch.load`` when ``checkpoint`` is a path (mmengine-saved
            checkpoints with training state may need False: only for files you trust).

    The ``backbone.*`` keys must match ``model``'s state_dict exactly (strict). Keys of other parts of
    the recognizer (``cls_head.*``, ...) are not loaded; their names are returned.
    """
    state_dict = read_recognizer_state_dict(checkpoint, weights_only=weights_only)
    prefix = "backbone."
    backbone = OrderedDict((k[len(prefix) :], v) for k, v in state_dict.items() if k.startswith(prefix))
    if not backbone:
        raise KeyError(
            "the checkpoint has no 'backbone.*' keys; "
            "load a bare backbone state_dict with model.load_state_dict"
        )
    model.load_state_dict(backbone, strict=True)
    return [k for k in state_dict if not k.startswith(prefix)]
