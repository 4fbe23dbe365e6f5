"""What the kernel benchmarks time: one :class:`Implementation` per backend or peer.

Built in: ``reference`` (eager PyTorch, mmaction2's computation), ``compiled_reference``
(``torch.compile`` of the reference, a fresh compilation per case after a dynamo reset; a case it
did not compile raises, so its row is an ERROR) and every concrete backend of
:mod:`slowfast_fast.backend` (``cpu``, ``cuda``, ``triton``) called through the public ops.
:func:`register` adds another, e.g. an out-of-tree kernel to compare, or a deliberately wrong one
to prove the correctness gate (tests/test_bench.py does that).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from slowfast_fast import backend as _backend
from slowfast_fast import ops, reference

# The kernel ops, and the signature each implementation provides for them:
#   lateral_concat(x_slow, x_fast, weight, stride, padding) -> out (differentiable)
#   temporal_resample(x, scale_factor) -> out
OPS = ("lateral_concat", "temporal_resample")


@dataclass(frozen=True)
class Implementation:
    """``make(op)`` returns the callable to time for one case; it is called once per case, so an
    implementation that specializes on shapes (torch.compile) starts fresh for each."""

    name: str
    make: Callable[[str], Callable]


_REFERENCE_FNS = {
    "lateral_concat": reference.lateral_concat,
    "temporal_resample": reference.temporal_resample,
}
_registered: dict[str, Implementation] = {}


def _backend_fn(name: str, op: str) -> Callable:
    return functools.partial(getattr(ops, op), backend=name)


class _MustCompile:
    """A torch.compile'd function that raises if its first call compiled no graph, i.e. dynamo ran
    it eagerly (a recompile limit hit, a skipped frame): such a row would time eager code under the
    compiled name."""

    def __init__(self, compiled: Callable, what: str) -> None:
        self._compiled, self._what, self._checked = compiled, what, False

    def __call__(self, *args):
        if self._checked:
            return self._compiled(*args)
        from torch._dynamo.utils import counters

        before = counters["stats"]["unique_graphs"]
        out = self._compiled(*args)
        if counters["stats"]["unique_graphs"] == before:
            raise RuntimeError(f"torch.compile of {self._what} compiled no graph: it ran eagerly, not timed")
        self._checked = True
        return out


def _compiled_reference(op: str) -> Callable:
    # Dynamo keeps its compiled code, and counts recompiles against its limit (8), per code object:
    # every case compiles the same reference function, so without a reset the ninth shape would
    # silently run eager. A reset per case also keeps earlier cases' guards out of this one's calls.
    torch.compiler.reset()
    return _MustCompile(torch.compile(_REFERENCE_FNS[op], dynamic=False), f"reference.{op}")


def register(name: str, **fns: Callable) -> None:
    """Add implementation ``name`` with one function per op of :data:`OPS` (all of them); it is
    benchmarked when ``--backends`` names it."""
    if set(fns) != set(OPS):
        raise ValueError(f"register({name!r}) needs exactly the ops {OPS}, got {sorted(fns)}")
    _registered[name] = Implementation(name, fns.__getitem__)


def unregister(name: str) -> None:
    _registered.pop(name, None)


def concrete_backends(device: torch.device) -> list[str]:
    """The compiled/Triton backends worth timing on ``device``. Triton on a CPU tensor is Triton's
    interpreter (TRITON_INTERPRET=1): correct but orders of magnitude slow, so never timed."""
    return [
        b
        for b in _backend.available_backends(device)
        if b != "reference" and not (b == "triton" and device.type == "cpu")
    ]


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why ``name`` cannot be timed on ``device``, or None when it can."""
    if name in ("reference", "compiled_reference") or name in _registered:
        return None
    if name not in _backend.BACKENDS or name == "auto":
        return f"unknown backend {name!r}"
    if name == "triton" and device.type == "cpu":
        return "triton on CPU is Triton's interpreter: not timed"
    ok, why = _backend.usable(name, device)
    return None if ok else why


def get(name: str) -> Implementation:
    """The implementation called ``name`` (a backend, a peer or a registered one)."""
    if name == "reference":
        return Implementation(name, _REFERENCE_FNS.__getitem__)
    if name == "compiled_reference":
        return Implementation(name, _compiled_reference)
    if name in _registered:
        return _registered[name]
    return Implementation(name, functools.partial(_backend_fn, name))
