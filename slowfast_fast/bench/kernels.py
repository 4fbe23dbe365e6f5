"""Kernel microbenchmarks: lateral_concat forward and backward at the R50 fusion points, and
nearest temporal resampling of the input clip.

Each case builds seeded random inputs once, computes a float64 truth with the reference, then for
every implementation: runs it, passes it through the correctness gate, and times it only if it
passed. The reference is always measured first, so every row's speedup is over the eager
reference timed in the same run on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from slowfast_fast.bench import cases, correctness, perf_model, report, timing
from slowfast_fast.bench.implementations import Implementation

KERNEL_OPS = ("lateral_concat", "lateral_concat_backward", "resample")

Thunk = Callable[[], tuple[torch.Tensor, ...]]


@dataclass
class KernelCase:
    """One benchmarked problem. ``make_inputs`` builds the inputs; ``prepare(fn, inputs)`` returns
    the thunk that is timed (and whose outputs are checked) for implementation function ``fn``."""

    op: str
    impl_op: str  # which op of an Implementation it calls
    config: str
    name: str
    shape: str
    dtype: str
    layout: str
    bytes: int
    make_inputs: Callable[[torch.device], list[torch.Tensor]]
    prepare: Callable[[Callable, list[torch.Tensor]], Thunk]
    # The memory format every output must have (the ops keep their input's: x_slow's for
    # lateral_concat, x's for resampling), or None where the contract sets none (the gradients).
    out_format: torch.memory_format | None = None


def _randn(shape, dtype, layout, device, requires_grad=False) -> torch.Tensor:
    t = torch.randn(shape, device=device, dtype=torch.float32).to(dtype)
    if len(shape) == 5:
        t = t.contiguous(memory_format=cases.LAYOUTS[layout])
    return t.requires_grad_(requires_grad)


def _lateral_inputs(shape: cases.LateralShape, dtype, layout, grad: bool):
    n, s = shape.batch, shape.spatial

    def make(device):
        torch.manual_seed(0)
        x_slow = _randn((n, shape.c_slow, shape.t_slow, s, s), dtype, layout, device, grad)
        x_fast = _randn((n, shape.c_fast, shape.t_fast, s, s), dtype, layout, device, grad)
        # Kaiming-like scale keeps the lateral's outputs O(1) like x_slow's.
        weight = _randn((shape.c_lateral, shape.c_fast, shape.kernel, 1, 1), torch.float32, layout, device)
        weight = (weight / (shape.c_fast * shape.kernel) ** 0.5).to(dtype).requires_grad_(grad)
        tensors = [x_slow, x_fast, weight]
        if grad:
            out_shape = (n, shape.c_slow + shape.c_lateral, shape.t_slow, s, s)
            tensors.append(_randn(out_shape, dtype, layout, device))
        return tensors

    return make


def _lateral_forward(shape: cases.LateralShape):
    def prepare(fn, inputs):
        x_slow, x_fast, weight = inputs
        return lambda: (fn(x_slow, x_fast, weight, shape.stride, shape.padding),)

    return prepare


def _lateral_backward(shape: cases.LateralShape):
    def prepare(fn, inputs):
        x_slow, x_fast, weight, grad_out = inputs
        out = fn(x_slow, x_fast, weight, shape.stride, shape.padding)
        wrt = (x_slow, x_fast, weight)
        return lambda: torch.autograd.grad(out, wrt, grad_out, retain_graph=True)

    return prepare


def _resample(shape: cases.ResampleShape, dtype, layout):
    def make(device):
        torch.manual_seed(0)
        return [_randn((shape.batch, 3, shape.frames, shape.spatial, shape.spatial), dtype, layout, device)]

    def prepare(fn, inputs):
        (x,) = inputs
        return lambda: (fn(x, shape.scale_factor),)

    return make, prepare


def build_cases(
    ops: list[str], size: cases.SizePreset, configs: list[str], dtypes: list[str], layouts: list[str]
) -> list[KernelCase]:
    """Every case of ``ops`` (names from :data:`KERNEL_OPS`) at ``size``."""
    out = []
    for op in ops:
        for dtype_name in dtypes:
            dtype = cases.DTYPES[dtype_name]
            itemsize = torch.empty((), dtype=dtype).element_size()
            for layout in layouts:
                if op == "resample":
                    for shape in cases.resample_shapes(size):
                        make, prepare = _resample(shape, dtype, layout)
                        out.append(
                            KernelCase(
                                op,
                                "temporal_resample",
                                "",
                                shape.name,
                                shape.describe(),
                                dtype_name,
                                layout,
                                shape.bytes(itemsize),
                                make,
                                prepare,
                                cases.LAYOUTS[layout],
                            )
                        )
                    continue
                backward = op == "lateral_concat_backward"
                for config in configs:
                    for shape in cases.lateral_shapes(size, cases.CONFIGS[config]):
                        nbytes = shape.backward_bytes(itemsize) if backward else shape.forward_bytes(itemsize)
                        prepare = _lateral_backward(shape) if backward else _lateral_forward(shape)
                        out.append(
                            KernelCase(
                                op,
                                "lateral_concat",
                                config,
                                shape.point,
                                shape.describe(),
                                dtype_name,
                                layout,
                                nbytes,
                                _lateral_inputs(shape, dtype, layout, backward),
                                prepare,
                                None if backward else cases.LAYOUTS[layout],
                            )
                        )
    return out


def _as_float64(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().to(torch.float64).requires_grad_(t.requires_grad) for t in inputs]


def _row(
    case: KernelCase, device: torch.device, backend: str, roofline_ms: float, predicted_ms: float
) -> dict:
    return report.new_row(
        suite="kernels", op=case.op, config=case.config, case=case.name, shape=case.shape, dtype=case.dtype,
        layout=case.layout, device=str(device), backend=backend, bytes=case.bytes, roofline_ms=roofline_ms,
        predicted_ms=predicted_ms,
    )  # fmt: skip


def run_case(
    case: KernelCase,
    impls: list[Implementation],
    device: torch.device,
    copy_bandwidth: float,
    launch_ms: float,
    budget: timing.Budget,
) -> list[dict]:
    """One row per implementation; ``impls[0]`` must be the reference (the speedup's base).
    ``copy_bandwidth`` (bytes/s) and ``launch_ms`` are the run's measured machine numbers: every row
    gets the roofline (bytes / bandwidth) and :func:`perf_model.predicted_ms`, and a timed row
    measured/predicted.

    Every implementation runs once and goes through the correctness gate; those that pass are
    then timed together (see :func:`timing.measure_all`).
    """
    inputs = case.make_inputs(device)
    reference_fn = impls[0].make(case.impl_op)
    truth = tuple(t.detach() for t in case.prepare(reference_fn, _as_float64(inputs))())
    reference_out = tuple(t.detach() for t in case.prepare(reference_fn, inputs)())
    roofline_ms = case.bytes / copy_bandwidth * 1e3 if case.bytes else 0.0
    predicted_ms = perf_model.predicted_ms(case.bytes, copy_bandwidth, launch_ms)
    rows, thunks = {}, {}
    for impl in impls:
        row = rows[impl.name] = _row(case, device, impl.name, roofline_ms, predicted_ms)
        try:
            thunk = case.prepare(reference_fn if impl is impls[0] else impl.make(case.impl_op), inputs)
            outputs = tuple(t.detach() for t in thunk())
            verdict = correctness.check(
                outputs, reference_out, truth, correctness.tf32_allowed(device), case.out_format
            )
            del outputs
        except Exception as exc:  # one failing backend must not end the run: report it
            row["status"], row["note"] = "ERROR", report.error_note(exc)
            continue
        row["max_err"], row["tol"] = verdict.max_err, verdict.tol
        if verdict.ok:
            thunks[impl.name] = thunk
        else:
            row["status"] = "WRONG"
            row["note"] = f"{verdict.describe()}; not timed"
    del truth, reference_out
    try:
        timings = timing.measure_all(thunks, device, budget)
    except Exception as exc:
        for name in thunks:
            rows[name]["status"], rows[name]["note"] = "ERROR", report.error_note(exc)
        return list(rows.values())
    reference_ms = timings[impls[0].name].median_ms if impls[0].name in timings else None
    for name, result in timings.items():
        row = rows[name]
        row["median_ms"], row["p20_ms"], row["p80_ms"] = result.median_ms, result.p20_ms, result.p80_ms
        row["min_ms"] = result.min_ms
        if case.bytes:
            row["gbps"] = case.bytes / (result.median_ms * 1e-3) / 1e9
            row["pct_roofline"] = 100 * roofline_ms / result.median_ms
        row["measured_over_predicted"] = result.median_ms / predicted_ms
        if reference_ms is not None:
            row["speedup"] = reference_ms / result.median_ms
    return list(rows.values())
