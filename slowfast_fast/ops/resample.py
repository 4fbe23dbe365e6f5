"""Nearest temporal resampling, and the SlowFast pathway split (both pathway inputs in one read)."""

from __future__ import annotations

import torch

from slowfast_fast import backend as _backend
from slowfast_fast import reference
from slowfast_fast.ops import _validate
from slowfast_fast.ops._dispatch import op_namespace


def temporal_resample(x: torch.Tensor, scale_factor: float, *, backend: str | None = None) -> torch.Tensor:
    """Exactly ``F.interpolate(x, mode='nearest', scale_factor=(scale_factor, 1, 1))``.

    ``x`` is ``(N, C, T, H, W)``, NCDHW or channels_last_3d; the output has ``floor(T * scale_factor)``
    frames, frame ``d`` being source frame ``min(floor(d * float32(1 / scale_factor)), T - 1)``
    as PyTorch computes it. When that rule picks every frame once (``scale_factor`` 1, or so close to 1
    that its float32 reciprocal is 1) the input itself is returned (no copy).
    A wrong argument type raises ``TypeError``; a bad shape, dtype or value ``RuntimeError``.
    """
    _validate.check_resample_types(x, {"scale_factor": scale_factor}, backend)
    _validate.check_resample(x, scale_factor)
    return _resample(x, scale_factor, backend)


def _resample(x: torch.Tensor, scale_factor: float, backend: str | None) -> torch.Tensor:
    """:func:`temporal_resample` on arguments already checked."""
    if reference.is_identity_resample(x.shape[2], scale_factor):
        return x
    name = _backend.resolve(x.device, backend)
    if name == "reference":
        return reference.temporal_resample(x, scale_factor)
    return op_namespace(name).temporal_resample(x, float(scale_factor))


def pathway_split(
    x: torch.Tensor, slow_scale: float, fast_scale: float, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(temporal_resample(x, slow_scale), temporal_resample(x, fast_scale))`` from one read of x.

    A pathway whose resampling is the identity gets ``x`` itself.
    """
    _validate.check_resample_types(x, {"slow_scale": slow_scale, "fast_scale": fast_scale}, backend)
    _validate.check_resample(x, slow_scale, "slow_scale")
    _validate.check_resample(x, fast_scale, "fast_scale")
    t = x.shape[2]
    slow_identity = reference.is_identity_resample(t, slow_scale)
    fast_identity = reference.is_identity_resample(t, fast_scale)
    if slow_identity or fast_identity:
        return _resample(x, slow_scale, backend), _resample(x, fast_scale, backend)
    name = _backend.resolve(x.device, backend)
    if name == "reference":
        return reference.pathway_split(x, slow_scale, fast_scale)
    return op_namespace(name).pathway_split(x, float(slow_scale), float(fast_scale))


def pathway_inputs(
    x: torch.Tensor, resample_rate: int, speed_ratio: int, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The slow and fast pathway inputs of mmaction2's ResNet3dSlowFast for clip ``x``.

    Slow: ``scale_factor = 1 / resample_rate``; fast: ``1 / (resample_rate // speed_ratio)``.
    """
    _validate.check_resample_types(x, {}, backend)
    _validate.check_int(resample_rate, "resample_rate", "the slow pathway's temporal stride over the clip")
    _validate.check_int(speed_ratio, "speed_ratio", "fast frames per slow frame")
    if resample_rate < 1 or speed_ratio < 1 or resample_rate // speed_ratio < 1:
        raise ValueError(
            f"need resample_rate >= speed_ratio >= 1, got resample_rate={resample_rate}, "
            f"speed_ratio={speed_ratio}"
        )
    return pathway_split(x, 1.0 / resample_rate, 1.0 / (resample_rate // speed_ratio), backend=backend)
