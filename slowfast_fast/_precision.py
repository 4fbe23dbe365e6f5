"""Whether fp32 convolutions on CUDA may use TF32, read the way cuDNN's own convolutions read it.

PyTorch has two APIs for this. The legacy flag ``torch.backends.cudnn.allow_tf32`` covers all of
cuDNN; the precision API (torch >= 2.9) has one setting per level, from the most specific to the
most general: ``torch.backends.cudnn.conv.fp32_precision``, ``torch.backends.cudnn.fp32_precision``,
``torch.backends.fp32_precision``. Each is ``"tf32"``, ``"ieee"`` or ``"none"`` (inherit from the
next level; cuDNN maps ``"bf16"`` to ``"none"``). Setting the legacy flag sets the conv and RNN levels,
so on a torch with the new API its levels say everything.

Reading the legacy flag once the new API has been used raises ("checking whether allow_tf32 is
enabled for cuDNN without a specific operator name") as soon as conv and RNN settings differ; the
fused ops therefore read the conv level only, exactly as ``at::globalContext().allowTF32CuDNN(CONV)``
(which the CUDA kernels call) resolves it.
"""

from __future__ import annotations

import torch

__all__ = ["autocast_enabled", "conv_precision_settings", "conv_allows_tf32"]


def autocast_enabled(device_type: str) -> bool:
    """``torch.is_autocast_enabled(device_type)``, False on the meta device (shape inference, models
    built under ``torch.device("meta")``), where it raises: meta has no autocast. Not
    ``torch.amp.is_autocast_available``, which torch 2.11's dynamo cannot trace."""
    return device_type != "meta" and torch.is_autocast_enabled(device_type)


def conv_precision_settings() -> tuple[str, ...] | None:
    """The precision settings that decide cuDNN conv's TF32 use, most specific first, as
    ``(conv, cudnn, generic)``; None on a torch without the precision API."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        return None
    return (
        conv.fp32_precision,
        torch.backends.cudnn.fp32_precision,
        torch.backends.fp32_precision,
    )


def conv_allows_tf32() -> bool:
    """True when cuDNN would run an fp32 convolution in TF32 now: the first setting that is not
    ``"none"`` decides (TF32 only if it is ``"tf32"``); all ``"none"`` means IEEE fp32. A torch without
    the precision API answers with its legacy ``torch.backends.cudnn.allow_tf32``."""
    settings = conv_precision_settings()
    if settings is None:
        return bool(torch.backends.cudnn.allow_tf32)
    for setting in settings:
        if setting != "none":
            return setting == "tf32"
    return False
