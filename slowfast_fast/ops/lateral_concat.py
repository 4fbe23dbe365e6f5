"""``lateral_concat``: the SlowFast lateral connection (temporal-strided conv) fused with the concat.

Backward formulas (used by every backend's ``lateral_concat_grad_*`` kernels). With
``pre = conv(x_fast, W) * scale + shift`` and ``g = dL/d(lateral) * relu'(pre)``:

* ``grad_x_slow`` is ``grad_out[:, :C_slow]`` (a view, no kernel);
* ``grad_x_fast`` is the transposed temporal conv of ``g * scale``;
* ``G[o, (kt, c)] = sum_m g[m, o] * A[m, (kt, c)]`` (a reduction over N*T*H*W), then
  ``grad_weight = G * scale``, ``grad_scale[o] = sum_k W[o, k] * G[o, k]`` and
  ``grad_shift[o] = sum_m g[m, o]``: scale's gradient needs no second pass over the conv output.
"""

from __future__ import annotations

import torch

from slowfast_fast import backend as _backend
from slowfast_fast import reference
from slowfast_fast._precision import autocast_enabled
from slowfast_fast.ops import _validate
from slowfast_fast.ops._dispatch import (
    DIRECT_KEYS,
    PLAIN_TYPES,
    lazy,
    nothing_intercepts,
    op_namespace,
    reference_transform_active,
)


def _autocast_inputs(x_slow, x_fast, weight, scale, shift):
    """Mirror autocast's treatment of the reference: conv3d runs in the autocast dtype, the affine
    (``* scale + shift``, not an autocast op) promotes the conv's result with scale's and shift's
    dtypes, then cat promotes with x_slow's. Here the conv inputs are rounded to the autocast dtype
    and everything is computed in the dtype the reference's result has; scale and shift are not
    rounded (the reference multiplies by them as they are)."""
    device_type = x_slow.device.type
    if not autocast_enabled(device_type):
        return x_slow, x_fast, weight, scale, shift
    low = torch.get_autocast_dtype(device_type)
    if not x_fast.is_floating_point() or x_fast.dtype == torch.float64:
        return x_slow, x_fast, weight, scale, shift
    lateral_dtype = low
    for t in (scale, shift):
        if t is not None and t.is_floating_point():
            lateral_dtype = torch.promote_types(lateral_dtype, t.dtype)
    out_dtype = torch.promote_types(x_slow.dtype, lateral_dtype)

    def conv_input(t):
        return t.to(low).to(out_dtype)

    def affine(t):
        return None if t is None else t.to(out_dtype)

    return x_slow.to(out_dtype), conv_input(x_fast), conv_input(weight), affine(scale), affine(shift)


_CPU_KERNEL_KEYS = DIRECT_KEYS["cpu"]


def _direct_call(x_slow, x_fast, weight, scale, shift) -> bool:
    """Whether a backend's kernel may be called straight through the dispatcher's device key (CPU or
    CUDA: :data:`DIRECT_KEYS`), below the autograd layer: when :func:`_dispatch.nothing_intercepts`,
    no input needs a gradient, and every input is a plain tensor whose memory holds its values
    (:func:`_dispatch.lazy`): then the autograd layer would only have passed the call down to the kernel.
    Autocast is the caller's business (the public op applies it first, or only takes this path without
    it). Written without generators or per-tensor dispatch-key lookups: every Python step here is on the
    hot path (see :func:`_fast_route`)."""
    if not nothing_intercepts():
        return False
    plain = PLAIN_TYPES
    if type(x_slow) not in plain or type(x_fast) not in plain or type(weight) not in plain:
        return False
    if scale is not None and (type(scale) not in PLAIN_TYPES or lazy(scale)):
        return False
    if shift is not None and (type(shift) not in PLAIN_TYPES or lazy(shift)):
        return False
    if lazy(x_slow) or lazy(x_fast) or lazy(weight):
        return False
    if torch.is_grad_enabled():
        if x_slow.requires_grad or x_fast.requires_grad or weight.requires_grad:
            return False
        if (scale is not None and scale.requires_grad) or (shift is not None and shift.requires_grad):
            return False
    return True


_CPU_KERNELS: bool | None = None  # whether slowfast_fast._C has CPU kernels; looked up once
_KERNEL_OPS: dict = {}  # backend name -> its lateral_concat OpOverload, looked up once


def _kernel_op(name: str):
    """``lateral_concat.default`` of backend ``name``'s op namespace."""
    op = _KERNEL_OPS.get(name)
    if op is None:
        op = _KERNEL_OPS[name] = op_namespace(name).lateral_concat.default
    return op


def _cpu_kernels() -> bool:
    global _CPU_KERNELS
    if _CPU_KERNELS is None:
        _CPU_KERNELS = _backend.usable("cpu", torch.device("cpu"))[0]
    return _CPU_KERNELS


def _fast_route(x_slow, x_fast, weight, stride, padding, scale, shift, relu, backend) -> str | None:
    """Where a call may go with few or no Python steps first, or None for the full path:

    * ``"cpu"``: straight to the compiled CPU kernel with no Python checks: plain argument types,
      CPU tensors, the ``cpu`` backend chosen (explicitly, or by ``auto``), no autocast, and
      :func:`_direct_call`. The kernel checks shapes, dtypes and devices itself; when it raises,
      the caller runs the Python checks to raise their clearer error.
    * ``"reference"``: the same conditions, but ``auto``'s rule sends the call to the reference
      (bf16 where it measured faster): only the shape checks run first, the argument types being
      the ones checked here.

    Why bother: on a 2-core CPU the few microseconds of Python before an op measured 40-80 us per
    call (the OpenMP workers of the previous op spin on the other core meanwhile), half the stem
    lateral's time."""
    if (
        type(x_slow) not in PLAIN_TYPES
        or type(x_fast) not in PLAIN_TYPES
        or type(weight) not in PLAIN_TYPES
        or type(stride) is not int
    ):
        return None
    route = "cpu"
    if backend is None:
        if _backend.get_backend() != "auto":
            return None
        if x_fast.dtype is torch.bfloat16:
            if x_fast.dim() != 5 or weight.dim() != 5:  # the rule reads their sizes: checks first
                return None
            route = _backend.resolve_lateral_concat(x_slow, x_fast, weight, stride)
            if route not in ("cpu", "reference"):
                return None
    elif backend != "cpu":
        return None
    if (
        type(padding) is int
        and type(relu) is bool
        and x_slow.is_cpu
        and _cpu_kernels()
        and not torch.is_autocast_enabled("cpu")
        and _direct_call(x_slow, x_fast, weight, scale, shift)
    ):
        return route
    return None


def _reference_for_transforms(x_slow, x_fast, weight, stride, padding, scale, shift, relu):
    """The reference, which forward-mode AD and functorch's gradient transforms can see through (the
    kernels' ops cannot: :func:`_dispatch.reference_transform_active`). In bf16 on the CPU
    at the shapes where its bf16 conv3d gave NaN or crashed (``backend.pytorch_conv_needs_fp32``; ``auto``
    keeps them on the kernels) it computes in fp32 and rounds the result: the casts are
    differentiable too."""
    if _backend.pytorch_conv_needs_fp32(x_fast, weight, stride):
        up = [None if t is None else t.float() for t in (x_slow, x_fast, weight, scale, shift)]
        out = reference.lateral_concat(*up[:3], stride, padding, *up[3:], relu)
        return out.to(torch.bfloat16)
    return reference.lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift, relu)


def lateral_concat(
    x_slow: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    relu: bool = False,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """The SlowFast lateral connection and concat in one pass that writes the output directly:
    ``cat([x_slow, act(conv3d(x_fast, weight, stride=(stride,1,1), padding=(padding,0,0)) * scale
    + shift)], 1)``.

    Args:
        x_slow: ``(N, C_slow, T_slow, H, W)``, NCDHW or channels_last_3d.
        x_fast: ``(N, C_fast, T_fast, H, W)`` with the same N, H, W, dtype and device.
        weight: ``(C_lat, C_fast, k, 1, 1)``; the conv's temporal output length must be ``T_slow``.
        stride: temporal stride, >= 1.
        padding: temporal zero padding on both sides, in ``[0, k-1]``.
        scale, shift: optional ``(C_lat,)`` per-channel affine (a folded eval-mode BatchNorm).
        relu: apply ReLU after the affine.
        backend: override the backend for this call (see :mod:`slowfast_fast.backend`).

    Returns:
        ``(N, C_slow + C_lat, T_slow, H, W)`` in x_slow's memory format (channels_last_3d if x_slow
        is channels_last_3d, else contiguous). Differentiable in x_slow, x_fast, weight, scale, shift.

    Raises:
        TypeError: an argument of the wrong type (e.g. a numpy array, or a tuple ``stride``).
        RuntimeError: shapes, dtypes, devices or values that do not fit together.
    """
    route = _fast_route(x_slow, x_fast, weight, stride, padding, scale, shift, relu, backend)
    if route == "reference":
        _validate.check_lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift)
        return reference.lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift, relu)
    if route == "cpu":
        try:
            return _kernel_op("cpu").redispatch(
                _CPU_KERNEL_KEYS, x_slow, x_fast, weight, stride, padding, scale, shift, relu
            )
        except (RuntimeError, TypeError):
            # The documented error for the same input (the checks below raise it); re-raise the
            # kernel's own if they find nothing.
            _validate.check_lateral_concat_types(
                x_slow, x_fast, weight, stride, padding, scale, shift, relu, backend
            )
            _validate.check_lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift)
            raise
    _validate.check_lateral_concat_types(x_slow, x_fast, weight, stride, padding, scale, shift, relu, backend)
    x_slow, x_fast, weight, scale, shift = _autocast_inputs(x_slow, x_fast, weight, scale, shift)
    _validate.check_lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift)
    name = _backend.resolve_lateral_concat(x_slow, x_fast, weight, stride, backend)
    if name == "reference":
        return reference.lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift, relu)
    if reference_transform_active():
        return _reference_for_transforms(x_slow, x_fast, weight, stride, padding, scale, shift, relu)
    op = _kernel_op(name)
    keys = DIRECT_KEYS.get(x_slow.device.type)
    if keys is not None and _direct_call(x_slow, x_fast, weight, scale, shift):
        # Inference: the autograd layer would only pass the call down (tens of µs of Python).
        return op.redispatch(keys, x_slow, x_fast, weight, stride, padding, scale, shift, relu)
    return op(x_slow, x_fast, weight, stride, padding, scale, shift, relu)
