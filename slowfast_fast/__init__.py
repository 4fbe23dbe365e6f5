"""slowfast_fast: fused kernels and a drop-in backbone that make SlowFast video models fast
without changing what they compute."""

from slowfast_fast import ops
from slowfast_fast.backend import available_backends, get_backend, set_backend, use_backend

__version__ = "0.1.0"

__all__ = ["ops", "available_backends", "get_backend", "set_backend", "use_backend", "__version__"]
