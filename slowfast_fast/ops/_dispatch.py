"""Maps a concrete backend name to the torch.ops namespace holding its kernels."""

import torch


def op_namespace(backend: str):
    if backend in ("cpu", "cuda"):
        return torch.ops.slowfast_fast
    if backend == "triton":
        return torch.ops.slowfast_fast_triton
    raise ValueError(f"backend {backend!r} has no op namespace")
