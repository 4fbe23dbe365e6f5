"""Triton kernels of the fused ops (``auto``'s backend for CUDA tensors when ``_C`` lacks the CUDA kernels).

Each function allocates its outputs and launches kernels; the positional signatures match the op
schemas of ``slowfast_fast.ops._schemas`` (``SCHEMAS`` and the Triton-only ``TRITON_SCHEMAS``), under
which ``slowfast_fast.ops._triton_ops`` registers them. Each checks its inputs as the public ops do (the
shapes once per cached launch plan, the devices on every call), so a direct call of the namespace cannot
launch a kernel on inputs that do not fit. On CPU they run only
under ``TRITON_INTERPRET=1`` (tests without a GPU).
"""

from slowfast_fast.triton.lateral_concat import lateral_concat
from slowfast_fast.triton.lateral_concat_backward import (
    lateral_concat_backward,
    lateral_concat_grad_input,
    lateral_concat_grad_weight,
)
from slowfast_fast.triton.resample import pathway_split, temporal_resample, temporal_resample_backward

__all__ = [
    "lateral_concat",
    "lateral_concat_backward",
    "lateral_concat_grad_input",
    "lateral_concat_grad_weight",
    "temporal_resample",
    "temporal_resample_backward",
    "pathway_split",
]
