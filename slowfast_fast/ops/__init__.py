"""Public API of the fused ops. Each call validates its inputs, picks a backend
(:mod:`slowfast_fast.backend`) and runs a torch.library custom op (or the pure-PyTorch reference)."""

from slowfast_fast import _extension
from slowfast_fast.ops import _onnx, _registration, _triton_ops  # noqa: F401  (_onnx registers on import)
from slowfast_fast.ops.lateral_concat import lateral_concat
from slowfast_fast.ops.resample import pathway_inputs, pathway_split, temporal_resample

if _extension.compiled_available():
    _registration.register(_extension.NAMESPACE)
if _triton_ops.LOAD_ERROR is None:
    _registration.register(_triton_ops.NAMESPACE, fused_backward=True)

__all__ = ["lateral_concat", "temporal_resample", "pathway_split", "pathway_inputs"]
