"""The correctness gate: a backend is timed only if it computes what the reference computes.

Criterion (flash-attention's): against a truth computed in float64 from the same inputs, a
backend's error may be at most twice the reference's own error at the benchmarked precision, plus a
floor of a few units in the last place of that precision (relative to the output's magnitude) so
that exact ops (copies) and different-but-valid summation orders both pass. The reference itself
uses TF32 for fp32 convolutions on CUDA when cuDNN's conv precision allows it, and the
backends follow the same setting, so its error is the fair yardstick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from slowfast_fast._precision import conv_allows_tf32

# Floor, relative to max|truth|. float64 and float32: ~9000 and ~17 units of rounding, far below a
# real bug (a wrong frame, channel or tap is an O(1) relative error). bf16 and fp16: one unit of
# rounding u (bf16 2^-8 = 3.9e-3, fp16 2^-11 = 4.9e-4), rounded up by 2.4% for the fp32 sums' own
# error. Why one unit is enough: a contender that accumulates in fp32 and rounds once to the output
# dtype is off the truth by at most half an ulp of its largest output, u * 2^e <= u * max|truth| for
# a top binade [2^e, 2^(e+1)), so it passes whatever the reference's own error is; the 2x term (the
# reference's own rounding, half an ulp or more) adds room for contenders that round as often as the
# reference does. Why no more: the 16-bit tolerance is then 2-3.5 units (0.8-1.3% in bf16); the
# former 8 units (bf16 3e-2, fp16 4e-3) passed a contender 1% off in bf16, 0.3% off in fp16. In bf16
# 1% is only 1.3-2.6 ulps of the largest output, so an output 1% off is mostly rejected, and 2.5% off
# always where the reference rounds once.
# The backbone gate uses the same floors: its reference's 16-bit error after ~50 layers is 2-3.5
# units, so there the 2x term dominates and the floor adds one unit.
_FLOOR = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 4e-3, torch.float16: 5e-4}
# fp32 convolutions on CUDA may round their inputs to TF32 (10-bit mantissa) when cuDNN's flag
# allows it, and cuDNN picks per shape whether its algorithm does, so the reference's error is no
# yardstick there: allow ~10 TF32 units.
_FLOOR_TF32 = 5e-3


def tf32_allowed(device: torch.device) -> bool:
    """Whether fp32 convolutions on ``device`` may run in TF32 (the backends follow cuDNN's flag)."""
    return device.type == "cuda" and conv_allows_tf32()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    max_err: float  # the worst output's max |candidate - truth|
    tol: float  # that output's tolerance
    reason: str = ""  # why it failed, when not by its error: shape, dtype or memory format

    def describe(self) -> str:
        """The note of a failed row."""
        return self.reason or f"max error {self.max_err:.3g} > tolerance {self.tol:.3g}"


_FORMAT_NAMES = {torch.contiguous_format: "contiguous", torch.channels_last_3d: "channels_last_3d"}


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def check(
    candidate: Sequence[torch.Tensor],
    reference: Sequence[torch.Tensor],
    truth: Sequence[torch.Tensor],
    tf32: bool = False,
    memory_format: torch.memory_format | None = None,
) -> Verdict:
    """Compare each output of ``candidate`` with ``truth``, allowing 2x the reference's error
    (``tf32``: fp32 outputs may carry TF32 rounding). Shape and dtype must match; with
    ``memory_format`` every output must also be dense in that format (the ops' contract: their
    output keeps their input's memory format), whatever the reference returned."""
    worst = Verdict(True, 0.0, 0.0)
    worst_ratio = -1.0
    for i, (cand, ref, true) in enumerate(zip(candidate, reference, truth, strict=True)):
        if cand.shape != true.shape or cand.dtype != ref.dtype:
            why = f"output {i}: {cand.dtype} {tuple(cand.shape)}, expected {ref.dtype} {tuple(true.shape)}"
            return Verdict(False, float("inf"), 0.0, why)
        if (
            memory_format is not None
            and cand.dim() == 5
            and not cand.is_contiguous(memory_format=memory_format)
        ):
            name = _FORMAT_NAMES.get(memory_format, str(memory_format))
            why = f"output {i} is not {name} (strides {cand.stride()}), as its input is"
            return Verdict(False, float("inf"), 0.0, why)
        scale = true.abs().max().item() if true.numel() else 0.0
        floor = _FLOOR_TF32 if tf32 and ref.dtype == torch.float32 else _FLOOR[ref.dtype]
        ref_err = _max_abs(ref, true)
        if not math.isfinite(ref_err):
            # A non-finite reference (PyTorch's bf16 conv3d returns NaN at some shapes on some CPUs) is
            # no yardstick: a NaN tolerance failed every contender, an infinite one passed any. Its
            # error is taken as rounding the truth once to its dtype; the reference's row fails.
            ref_err = _max_abs(true.to(ref.dtype), true)
        tol = 2 * ref_err + floor * scale
        err = _max_abs(cand, true)
        if not err <= tol:  # also catches NaN
            return Verdict(False, err, tol)
        ratio = err / tol if tol else 0.0
        if ratio > worst_ratio:
            worst, worst_ratio = Verdict(True, err, tol), ratio
    return worst
