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


def _registered_kernel_keys() -> frozenset[str]:
    # Kernels register when the library loads, so this is computed once; doing it here rather than
    # per call keeps the backend choice traceable by torch.compile.
    if LOAD_ERROR is not None:
        return frozenset()
    op = f"{NAMESPACE}::lateral_concat"
    return frozenset(
        key for key in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(op, key)
    )


KERNEL_KEYS = _registered_kernel_keys()


def has_kernels(dispatch_key: str) -> bool:
    """Whether the compiled library has kernels for ``dispatch_key`` ("CPU" or "CUDA")."""
    return dispatch_key in KERNEL_KEYS
