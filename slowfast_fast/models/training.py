"""Training in ``torch.channels_last_3d``: the one switch that makes a SlowFast training step fast.

BASELINE.md measured a training step of the backbone 1.8x faster on an H200 with the weights and the
input in channels_last_3d (NDHWC) than in NCDHW: cuDNN's 3-D convolutions and their backward run
natively in that layout, and every op after the first conv keeps it. :func:`to_channels_last_3d`
is that switch made explicit; it changes no result beyond floating-point summation order, and keeps
``with_cp``, ``frozen_stages``, ``norm_eval`` and autocast working as before.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["to_channels_last_3d"]

_CL = torch.channels_last_3d


def convert_5d_tensors(model: nn.Module) -> nn.Module:
    """``model`` with its 5-D parameters and buffers in channels_last_3d, in place. Unlike
    ``model.to(memory_format=torch.channels_last_3d)``, which raises on any 4-D tensor (a non-local
    block's ``concatenation`` mode has a Conv2d), it leaves tensors of other ranks as they are."""
    return model._apply(lambda t: t.contiguous(memory_format=_CL) if t.dim() == 5 else t)


def _input_to_channels_last(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: the clip (the first argument, when it is a 5-D tensor), or each clip of a
    ``[x_slow, x_fast]`` pair (a list or tuple of 5-D tensors, kept as that type), in channels_last_3d."""
    if not args:
        return None
    first = args[0]
    if isinstance(first, torch.Tensor) and first.dim() == 5:
        return (first.contiguous(memory_format=_CL), *args[1:])
    if (
        isinstance(first, (list, tuple))
        and first
        and all(isinstance(t, torch.Tensor) and t.dim() == 5 for t in first)
    ):
        return (type(first)(t.contiguous(memory_format=_CL) for t in first), *args[1:])
    return None


def to_channels_last_3d(model: nn.Module, convert_input: bool = True) -> nn.Module:
    """Put ``model`` (in place; returned for chaining) in ``torch.channels_last_3d`` for training.

    Its 5-D parameters and buffers are converted, so their gradients come out in that layout too;
    with ``convert_input`` a forward pre-hook also converts the input clip (or both clips of an
    ``[x_slow, x_fast]`` input) once on entry (without
    it, the first conv's output is already channels_last_3d, as its weight is). Call it before
    creating the optimizer (whose state takes the parameters' layout) and before wrapping the model
    in DistributedDataParallel. Calling it again does not add a second hook.

    Example::

        model = to_channels_last_3d(ResNet3dSlowFast(...).cuda())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = criterion(head(model(clip)), target)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_channels_last_3d expects an nn.Module, got {type(model).__name__}")
    convert_5d_tensors(model)
    if convert_input and _input_to_channels_last not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_input_to_channels_last)
    return model
