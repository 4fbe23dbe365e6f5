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
from slowfast_fast.ops import _validate
from slowfast_fast.ops._dispatch import op_namespace


def _autocast_inputs(x_slow, x_fast, weight, scale, shift):
    """Mirror autocast's treatment of the reference: conv3d runs in the autocast dtype, then cat
    promotes. Here the conv inputs are rounded to the autocast dtype and everything is computed in
    the dtype cat would produce."""
    device_type = x_slow.device.type
    if not torch.is_autocast_enabled(device_type):
        return x_slow, x_fast, weight, scale, shift
    low = torch.get_autocast_dtype(device_type)
    if not x_fast.is_floating_point() or x_fast.dtype == torch.float64:
        return x_slow, x_fast, weight, scale, shift
    out_dtype = torch.promote_types(x_slow.dtype, low)

    def cast(t):
        return None if t is None else t.to(low).to(out_dtype)

    return x_slow.to(out_dtype), cast(x_fast), cast(weight), cast(scale), cast(shift)


# The dispatch keys of a plain CPU tensor (autograd, autocast and ADInplaceOrView included); an
# inference tensor has a subset of them. Any other key (Python for fake/functional tensors and
# __torch_dispatch__ subclasses, functorch wrappers, ...) needs the full dispatcher.
_PLAIN_CPU_KEYS = torch._C._dispatch_keys(torch.empty(0)).raw_repr()
_CPU_KERNEL_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)


def _plain_cpu(t: torch.Tensor | None) -> bool:
    return t is None or (torch._C._dispatch_keys(t).raw_repr() | _PLAIN_CPU_KEYS) == _PLAIN_CPU_KEYS


def _direct_cpu_call(tensors) -> bool:
    """Whether the compiled CPU kernel may be called straight through the dispatcher's CPU key.

    The full call passes the autograd layer, a Python kernel from ``torch.library.register_autograd``
    that costs about 5 us even when nothing needs a gradient (a third of the stem lateral's time on
    two cores). Skipping it is exact when no input needs a gradient, nothing is being traced or
    compiled (dynamo) or traced (TorchScript, as the ONNX TorchScript exporter does), no dispatch or
    torch-function mode is active, and every input is a plain CPU tensor:
    then the autograd layer would only have passed the call down to the CPU kernel. Autocast was
    already applied by the public op (``_autocast_inputs``)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._len_torch_dispatch_stack() != 0:
        return False
    if torch._C._is_torch_function_mode_enabled():
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    return all(_plain_cpu(t) for t in tensors)


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
    _validate.check_lateral_concat_types(x_slow, x_fast, weight, stride, padding, scale, shift, relu, backend)
    x_slow, x_fast, weight, scale, shift = _autocast_inputs(x_slow, x_fast, weight, scale, shift)
    _validate.check_lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift)
    name = _backend.resolve_lateral_concat(x_slow, x_fast, weight, backend)
    if name == "reference":
        return reference.lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift, relu)
    if name == "cpu" and _direct_cpu_call((x_slow, x_fast, weight, scale, shift)):
        return torch.ops.slowfast_fast.lateral_concat.default.redispatch(
            _CPU_KERNEL_KEYS, x_slow, x_fast, weight, stride, padding, scale, shift, relu
        )
    return op_namespace(name).lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift, relu)
