"""Whether a ``torch.func`` transform sees the current call (a leaf module: the reference and the
ops' dispatch both ask, and the reference cannot import the ops)."""

import torch


def transform_active() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jvp, ...) sees this call. Never true while dynamo
    traces: it compiles the transforms away, and what it traces is the plain call."""
    return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None
