"""slowfast_fast: fused kernels and a drop-in backbone that make SlowFast video models fast
without changing what they compute.

The fused ops are importable from the top level (``from slowfast_fast import lateral_concat``) as
well as from :mod:`slowfast_fast.ops`; the backbone lives in :mod:`slowfast_fast.models`.
"""

from slowfast_fast import ops
from slowfast_fast.backend import available_backends, get_backend, set_backend, use_backend
from slowfast_fast.ops import lateral_concat, pathway_inputs, pathway_split, temporal_resample

__version__ = "0.1.0"

__all__ = [
    "lateral_concat",
    "temporal_resample",
    "pathway_split",
    "pathway_inputs",
    "ops",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "__version__",
]
