"""Issue 14's CPU measurement: lateral_concat at the four R50 fusion points, every CPU forward path
against the reference, interleaved in one process, and the geomean speedups the issue asks for.

    python benchmarks/cpu_lateral_paths.py [--configs 4x16] [--dtypes fp32,bf16,fp16] [--threads 1,2]

Rows per (config, dtype, layout, threads, fusion point), forward: ``reference`` (mmaction2's
computation), ``auto`` (the public op as users call it: its Python rule may send a call to the
reference), ``cpu`` (the compiled op with its own path rule), and the op forced onto each of its
paths with SLOWFAST_FAST_CPU_LATERAL (``simd``, ``blas``; see
csrc/cpu/lateral_concat.cpp; the variable is set before each timed call, outside the timer) so the
rules can be checked against what each path measures here; forward+backward: ``reference`` and
``auto`` under autograd (grads of x_slow, x_fast, weight, for an upstream gradient made before
timing).
Sizes are the bench's ``cpu`` preset (batch 2, 32-frame 56x56 clip: fusion points 14/14/7/4), or
with ``--size full`` batch 2 of a 32-frame 224x224 clip (56/56/28/14).
Each call is timed on its own (medians of interleaved rounds, :mod:`slowfast_fast.bench.timing`).
The 1-minute load average is printed before and after: timings from a busy machine are not results.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

import torch

from slowfast_fast import backend, ops, reference
from slowfast_fast.bench import cases, load, timing

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PATHS = ("simd", "blas")
REP_MS = 300  # per contender and case; --rep-ms changes it


def _unforced() -> None:
    os.environ.pop("SLOWFAST_FAST_CPU_LATERAL", None)


def _inputs(shape: cases.LateralShape, dtype: torch.dtype, layout: str, grad: bool):
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last_3d if layout == "channels_last_3d" else torch.contiguous_format
    n, s = shape.batch, shape.spatial

    def rand(*size, scale=1.0):
        return (torch.randn(*size, generator=gen) * scale).to(dtype)

    x_slow = rand(n, shape.c_slow, shape.t_slow, s, s).contiguous(memory_format=fmt)
    x_fast = rand(n, shape.c_fast, shape.t_fast, s, s).contiguous(memory_format=fmt)
    weight = rand(shape.c_lateral, shape.c_fast, shape.kernel, 1, 1, scale=0.1)
    for t in (x_slow, x_fast, weight):
        t.requires_grad_(grad)
    return x_slow, x_fast, weight, shape.stride, shape.padding


def _force(path: str):
    def prepare():
        os.environ["SLOWFAST_FAST_CPU_LATERAL"] = path

    return prepare


def _forward(args):
    ours = lambda: ops.lateral_concat(*args, backend="cpu")  # noqa: E731
    fns = {
        "reference": (_unforced, lambda: reference.lateral_concat(*args)),
        "auto": (_unforced, lambda: ops.lateral_concat(*args)),
        "cpu": (_unforced, ours),
    }
    fns.update({path: (_force(path), ours) for path in PATHS})
    return fns


def _training(args):
    # The upstream gradient is made once, outside the timer (a random one in the output's memory
    # format): making it (32 MB at layer1 of a 224x224 clip, page faults included) is no part of
    # either contender's cost and was a fixed few ms added to both.
    with torch.no_grad():
        grad_out = torch.randn_like(reference.lateral_concat(*args))

    def step(fn):
        def run():
            out = fn(*args)
            torch.autograd.grad(out, args[:3], grad_outputs=grad_out)

        return run

    return {
        "reference": (_unforced, step(reference.lateral_concat)),
        "auto": (_unforced, step(ops.lateral_concat)),
    }


def _reference_crashes(shape: cases.LateralShape, dtype: torch.dtype) -> bool:
    """The cases where the reference's own bf16 conv3d was seen to give NaN or abort the process (see
    ``backend.reference_bf16_conv_unsafe``: k < stride, every R50 4x16 lateral), which ``auto`` keeps
    on the kernels: nothing to compare there."""
    return dtype is torch.bfloat16 and backend.reference_bf16_conv_unsafe(shape.kernel, shape.stride)


def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="4x16", help="comma-separated: 4x16, 8x8")
    parser.add_argument("--dtypes", default="fp32,bf16,fp16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    parser.add_argument("--rep-ms", type=float, default=REP_MS, help="timing time per contender and case")
    parser.add_argument(
        "--size",
        default="cpu",
        choices=("cpu", "full"),
        help="cpu: the bench's cpu preset (batch 2, 56x56 clip: fusion points 14/14/7/4); "
        "full: batch 2 of a 224x224 clip (fusion points 56/56/28/14, as R50 runs)",
    )
    args = parser.parse_args()
    budget = timing.Budget(warmup_ms=50, rep_ms=args.rep_ms, min_reps=15)
    print(f"load average at start: {load.load_average()}", flush=True)
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for config in args.configs.split(","):
            size = cases.SIZES["cpu"]
            if args.size == "full":
                size = dataclasses.replace(cases.SIZES["gpu"], kernel_batch=2)
            shapes = cases.lateral_shapes(size, cases.CONFIGS[config])
            for dtype_name in args.dtypes.split(","):
                dtype = DTYPES[dtype_name]
                for layout in ("ncdhw", "channels_last_3d"):
                    speedups: dict[str, list[float]] = {}
                    for shape in shapes:
                        if _reference_crashes(shape, dtype):
                            print(
                                f"{threads}T {config} {dtype_name} {layout} {shape.point}: skipped, the "
                                "reference's bf16 conv3d gives NaN or crashes here "
                                "(backend.reference_bf16_conv_unsafe)",
                                flush=True,
                            )
                            continue
                        for kind, make in (("fwd", _forward), ("fwd+bwd", _training)):
                            fns = make(_inputs(shape, dtype, layout, grad=kind != "fwd"))
                            t = timing.time_cpu(
                                {name: fn for name, (_, fn) in fns.items()},
                                budget,
                                prepare={name: prep for name, (prep, _) in fns.items()},
                                shuffle=True,
                            )
                            base = t["reference"].median_ms
                            cells = []
                            for name, tm in t.items():
                                speedup = base / tm.median_ms
                                speedups.setdefault(f"{kind} {name}", []).append(speedup)
                                cells.append(f"{name} {tm.median_ms:.3f} ms ({speedup:.2f}x)")
                            print(
                                f"{threads}T {config} {dtype_name} {layout} {shape.point} {kind}: "
                                + ", ".join(cells),
                                flush=True,
                            )
                    summary = ", ".join(f"{k} {_geomean(v):.2f}x" for k, v in speedups.items())
                    print(f"== {threads}T {config} {dtype_name} {layout} geomean: {summary}", flush=True)
    print(f"load average at end: {load.load_average()}", flush=True)


if __name__ == "__main__":
    main()
