"""One switch for TF32 in fp32 convs (and so the GPU backends, which follow them) for the tests."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def conv_tf32(enabled: bool):
    """cuDNN convs with or without TF32, set through the precision API this torch has and restored
    after: once any code used the new API (``cudnn.conv.fp32_precision``), the legacy
    ``allow_tf32`` getter throws."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        owner, attr, value = conv, "fp32_precision", "tf32" if enabled else "ieee"
    else:
        owner, attr, value = torch.backends.cudnn, "allow_tf32", enabled
    previous = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, previous)
