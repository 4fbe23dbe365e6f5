"""Pure-PyTorch definitions of every fused op: the truth every backend is tested against.

These functions are also the ``reference`` backend. They are written with ordinary differentiable
PyTorch ops, so autograd of the reference is PyTorch's own.
"""

from __future__ import annotations

import math
import struct

import torch
import torch.nn.functional as F

from slowfast_fast._functorch import transform_active
from slowfast_fast._layout import output_memory_format

__all__ = [
    "lateral_concat",
    "is_identity_resample",
    "resampled_length",
    "source_frame_indices",
    "double_index_rule",
    "temporal_resample",
    "pathway_split",
]


def lateral_concat(
    x_slow: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """``cat([x_slow, act(conv3d(x_fast, weight) * scale + shift)], dim=1)``.

    Args:
        x_slow: ``(N, C_s, T_s, H, W)`` slow-pathway features.
        x_fast: ``(N, C_f, T_f, H, W)`` fast-pathway features.
        weight: ``(C_lat, C_f, k, 1, 1)`` lateral conv weight (no bias).
        stride: temporal stride of the lateral conv.
        padding: temporal zero padding on both sides.
        scale, shift: optional ``(C_lat,)`` per-channel affine (a folded eval-mode BatchNorm).
        relu: apply ReLU after the affine.

    Returns:
        ``(N, C_s + C_lat, T_s, H, W)`` in x_slow's memory format; the conv's temporal output length must
        equal ``T_s``.
    """
    lateral = F.conv3d(x_fast, weight, stride=(stride, 1, 1), padding=(padding, 0, 0))
    shape = (1, -1, 1, 1, 1)
    if scale is not None:
        lateral = lateral * scale.view(shape)
    if shift is not None:
        lateral = lateral + shift.view(shape)
    if relu:
        lateral = torch.relu(lateral)
    out = torch.cat((x_slow, lateral), dim=1)
    if transform_active():
        return out  # vmap can neither query nor set a channels_last memory format
    # In x_slow's memory format, as every backend returns it: PyTorch's CPU conv3d may return a
    # contiguous result for channels_last_3d inputs, and cat would follow it.
    return out.contiguous(memory_format=output_memory_format(x_slow))


def resampled_length(t_in: int, scale_factor: float) -> int:
    """Temporal output length of ``F.interpolate(..., scale_factor=(scale_factor, 1, 1))``."""
    return int(math.floor(float(t_in) * float(scale_factor)))


def is_identity_resample(t_in: int, scale_factor: float) -> bool:
    """Whether nearest resampling by ``scale_factor`` picks every frame once, in order.

    Equal lengths are not enough: a scale in (1, 1 + 1/T) keeps T frames but maps frame 1 to frame 0.
    With T >= 2 the rule is the identity exactly when ``float32(1 / scale_factor)`` is 1.0, that is
    when the double ``1 / scale_factor`` lies in ``[1 - 2^-25, 1 + 2^-24]`` (round to nearest even:
    both ends are ties that go to 1.0). Written as comparisons, not by rounding, so that a SymFloat
    scale (a float module attribute under torch.compile) traces.
    """
    scale_factor = float(scale_factor)
    if resampled_length(t_in, scale_factor) != t_in:
        return False
    return t_in == 1 or _ROUNDS_TO_ONE[0] <= 1.0 / scale_factor <= _ROUNDS_TO_ONE[1]


# The doubles that float32 rounds to 1.0 (the ends are ties, which round to 1.0's even mantissa).
_ROUNDS_TO_ONE = (1.0 - 2.0**-25, 1.0 + 2.0**-24)


def _float32(value: float) -> float:
    """``value`` rounded to float32, as PyTorch rounds the scale it passes to its nearest kernels
    (no tensor: this runs on every resampling call)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def double_index_rule(dtype: torch.dtype, device) -> bool:
    """Whether PyTorch's nearest kernels compute the source index in double for this dtype and device:
    on the CPU for float64 (the index is ``floor(float32(dst * (1.0 / scale)))`` with the product in
    double), everywhere else in float32. Odd rates pick other frames under the two rules (T=65 at
    6/7: frame 54 reads 63 in double, 62 in float)."""
    if dtype != torch.float64:
        return False
    return device is None or torch.device(device).type == "cpu"


def source_frame_indices(
    t_in: int, scale_factor: float, device=None, double_rule: bool = False
) -> torch.Tensor:
    """Source frame of every output frame under PyTorch's nearest rule.

    PyTorch computes ``min(floor(dst * scale), t_in - 1)`` with ``scale = float32(1 / scale_factor)``
    and the product in float32; doing the same here keeps odd rates (1/3, 1/7, ...) in agreement.
    With ``double_rule`` (float64 on the CPU: :func:`double_index_rule`) the scale and the product are
    in double and only the product is rounded to float32 before the floor, as PyTorch's CPU kernel
    does for float64. For 5-D inputs it has no identity special case on either device: a scale in
    (1, 1 + 1/T) keeps T frames but repeats frame 0 and drops the last.
    """
    scale_factor = float(scale_factor)  # a numpy float32 would make 1 / scale a float32 division
    # Built on ``device`` (nothing copied from the host, so it can run inside CUDA-graph capture), as
    # int64 and then converted: a float32 arange is not exact past 2^24 frames.
    dst = torch.arange(resampled_length(t_in, scale_factor), dtype=torch.int64, device=device)
    if double_rule:
        product = (dst.to(torch.float64) * (1.0 / scale_factor)).to(torch.float32)
    else:  # the Python scalar multiplies the float32 tensor in float32, as PyTorch's kernels do
        product = dst.to(torch.float32) * _float32(1.0 / scale_factor)
    return torch.floor(product).to(torch.int64).clamp_(max=t_in - 1)


def temporal_resample(x: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """Nearest temporal resampling of ``(N, C, T, H, W)``, exactly ``F.interpolate`` in 'nearest' mode.

    Where the output has as many frames as the input without being the identity (a scale in
    ``(1, 1 + 1/T)``: frame 0 repeats, the last is dropped), PyTorch's nearest backward treats equal
    lengths as the identity and so is not the derivative of its own forward; there the same frames
    are gathered by ``index_select``, whose gradient is. Likewise for float64 on the CPU, whose
    forward picks frames by the double rule (:func:`double_index_rule`) while its backward sums them
    by the float rule (T=65 at 6/7: output 54 reads frame 63, its gradient goes to frame 62).
    """
    scale_factor = float(scale_factor)
    t_in = x.shape[2]
    double_rule = double_index_rule(x.dtype, x.device)
    same_length = resampled_length(t_in, scale_factor) == t_in
    if (same_length or double_rule) and not is_identity_resample(t_in, scale_factor):
        out = x.index_select(2, source_frame_indices(t_in, scale_factor, x.device, double_rule))
    else:
        out = F.interpolate(x, mode="nearest", scale_factor=(scale_factor, 1.0, 1.0))
    if transform_active():
        return out
    # Neither op follows the ops' layout contract by itself (F.interpolate gave a sliced channels_last_3d
    # input a channels_last_3d result in fp32, a contiguous one in fp64): output_memory_format does.
    return out.contiguous(memory_format=output_memory_format(x))


def pathway_split(x: torch.Tensor, slow_scale: float, fast_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Both pathway inputs of a SlowFast clip: ``(resample(x, slow_scale), resample(x, fast_scale))``."""
    return temporal_resample(x, slow_scale), temporal_resample(x, fast_scale)
