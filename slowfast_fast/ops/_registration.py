"""Fake (meta) kernels and autograd for one namespace of the fused ops.

Both op namespaces (``slowfast_fast`` from the compiled library, ``slowfast_fast_triton`` from the
Triton backend) have the schemas of ``_schemas.SCHEMAS`` and get the same fake kernels and the same
autograd formulas here. Every backward is itself made of registered ops (plus slicing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slowfast_fast import backend as _backend
from slowfast_fast import reference
from slowfast_fast._layout import output_memory_format
from slowfast_fast.ops import _validate


def _ops(namespace: str):
    return getattr(torch.ops, namespace)


def _lateral_fake(x_slow, x_fast, weight, stride, padding, scale, shift, relu):
    _validate.check_lateral_concat(x_slow, x_fast, weight, stride, padding, scale, shift)
    n, c_slow, t_slow, h, w = x_slow.shape
    return x_slow.new_empty((n, c_slow + weight.shape[0], t_slow, h, w)).contiguous(
        memory_format=output_memory_format(x_slow)
    )


def _grad_input_fake(grad_out, x_fast, weight, scale, out, stride, padding):
    return torch.empty_like(x_fast, memory_format=output_memory_format(x_fast))


def _grad_weight_fake(grad_out, x_fast, weight, scale, out, stride, padding):
    c_lat = weight.shape[0]
    return (
        torch.empty_like(weight, memory_format=torch.contiguous_format),
        weight.new_empty((c_lat,)),
        weight.new_empty((c_lat,)),
    )


def _backward_fake(grad_out, x_fast, weight, scale, out, stride, padding, need_input, need_weight):
    """What was not asked for is a 0-element tensor."""
    args = (grad_out, x_fast, weight, scale, out, stride, padding)
    grad_x_fast = _grad_input_fake(*args) if need_input else x_fast.new_empty((0,))
    if need_weight:
        return (grad_x_fast, *_grad_weight_fake(*args))
    return grad_x_fast, weight.new_empty((0,)), weight.new_empty((0,)), weight.new_empty((0,))


def _resample_fake(x, scale_factor):
    _validate.check_resample(x, scale_factor)
    n, c, t, h, w = x.shape
    t_out = int(float(t) * scale_factor)
    return x.new_empty((n, c, t_out, h, w)).contiguous(memory_format=output_memory_format(x))


def _resample_backward_fake(grad_out, t_in, scale_factor):
    n, c, _, h, w = grad_out.shape
    return grad_out.new_empty((n, c, t_in, h, w)).contiguous(memory_format=output_memory_format(grad_out))


def _split_fake(x, slow_scale, fast_scale):
    return _resample_fake(x, slow_scale), _resample_fake(x, fast_scale)


def _relu_mask(out: torch.Tensor, c_slow: int) -> torch.Tensor:
    """Where the lateral channels' ReLU passes the gradient: ``out > 0``, or NaN, as ``torch.relu``'s
    backward (it zeroes the gradient only where the output is <= 0)."""
    return ~(out[:, c_slow:] <= 0)


def _reference_conv(x_fast: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """The lateral conv by PyTorch, differentiably; in fp32 (rounded back) for bf16 on the CPU at the
    shapes where its bf16 conv3d gave NaN or crashed (``backend.pytorch_conv_needs_fp32``)."""
    if _backend.pytorch_conv_needs_fp32(x_fast, weight, stride):
        return _reference_conv(x_fast.float(), weight.float(), stride, padding).to(x_fast.dtype)
    return F.conv3d(x_fast, weight, stride=(stride, 1, 1), padding=(padding, 0, 0))


def _differentiable_lateral_backward(ctx, grad_out, x_fast, weight, scale, out):
    """The gradients of ``lateral_concat`` as differentiable PyTorch ops, for ``create_graph=True``
    (gradient penalties, double backward): the kernels' backward ops have no autograd formula of their
    own, so their results would be constants and the second derivatives silently zero.

    With ``g = dL/d(lateral) * relu_mask`` (the mask from the saved output: relu'' = 0, so it is a
    constant), ``lateral = conv(x_fast, W) * scale + shift`` and everything is linear in g: the
    gradients of x_fast, W and scale are those of ``<g, conv(x_fast, W) * scale>``, the shift's is the
    sum of g. Costs a reference conv and its backward; the first-order path (create_graph=False) is
    unchanged."""
    need = ctx.needs_input_grad
    c_slow = ctx.c_slow
    g = grad_out[:, c_slow:]
    if out is not None:
        g = g * _relu_mask(out, c_slow)
    wrt = [(i, t) for i, t in ((1, x_fast), (2, weight), (5, scale)) if need[i] and t is not None]
    grads = ()
    if wrt:
        conv = _reference_conv(x_fast, weight, ctx.stride, ctx.padding)
        lateral = conv if scale is None else conv * scale.view(1, -1, 1, 1, 1)
        grads = torch.autograd.grad(lateral, [t for _, t in wrt], g, create_graph=True)
    result = [None] * 8
    if need[0]:
        result[0] = grad_out[:, :c_slow]
    for (i, _), grad in zip(wrt, grads, strict=True):
        result[i] = grad
    if need[6]:
        result[6] = g.sum(dim=(0, 2, 3, 4))
    return tuple(result)


def _resample_grad(ops, grad_out: torch.Tensor, t_in: int, scale_factor: float) -> torch.Tensor:
    """The input gradient of nearest resampling: the kernel's sum over each source frame's run, or, for
    ``create_graph=True``, the same sum as a differentiable ``index_add`` (the kernel's op has no
    autograd formula: its result would be a constant)."""
    if not torch.is_grad_enabled():
        return ops.temporal_resample_backward(grad_out, t_in, scale_factor)
    n, c, _, h, w = grad_out.shape
    double_rule = reference.double_index_rule(grad_out.dtype, grad_out.device)
    source = reference.source_frame_indices(t_in, scale_factor, grad_out.device, double_rule)
    grad = grad_out.new_zeros((n, c, t_in, h, w)).index_add(2, source, grad_out)
    return grad.contiguous(memory_format=output_memory_format(grad_out))


def _fold_batch(t: torch.Tensor | None, dim: int | None, size: int) -> torch.Tensor | None:
    """``t`` with vmap's batch dimension (``dim``, or a broadcast one for an unbatched tensor) merged into
    its leading N: ``(size * N, ...)``."""
    if t is None:
        return None
    t = t.expand(size, *t.shape) if dim is None else t.movedim(dim, 0)
    return t.flatten(0, 1)


def _vmap_rules(op_lateral, op_resample, op_split):
    """Batching rules for ``torch.vmap`` over the three forward ops (without them vmap runs PyTorch's
    fallback: one call per batch entry, with a performance warning). A batch of the activations is a
    bigger N, so it is folded into N and the op runs once; a batched weight, scale or shift (an ensemble
    of models) runs the op once per entry. Returns the three rules."""

    def lateral_vmap(info, in_dims, x_slow, x_fast, weight, stride, padding, scale, shift, relu):
        d_slow, d_fast, d_weight, _, _, d_scale, d_shift, _ = in_dims
        size = info.batch_size
        if d_weight is None and d_scale is None and d_shift is None:
            n = x_slow.shape[0 if d_slow is None or d_slow > 0 else 1]
            out = op_lateral(
                _fold_batch(x_slow, d_slow, size), _fold_batch(x_fast, d_fast, size), weight, stride, padding,
                scale, shift, relu,
            )  # fmt: skip
            return out.unflatten(0, (size, n)), 0

        def entry(t, d, b):
            return t if t is None or d is None else t.select(d, b)

        outs = [
            op_lateral(
                entry(x_slow, d_slow, b),
                entry(x_fast, d_fast, b),
                entry(weight, d_weight, b),
                stride,
                padding,
                entry(scale, d_scale, b),
                entry(shift, d_shift, b),
                relu,
            )  # fmt: skip
            for b in range(size)
        ]
        return torch.stack(outs), 0

    def resample_vmap(info, in_dims, x, scale_factor):
        d = in_dims[0]
        n = x.shape[0 if d > 0 else 1]
        out = op_resample(_fold_batch(x, d, info.batch_size), scale_factor)
        return out.unflatten(0, (info.batch_size, n)), 0

    def split_vmap(info, in_dims, x, slow_scale, fast_scale):
        d = in_dims[0]
        n = x.shape[0 if d > 0 else 1]
        slow, fast = op_split(_fold_batch(x, d, info.batch_size), slow_scale, fast_scale)
        return (slow.unflatten(0, (info.batch_size, n)), fast.unflatten(0, (info.batch_size, n))), (0, 0)

    return lateral_vmap, resample_vmap, split_vmap


def register(namespace: str, fused_backward: bool = False) -> None:
    """Register fake kernels and autograd for every op of ``namespace``. With ``fused_backward`` the
    namespace also has ``lateral_concat_backward`` (``_schemas.TRITON_SCHEMAS``), and the autograd
    formula computes both gradients with that one op instead of the two separate ones."""
    ops = _ops(namespace)
    q = f"{namespace}::"
    if fused_backward:
        torch.library.register_fake(q + "lateral_concat_backward")(_backward_fake)
    torch.library.register_fake(q + "lateral_concat")(_lateral_fake)
    torch.library.register_fake(q + "lateral_concat_grad_input")(_grad_input_fake)
    torch.library.register_fake(q + "lateral_concat_grad_weight")(_grad_weight_fake)
    torch.library.register_fake(q + "temporal_resample")(_resample_fake)
    torch.library.register_fake(q + "temporal_resample_backward")(_resample_backward_fake)
    torch.library.register_fake(q + "pathway_split")(_split_fake)

    def lateral_setup(ctx, inputs, output):
        x_slow, x_fast, weight, stride, padding, scale, shift, relu = inputs
        ctx.c_slow = x_slow.shape[1]
        ctx.stride, ctx.padding = stride, padding
        ctx.has_scale = scale is not None
        ctx.save_for_backward(x_fast, weight, scale, output if relu else None)

    def lateral_backward(ctx, grad_out):
        x_fast, weight, scale, out = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradients must be differentiable
            return _differentiable_lateral_backward(ctx, grad_out, x_fast, weight, scale, out)
        need = ctx.needs_input_grad
        grad_x_slow = grad_out[:, : ctx.c_slow] if need[0] else None
        grad_x_fast = None
        grad_weight = grad_scale = grad_shift = None
        need_weight = need[2] or need[5] or need[6]
        if fused_backward and (need[1] or need_weight):
            grad_x_fast, grad_weight, grad_scale, grad_shift = ops.lateral_concat_backward(
                grad_out, x_fast, weight, scale, out, ctx.stride, ctx.padding, need[1], need_weight
            )
        elif need[1]:
            grad_x_fast = ops.lateral_concat_grad_input(
                grad_out, x_fast, weight, scale, out, ctx.stride, ctx.padding
            )
        if not fused_backward and need_weight:
            grad_weight, grad_scale, grad_shift = ops.lateral_concat_grad_weight(
                grad_out, x_fast, weight, scale, out, ctx.stride, ctx.padding
            )
        return (
            grad_x_slow,
            grad_x_fast if need[1] else None,
            grad_weight if need[2] else None,
            None,
            None,
            grad_scale if need[5] else None,
            grad_shift if need[6] else None,
            None,
        )

    torch.library.register_autograd(q + "lateral_concat", lateral_backward, setup_context=lateral_setup)

    def resample_setup(ctx, inputs, output):
        x, scale_factor = inputs
        ctx.t_in, ctx.scale_factor = x.shape[2], scale_factor

    def resample_backward(ctx, grad_out):
        return _resample_grad(ops, grad_out, ctx.t_in, ctx.scale_factor), None

    torch.library.register_autograd(q + "temporal_resample", resample_backward, setup_context=resample_setup)

    def split_setup(ctx, inputs, output):
        x, slow_scale, fast_scale = inputs
        ctx.t_in, ctx.scales = x.shape[2], (slow_scale, fast_scale)

    def split_backward(ctx, grad_slow, grad_fast):
        grad = None
        for g, scale_factor in zip((grad_slow, grad_fast), ctx.scales, strict=True):
            if g is None:
                continue
            part = _resample_grad(ops, g, ctx.t_in, scale_factor)
            grad = part if grad is None else grad + part
        return grad, None, None

    torch.library.register_autograd(q + "pathway_split", split_backward, setup_context=split_setup)

    lateral_vmap, resample_vmap, split_vmap = _vmap_rules(
        ops.lateral_concat, ops.temporal_resample, ops.pathway_split
    )
    torch.library.register_vmap(q + "lateral_concat", lateral_vmap)
    torch.library.register_vmap(q + "temporal_resample", resample_vmap)
    torch.library.register_vmap(q + "pathway_split", split_vmap)
