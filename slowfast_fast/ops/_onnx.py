"""ONNX translations of the public ops, registered with both ``torch.onnx.export`` exporters.

Every op becomes standard ONNX: ``lateral_concat`` is Conv, Mul, Add, Relu and Concat;
``temporal_resample`` (and each output of ``pathway_split``) is a Slice with a step when PyTorch's
nearest rule picks evenly spaced frames, else a Gather of the frames it picks (indices computed by
:func:`slowfast_fast.reference.source_frame_indices`, so the exported graph keeps the exact index
rule). Only the time axis must be static; batch, height and width may be dynamic axes.

The frames are those the eager op picks for the traced input's dtype and device: by PyTorch's double
rule for float64 on the CPU (:func:`slowfast_fast.reference.double_index_rule`; T=65 at 6/7 reads
frame 63 for output 54 where the float rule reads 62), else by the float rule. Each exporter reads
the dtype and device from the traced value (see ``_legacy_double_rule`` and ``_dynamo_device``); where
it records no device the CPU is assumed, the device float64 models are exported from. A float64
model exported from a CUDA device therefore gets CUDA's (float-rule) frames, as it does in eager.

* ``dynamo=False`` (TorchScript exporter): ``torch.onnx.register_custom_op_symbolic``, the public API.
* ``dynamo=True`` (the default exporter): the exporter has no public global registry (only the per-call
  ``custom_translation_table``), so the translations join the table its own ATen translations are
  registered in (torchlib's ``onnx_impl``), when the exporter first imports that table (importing
  onnxscript for every ``import slowfast_fast`` would cost over a second). That module is private:
  if it moves, pass ``custom_translation_table=slowfast_fast.ops._onnx.translation_table()``; the
  TorchScript path is unaffected. Nothing is registered when onnxscript is not installed (the
  dynamo exporter needs it anyway).

The backward ops have no translation: ONNX graphs here are for inference.
"""

# No `from __future__ import annotations`: the onnxscript functions' annotations must be real objects.
import importlib.abc
import importlib.util
import sys
from typing import Optional, TypeVar, Union

import torch
from torch.onnx.symbolic_helper import parse_args

from slowfast_fast import reference
from slowfast_fast.ops import _triton_ops

# Slice takes its starts/ends/axes/steps as inputs from opset 10; every op used here exists in 11.
LEGACY_MIN_OPSET = 11

_NAMESPACES = ("slowfast_fast", _triton_ops.NAMESPACE)


def _frame_selection(
    t_in: int | None, scale_factor: float, double_rule: bool = False
) -> tuple[int, int, int] | list[int]:
    """The frames ``temporal_resample`` keeps: ``(start, end, step)`` when evenly spaced (a Slice),
    else the list of source indices (a Gather). ``double_rule``: PyTorch's index rule for float64 on
    the CPU (:func:`reference.double_index_rule`), which the eager op follows there."""
    if not isinstance(t_in, int):
        raise ValueError(
            f"ONNX export of temporal_resample needs a static time axis (dim 2); got {t_in!r}. Mark only the "
            "batch, height or width axes as dynamic."
        )
    indices = reference.source_frame_indices(t_in, scale_factor, double_rule=double_rule).tolist()
    if len(indices) == 1:
        return indices[0], indices[0] + 1, 1
    step = indices[1] - indices[0]
    if step > 0 and all(b - a == step for a, b in zip(indices[:-1], indices[1:], strict=True)):
        return indices[0], indices[-1] + 1, step
    return indices


# --- TorchScript exporter (dynamo=False) -------------------------------------------------------------


def _is_none(value) -> bool:
    return value is None or value.node().mustBeNone()


def _constant_int64(g, values: list[int]):
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


def _time_length(value) -> int | None:
    sizes = value.type().varyingSizes() if isinstance(value.type(), torch._C.TensorType) else None
    return sizes[2] if sizes and len(sizes) == 5 else None


def _legacy_double_rule(value) -> bool:
    """Whether the eager op on the traced input picks frames by the double rule: the TorchScript
    exporter traces real tensors, so the value's type records their dtype and device. A type without
    a device (none seen: tracing records one) is taken as the CPU, where float64 models are exported."""
    value_type = value.type()
    if not isinstance(value_type, torch._C.TensorType):
        return False
    return reference.double_index_rule(value_type.dtype(), value_type.device())


def _legacy_resample(g, x, scale_factor: float):
    t_in = _time_length(x)
    selection = _frame_selection(t_in, scale_factor, _legacy_double_rule(x))
    if isinstance(selection, tuple):
        start, end, step = selection
        return g.op(
            "Slice",
            x,
            _constant_int64(g, [start]),
            _constant_int64(g, [end]),
            _constant_int64(g, [2]),
            _constant_int64(g, [step]),
        )
    return g.op("Gather", x, _constant_int64(g, selection), axis_i=2)


@parse_args("v", "v", "v", "i", "i", "v", "v", "b")
def _legacy_lateral_concat(g, x_slow, x_fast, weight, stride, padding, scale, shift, relu):
    lateral = g.op("Conv", x_fast, weight, strides_i=[stride, 1, 1], pads_i=[padding, 0, 0, padding, 0, 0])
    channel_shape = _constant_int64(g, [1, -1, 1, 1, 1])
    if not _is_none(scale):
        lateral = g.op("Mul", lateral, g.op("Reshape", scale, channel_shape))
    if not _is_none(shift):
        lateral = g.op("Add", lateral, g.op("Reshape", shift, channel_shape))
    if relu:
        lateral = g.op("Relu", lateral)
    return g.op("Concat", x_slow, lateral, axis_i=1)


@parse_args("v", "f")
def _legacy_temporal_resample(g, x, scale_factor):
    return _legacy_resample(g, x, scale_factor)


@parse_args("v", "f", "f")
def _legacy_pathway_split(g, x, slow_scale, fast_scale):
    return _legacy_resample(g, x, slow_scale), _legacy_resample(g, x, fast_scale)


# --- dynamo exporter (the default) ----------------------------------------------------------------


def _dynamo_functions() -> dict:
    """The trace-only onnxscript translations, by op name (onnxscript is imported only here: it takes
    over a second to import, too much to pay on every ``import slowfast_fast``)."""
    from onnxscript import BFLOAT16, DOUBLE, FLOAT, FLOAT16
    from onnxscript import ir as onnx_ir
    from onnxscript.onnx_opset import opset18 as op

    # The exporter matches inputs against the annotated types (evaluated here, not postponed: this
    # module has no `from __future__ import annotations`), so these ops take floating tensors.
    TFloat = TypeVar("TFloat", bound=Union[FLOAT16, FLOAT, DOUBLE, BFLOAT16])  # noqa: UP007

    def ints(values: list[int]):
        return op.Constant(value=onnx_ir.tensor(values, dtype=onnx_ir.DataType.INT64))

    def resample(x, scale_factor: float):
        t_in = x.shape[2] if x.shape is not None and len(x.shape) == 5 else None
        # The ONNX value has the dtype; the device is the traced FX value's (see _dynamo_device).
        double_rule = x.dtype == onnx_ir.DataType.DOUBLE and reference.double_index_rule(
            torch.float64, _dynamo_device(x)
        )
        selection = _frame_selection(t_in, scale_factor, double_rule)
        if isinstance(selection, tuple):
            start, end, step = selection
            return op.Slice(x, ints([start]), ints([end]), ints([2]), ints([step]))
        return op.Gather(x, ints(selection), axis=2)

    def lateral_concat(
        x_slow: TFloat,
        x_fast: TFloat,
        weight: TFloat,
        stride: int,
        padding: int,
        scale: Optional[TFloat] = None,  # noqa: UP045
        shift: Optional[TFloat] = None,  # noqa: UP045
        relu: bool = False,
    ) -> TFloat:
        lateral = op.Conv(x_fast, weight, strides=[stride, 1, 1], pads=[padding, 0, 0, padding, 0, 0])
        channel_shape = ints([1, -1, 1, 1, 1])
        if scale is not None:
            lateral = op.Mul(lateral, op.Reshape(scale, channel_shape))
        if shift is not None:
            lateral = op.Add(lateral, op.Reshape(shift, channel_shape))
        if relu:
            lateral = op.Relu(lateral)
        return op.Concat(x_slow, lateral, axis=1)

    def temporal_resample(x: TFloat, scale_factor: float) -> TFloat:
        return resample(x, scale_factor)

    def pathway_split(x: TFloat, slow_scale: float, fast_scale: float) -> tuple[TFloat, TFloat]:
        return resample(x, slow_scale), resample(x, fast_scale)

    return {
        "lateral_concat": lateral_concat,
        "temporal_resample": temporal_resample,
        "pathway_split": pathway_split,
    }


def _dynamo_device(value) -> torch.device | None:
    """The device of the traced tensor behind an ONNX value of the dynamo exporter, or None (read as
    the CPU by ``double_index_rule``: where float64 models are exported) where it cannot be found.

    ONNX values carry no device; the exporter records on each graph input, and on each ONNX node it
    emits, the FX node it came from (``meta["node"]``), whose ``meta["val"]`` is the fake tensor traced
    on the example inputs' device. Private metadata: if it moves, the CPU is assumed.
    """
    fx_node, index = value.meta.get("node"), 0
    producer = value.producer()
    if fx_node is None and producer is not None:
        fx_node, index = producer.meta.get("node"), value.index() or 0
    traced = getattr(fx_node, "meta", {}).get("val")
    if isinstance(traced, (tuple, list)):  # a multi-output op: its outputs share a device
        tensors = [t for t in traced if isinstance(t, torch.Tensor)]
        preferred = traced[index] if index < len(traced) else None
        traced = preferred if isinstance(preferred, torch.Tensor) else (tensors[0] if tensors else None)
    return traced.device if isinstance(traced, torch.Tensor) else None


def _registered_namespaces() -> list[str]:
    return [ns for ns in _NAMESPACES if hasattr(getattr(torch.ops, ns), "lateral_concat")]


def translation_table() -> dict:
    """``{op overload: onnxscript function}`` for every public op of every loaded namespace: what
    ``torch.onnx.export(..., custom_translation_table=...)`` takes (needed only if the automatic
    registration for the dynamo exporter is unavailable; see the module docstring)."""
    functions = _dynamo_functions()
    return {
        getattr(getattr(torch.ops, ns), name).default: fn
        for ns in _registered_namespaces()
        for name, fn in functions.items()
    }


# The exporter imports its ATen translations (this package) when it first builds its registry, at
# export time; the registration function lives next to it.
_TORCHLIB_OPS = "torch.onnx._internal.exporter._torchlib.ops"
_TORCHLIB_REGISTRY = "torch.onnx._internal.exporter._torchlib._torchlib_registry"


def _register_dynamo() -> None:
    onnx_impl = sys.modules[_TORCHLIB_REGISTRY].onnx_impl
    for target, fn in translation_table().items():
        onnx_impl(target, trace_only=True)(fn)


class _RegisterWhenTorchlibLoads(importlib.abc.MetaPathFinder):
    """Registers the dynamo translations right after the exporter imports its own ATen translations,
    so that ``import slowfast_fast`` does not import the exporter and onnxscript (over a second)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TORCHLIB_OPS:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_dynamo()

        spec.loader.exec_module = exec_then_register
        return spec


def _install_dynamo_registration() -> None:
    if _TORCHLIB_OPS in sys.modules:
        _register_dynamo()
    elif importlib.util.find_spec("onnxscript") is not None:
        sys.meta_path.insert(0, _RegisterWhenTorchlibLoads())


def _register_legacy() -> None:
    symbolics = {
        "lateral_concat": _legacy_lateral_concat,
        "temporal_resample": _legacy_temporal_resample,
        "pathway_split": _legacy_pathway_split,
    }
    for ns in _registered_namespaces():
        for name, fn in symbolics.items():
            torch.onnx.register_custom_op_symbolic(f"{ns}::{name}", fn, LEGACY_MIN_OPSET)


_register_legacy()
_install_dynamo_registration()
