"""Nearest temporal resampling, and the SlowFast pathway split (both pathway inputs in one read)."""

from __future__ import annotations

import math

import torch

from slowfast_fast import backend as _backend
from slowfast_fast import reference
from slowfast_fast.ops import _validate
from slowfast_fast.ops._dispatch import (
    DIRECT_KEYS,
    PLAIN_TYPES,
    lazy,
    nothing_intercepts,
    op_namespace,
    reference_transform_active,
)

_KERNEL_OPS: dict = {}  # (backend name, op name) -> its OpOverload, looked up once


def _direct_call(x: torch.Tensor) -> bool:
    """Whether a resampling kernel may be called straight through the dispatcher's device key, below
    the autograd layer (which would only pass the call down): as for ``lateral_concat``, when
    :func:`_dispatch.nothing_intercepts`, ``x`` is a plain tensor whose memory holds its values, and
    it needs no gradient."""
    return (  # nothing_intercepts() first: under dynamo it is False, and lazy() does not trace
        nothing_intercepts()
        and type(x) in PLAIN_TYPES
        and not (x.requires_grad and torch.is_grad_enabled())
        and not lazy(x)
    )


def _call(name: str, op_name: str, x: torch.Tensor, *scales: float):
    """Backend ``name``'s op ``op_name`` on ``x``: directly at the device key when :func:`_direct_call`
    allows it (inference: tens of µs of Python saved per call), else through the full dispatcher."""
    op = _KERNEL_OPS.get((name, op_name))
    if op is None:
        op = _KERNEL_OPS[name, op_name] = getattr(op_namespace(name), op_name).default
    keys = DIRECT_KEYS.get(x.device.type)
    if keys is not None and _direct_call(x):
        return op.redispatch(keys, x, *scales)
    return op(x, *scales)


def temporal_resample(x: torch.Tensor, scale_factor: float, *, backend: str | None = None) -> torch.Tensor:
    """Exactly ``F.interpolate(x, mode='nearest', scale_factor=(scale_factor, 1, 1))``.

    ``x`` is ``(N, C, T, H, W)``, NCDHW or channels_last_3d; the output has ``floor(T * scale_factor)``
    frames, frame ``d`` being source frame ``min(floor(d * float32(1 / scale_factor)), T - 1)``
    as PyTorch computes it. When that rule picks every frame once (``scale_factor`` 1, or so close to 1
    that its float32 reciprocal is 1) the input itself is returned (no copy).
    A wrong argument type raises ``TypeError``; a bad shape, dtype or value ``RuntimeError``.
    """
    _validate.check_resample_types(x, {"scale_factor": scale_factor}, backend)
    scale_factor = float(scale_factor)  # a numpy float32 would compute the lengths in float32
    _validate.check_resample(x, scale_factor)
    return _resample(x, scale_factor, backend)


def _resample(x: torch.Tensor, scale_factor: float, backend: str | None) -> torch.Tensor:
    """:func:`temporal_resample` on arguments already checked."""
    if reference.is_identity_resample(x.shape[2], scale_factor):
        return x
    name = _backend.resolve(x.device, backend)
    if name == "reference" or reference_transform_active():
        return reference.temporal_resample(x, scale_factor)
    return _call(name, "temporal_resample", x, float(scale_factor))


def pathway_split(
    x: torch.Tensor, slow_scale: float, fast_scale: float, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(temporal_resample(x, slow_scale), temporal_resample(x, fast_scale))`` from one read of x.

    A pathway whose resampling is the identity gets ``x`` itself.
    """
    _validate.check_resample_types(x, {"slow_scale": slow_scale, "fast_scale": fast_scale}, backend)
    slow_scale, fast_scale = float(slow_scale), float(fast_scale)
    _validate.check_resample_input(x)
    _validate.check_resample_scale(x, slow_scale, "slow_scale")
    _validate.check_resample_scale(x, fast_scale, "fast_scale")
    t = x.shape[2]
    slow_identity = reference.is_identity_resample(t, slow_scale)
    fast_identity = reference.is_identity_resample(t, fast_scale)
    if slow_identity or fast_identity:
        return _resample(x, slow_scale, backend), _resample(x, fast_scale, backend)
    name = _backend.resolve(x.device, backend)
    if name == "reference" or reference_transform_active():
        return reference.pathway_split(x, slow_scale, fast_scale)
    return _call(name, "pathway_split", x, float(slow_scale), float(fast_scale))


def pathway_inputs(
    x: torch.Tensor, resample_rate: float, speed_ratio: int, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The slow and fast pathway inputs of mmaction2's ResNet3dSlowFast for clip ``x``.

    Slow: ``scale_factor = 1 / resample_rate``; fast: ``1 / (resample_rate // speed_ratio)``, with
    Python's ``/`` and ``//`` as mmaction2 computes them, so a float ``resample_rate`` (10.5: the slow
    pathway reads frames 0, 10, 21, 31, ...) resamples as there. Needs ``resample_rate >= speed_ratio
    >= 1`` (else mmaction2 divides by zero).
    """
    _validate.check_resample_types(x, {"resample_rate": resample_rate}, backend)
    _validate.check_int(speed_ratio, "speed_ratio", "fast frames per slow frame")
    if not _validate.is_int(resample_rate):  # as the scale arguments: a numpy float32 would divide in float32
        resample_rate = float(resample_rate)
    # Comparisons, not math.isfinite: under torch.compile a float rate may be a SymFloat (NaN fails both).
    if not (-math.inf < resample_rate < math.inf and speed_ratio >= 1 and resample_rate // speed_ratio >= 1):
        raise ValueError(
            f"need resample_rate >= speed_ratio >= 1, got resample_rate={resample_rate}, "
            f"speed_ratio={speed_ratio}"
        )
    return pathway_split(x, 1.0 / resample_rate, 1.0 / (resample_rate // speed_ratio), backend=backend)
