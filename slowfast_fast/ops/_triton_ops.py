"""Defines the ``slowfast_fast_triton`` op namespace, whose kernels are the Triton launchers in
``slowfast_fast.triton``. Triton is optional: without it ``LOAD_ERROR`` says why."""

from __future__ import annotations

import torch

from slowfast_fast.ops._schemas import SCHEMAS, TRITON_SCHEMAS

NAMESPACE = "slowfast_fast_triton"
LOAD_ERROR: str | None = None

try:
    from slowfast_fast import triton as _kernels
except ImportError as exc:
    LOAD_ERROR = str(exc)
else:
    _missing = [name for name in {**SCHEMAS, **TRITON_SCHEMAS} if not hasattr(_kernels, name)]
    if _missing:
        LOAD_ERROR = f"slowfast_fast.triton lacks kernels for {_missing}"
if LOAD_ERROR is None:
    _lib = torch.library.Library(NAMESPACE, "DEF")
    for _name, _schema in {**SCHEMAS, **TRITON_SCHEMAS}.items():
        _lib.define(_schema)
        # CPU tensors reach these kernels only under TRITON_INTERPRET=1 (checked by the backend switch).
        for _key in ("CUDA", "CPU"):
            _lib.impl(_name, getattr(_kernels, _name), _key)
