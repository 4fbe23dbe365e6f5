"""The one timing helper every benchmark uses, and the two machine numbers of the performance model
(:mod:`perf_model`): the copy bandwidth that defines the roofline and the cost of one launch.

CUDA: ``triton.testing.do_bench`` (CUDA events, L2 flushed between calls, quantiles of the rep
times). CPU: a ``perf_counter`` loop that times every call on its own after a warmup, with PyTorch's
default thread count, the contenders of a case interleaved. Both give the median, the 20th and
80th percentiles and the minimum in milliseconds.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Budget:
    """How long to spend on one measurement: ``warmup_ms`` then about ``rep_ms`` of timed calls per
    function, on CPU never fewer than ``min_reps`` calls (slow calls) nor more than ``max_reps``."""

    warmup_ms: float
    rep_ms: float
    min_reps: int = 5
    max_reps: int = 1000


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    min_ms: float  # the least disturbed call: the best estimate when other processes interfere
    reps: int | None  # None where do_bench chose the count


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile, as numpy's default computes it."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def time_cpu(
    fns: dict[str, Callable[[], object]],
    budget: Budget,
    *,
    prepare: dict[str, Callable[[], object]] | None = None,
    shuffle: bool | None = None,
) -> dict[str, Timing]:
    """Warm every function up (``warmup_ms`` each; none when 0, for calls so slow that the caller's
    first call is warmup enough), then time them in interleaved rounds (each call timed on its own,
    the order rotated every round), so that load from other processes, which varies over seconds,
    falls on every contender alike instead of on whichever ran during a busy spell.

    ``prepare[name]``, where given, runs before each call of ``fns[name]``, outside the timer.
    ``shuffle`` draws a new random order every round instead of rotating a fixed one: with more than
    two contenders a fixed cyclic order always runs each one right after the same other one (the one
    after a contender that writes extra tensors then always finds cold caches). By default (None) it
    shuffles exactly when there are more than two contenders; two alternate either way."""
    names = list(fns)
    if shuffle is None:
        shuffle = len(names) > 2
    prepare = prepare or {}

    def before(name: str) -> None:
        if name in prepare:
            prepare[name]()

    for name in names:
        start = time.perf_counter()
        while (time.perf_counter() - start) * 1e3 < budget.warmup_ms:
            before(name)
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(0)
    start = time.perf_counter()
    rounds = 0
    while rounds < budget.max_reps and (
        rounds < budget.min_reps or (time.perf_counter() - start) * 1e3 < budget.rep_ms * len(names)
    ):
        if shuffle:
            order = rng.sample(names, len(names))
        else:
            order = [names[(rounds + i) % len(names)] for i in range(len(names))]
        for name in order:
            before(name)
            t0 = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
    out = {}
    for name, values in times.items():
        values.sort()
        out[name] = Timing(
            statistics.median(values), _quantile(values, 0.2), _quantile(values, 0.8), values[0], rounds
        )
    return out


def _time_cuda(fns: dict[str, Callable[[], object]], budget: Budget) -> dict[str, Timing]:
    """One do_bench per function: the GPU is not shared, so there is nothing to interleave."""
    from triton.testing import do_bench

    out = {}
    for name, fn in fns.items():
        median, p20, p80, fastest = do_bench(
            fn, warmup=budget.warmup_ms, rep=budget.rep_ms, quantiles=[0.5, 0.2, 0.8, 0.0]
        )
        out[name] = Timing(median, p20, p80, fastest, None)
    return out


def measure_all(
    fns: dict[str, Callable[[], object]], device: torch.device, budget: Budget
) -> dict[str, Timing]:
    """Time each ``fns[name]()`` on ``device``; each must have run once already (compilation,
    autotuning). The contenders of one case are timed together so that they are comparable."""
    if device.type == "cuda":
        return _time_cuda(fns, budget)
    return time_cpu(fns, budget)


def measure(fn: Callable[[], object], device: torch.device, budget: Budget) -> Timing:
    """Time one function (see :func:`measure_all`)."""
    return measure_all({"fn": fn}, device, budget)["fn"]


def copy_bandwidth(device: torch.device, nbytes: int, budget: Budget) -> float:
    """Bytes per second of a large tensor copy (bytes read plus bytes written), the roofline's
    denominator: the fastest rate at which this device moves data in this run."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    timing = measure(lambda: dst.copy_(src), device, budget)
    return 2 * src.numel() * src.element_size() / (timing.median_ms * 1e-3)


# Size of the tensor whose copy measures the per-launch cost: small enough that moving it is
# negligible next to launching the copy (one kernel on CUDA, one dispatch on CPU).
LAUNCH_PROBE_BYTES = 4096


def launch_cost(device: torch.device, budget: Budget) -> float:
    """Milliseconds of one call that moves (almost) nothing: the median time of a 4 KiB tensor copy,
    the fixed per-launch cost of the performance model."""
    src = torch.rand(LAUNCH_PROBE_BYTES // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return measure(lambda: dst.copy_(src), device, budget).median_ms
