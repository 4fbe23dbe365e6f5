"""Loads the compiled library ``slowfast_fast._C`` (schemas, CPU and CUDA kernels) if it was built."""

from __future__ import annotations

import warnings

import torch

try:
    from slowfast_fast import _C  # noqa: F401  (importing registers the ops with the dispatcher)

    LOAD_ERROR: str | None = None
except ImportError as exc:  # the package still works on the reference backend
    LOAD_ERROR = str(exc)
    warnings.warn(
        "slowfast_fast._C is not built or failed to load "
        f"({LOAD_ERROR}); only the 'reference' and 'triton' backends are available. "
        "Reinstall with `pip install --no-build-isolation .` to build it.",
        RuntimeWarning,
        stacklevel=2,
    )

NAMESPACE = "slowfast_fast"


def compiled_available() -> bool:
    return LOAD_ERROR is None


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the compiled op ``slowfast_fast::<op>`` has a kernel for ``dispatch_key`` (CPU/CUDA)."""
    if LOAD_ERROR is not None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{op}", dispatch_key)
