"""Maps a concrete backend name to the torch.ops namespace holding its kernels, and decides when a
public op may call a kernel straight through the dispatcher's device key, below the autograd layer."""

import torch

from slowfast_fast._functorch import transform_active

# Tensor classes whose calls the dispatcher handles like plain tensors (no __torch_dispatch__ or
# __torch_function__ of their own). FakeTensor, FunctionalTensor and other subclasses are other types;
# functorch's wrappers (vmap, grad) are plain Tensors, caught by its interpreter stack instead.
PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)

# The dispatch key a direct call goes to, by device type: the kernels are registered there.
DIRECT_KEYS = {
    "cpu": torch._C.DispatchKeySet(torch._C.DispatchKey.CPU),
    "cuda": torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA),
}


def op_namespace(backend: str):
    if backend in ("cpu", "cuda"):
        return torch.ops.slowfast_fast
    if backend == "triton":
        return torch.ops.slowfast_fast_triton
    raise ValueError(f"backend {backend!r} has no op namespace")


def lazy(t: torch.Tensor) -> bool:
    """Whether ``t``'s values are not its memory as stored: a view with the negative or conjugate bit
    (``z.conj().imag``), or an efficient zero tensor. The dispatcher's Negative/Conjugate/ZeroTensor
    steps, above the device key, resolve them; a kernel reached directly would read the raw memory."""
    return t.is_neg() or t.is_conj() or torch._is_zerotensor(t)


def nothing_intercepts() -> bool:
    """The global half of a direct call's conditions (the per-tensor half is the caller's: plain types,
    not :func:`lazy`, no gradient needed). A public op's full call passes the autograd layer, a Python
    kernel from ``torch.library.register_autograd``; skipping it is exact only when nothing is being
    compiled (dynamo) or traced (TorchScript, as the ONNX TorchScript exporter does), no dispatch mode,
    torch-function mode or functorch transform is active, no forward-AD level is open (see
    :func:`reference_transform_active`), and the profiler is off (it records ops at the full call only)."""
    return not (
        torch.compiler.is_compiling()
        or torch.autograd.forward_ad._current_level >= 0  # dual tensors carry no requires_grad
        or torch.jit.is_tracing()
        or torch._C._len_torch_dispatch_stack()
        or torch._C._is_torch_function_mode_enabled()
        or torch._C._functorch.peek_interpreter_stack() is not None
        or torch.autograd._profiler_enabled()
    )


def reference_transform_active() -> bool:
    """Whether a derivative the kernels' ops cannot give may be taken of this call: forward-mode AD (a
    ``torch.autograd.forward_ad.dual_level`` is open, or a ``torch.func.jvp``/``jacfwd`` transform is
    active) or a ``torch.func.grad``/``vjp``/``jacrev`` transform. The kernels' ops have reverse-mode
    formulas only, registered by ``torch.library.register_autograd``: under forward AD they would drop
    the tangents without an error, and functorch's gradient transforms refuse the autograd.Function
    PyTorch generates for them (it has no ``setup_context``). There the public ops run the reference
    (PyTorch's own ops, which have every formula and batching rule). ``vmap`` alone keeps the kernels."""
    if torch.autograd.forward_ad._current_level >= 0:
        return True
    if not transform_active():
        return False
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    derivatives = _DERIVATIVE_TRANSFORMS
    return any(interpreter.key() in derivatives for interpreter in retrieve_all_functorch_interpreters())


_DERIVATIVE_TRANSFORMS = (torch._C._functorch.TransformType.Jvp, torch._C._functorch.TransformType.Grad)
