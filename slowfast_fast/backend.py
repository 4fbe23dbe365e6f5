"""Which implementation computes the fused ops.

Backends:
    ``reference``  pure PyTorch (``slowfast_fast.reference``), any device; the fallback.
    ``cpu``        compiled C++ kernels in ``slowfast_fast._C`` (CPU tensors).
    ``cuda``       compiled CUDA kernels in ``slowfast_fast._C`` (CUDA tensors).
    ``triton``     Triton kernels (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1``).
    ``auto``       the first available for the tensor's device: CPU -> cpu; CUDA -> cuda, then triton.
                   On CPU, ``lateral_concat`` under ``auto`` runs the reference instead where the
                   compiled forward measured slower than it (:func:`cpu_lateral_beats_reference`:
                   dtype, layout, k*C_fast, H*W, the CPU's native bf16 support; never where
                   PyTorch's bf16 conv3d was seen to give NaN or crash, k < stride:
                   :func:`reference_bf16_conv_unsafe`), and the ``cpu`` backend's
                   forward picks its own path per call by a measured rule (csrc/cpu/lateral_concat.cpp).
                   On CUDA the compiled kernels come first: they cost nothing at start-up, where
                   Triton compiles each kernel variant (seconds each) and autotunes every new shape
                   in every new process. This order stands until GPU measurements say otherwise.

Choose with the ``backend=`` argument of an op, the :func:`use_backend` context manager,
:func:`set_backend`, or the ``SLOWFAST_FAST_BACKEND`` environment variable (read at import).
A requested backend that cannot run on the given tensors falls back to ``reference`` with one
warning naming the reason; the reference computes exactly the same function, never something else.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "reference", "cpu", "triton", "cuda")

_state = threading.local()
_warned: set[tuple[str, str]] = set()


def _validate(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown slowfast_fast backend {name!r}; choose one of {BACKENDS}")
    return name


# Read once: the Triton interpreter flag only matters if set before triton itself was imported.
_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_default = _validate(os.environ.get("SLOWFAST_FAST_BACKEND", "auto").strip().lower() or "auto")


def get_backend() -> str:
    """The backend in force on this thread (``auto`` unless set)."""
    return getattr(_state, "backend", _default)


def set_backend(name: str) -> None:
    """Set the backend for this thread."""
    _state.backend = _validate(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the enclosed ops on ``name``: ``with use_backend("reference"): ...``."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _triton_usable(device: torch.device) -> tuple[bool, str]:
    from slowfast_fast.ops import _triton_ops

    if _triton_ops.LOAD_ERROR is not None:
        return False, f"the Triton kernels failed to load ({_triton_ops.LOAD_ERROR})"
    if device.type == "cuda":
        return True, ""
    if device.type == "cpu" and _TRITON_INTERPRET:
        return True, ""
    return False, f"Triton runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got {device}"


def _compiled_usable(backend: str, device: torch.device) -> tuple[bool, str]:
    from slowfast_fast import _extension

    if not _extension.compiled_available():
        return False, f"slowfast_fast._C is not built ({_extension.LOAD_ERROR})"
    if device.type != backend:
        return False, f"the {backend!r} backend runs on {backend} tensors, got {device}"
    if not _extension.has_kernels(backend.upper()):
        return False, f"slowfast_fast._C was built without {backend.upper()} kernels"
    return True, ""


def usable(backend: str, device: torch.device) -> tuple[bool, str]:
    """Whether ``backend`` can run on tensors of ``device``, and if not, why."""
    if backend == "reference":
        return True, ""
    if backend == "triton":
        return _triton_usable(device)
    return _compiled_usable(backend, device)


# The order ``auto`` tries the concrete backends in, per device type (see the module docstring).
AUTO_ORDER = {"cuda": ("cuda", "triton"), "cpu": ("cpu",)}


# What ``auto`` resolved to per device type: availability is fixed once the extension and Triton
# have loaded, and every public op call asks. Keyed by ``usable`` itself too, so that replacing it
# (tests do) is never answered from the cache.
_AUTO_CACHE: dict[tuple[str, object], str] = {}


def _auto(device: torch.device) -> str:
    key = (device.type, usable)
    cached = _AUTO_CACHE.get(key)
    if cached is not None:
        return cached
    name = "reference"
    for candidate in AUTO_ORDER.get(device.type, ()):
        if usable(candidate, device)[0]:
            name = candidate
            break
    _AUTO_CACHE[key] = name
    return name


def resolve(device: torch.device, backend: str | None = None) -> str:
    """The concrete backend that will run an op on ``device``.

    ``backend`` (an op's argument) overrides the thread's setting. An unusable explicit request
    falls back to ``reference`` with one warning per (backend, reason).
    """
    requested = _validate(backend) if backend is not None else get_backend()
    if requested == "auto":
        return _auto(device)
    ok, why = usable(requested, device)
    if ok:
        return requested
    if (requested, why) not in _warned:
        _warned.add((requested, why))
        warnings.warn(
            f"slowfast_fast backend {requested!r} is unavailable: {why}; using 'reference'.",
            RuntimeWarning,
            stacklevel=3,
        )
    return "reference"


def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere), read once."""
    global _CPU_FLAGS
    if _CPU_FLAGS is None:
        flags: frozenset[str] = frozenset()
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
                for line in info:
                    if line.startswith("flags"):
                        flags = frozenset(line.split(":", 1)[1].split())
                        break
        except OSError:
            pass
        _CPU_FLAGS = flags
    return _CPU_FLAGS


_CPU_FLAGS: frozenset[str] | None = None

# Where the compiled CPU kernels' lateral_concat forward measured faster than the reference, for
# dtypes where that is not everywhere: (dtype, channels_last) -> (CPU feature flag, boxes
# (largest k*C_fast, largest H*W) the kernels win in). On a CPU with the flag, ``auto`` runs the
# reference outside the boxes. From benchmarks/cpu_lateral_paths.py (RESULTS.md, "lateral_concat on
# CPU", 2026-11-30; R50 4x16 and 8x8 fusion points, batch 2, clips of 56x56 (frames of 196, 196,
# 49, 16 pixels) and 224x224 (3136, 3136, 784, 196)): with AVX512-BF16 and AMX, oneDNN's bf16 conv3d
# runs on AMX, which the kernels here (fp32 arithmetic on widened inputs) beat in NCDHW at
# k*C_fast <= 160 at both sizes (1.1-2.4x) and at 320 on 49-pixel frames (1.4x), not at 224 on
# 196-pixel frames, 320-448 on 784 or 448-896 anywhere (0.4-0.9x); in channels_last_3d only on the
# stem's thin lateral (k*C_fast 40, 56) on 196-pixel frames (1.2-2x; 0.55-0.6x on 3136-pixel frames,
# 0.3-0.9x past the stem).
_KERNELS_WIN_ON_CPU: dict[tuple[torch.dtype, bool], tuple[str, tuple[tuple[int, int], ...]]] = {
    (torch.bfloat16, False): ("avx512_bf16", ((160, 1 << 62), (320, 64))),
    (torch.bfloat16, True): ("avx512_bf16", ((64, 256),)),
}


# Where PyTorch's own bf16 conv3d (the reference's lateral conv) was seen to go wrong on the CPU: NaN,
# results 70% off, or the process aborted by heap corruption (``free(): invalid size``) or a segfault,
# whatever the layout or thread count. Seen with torch 2.14.1 (oneDNN 3.12) on an Intel Xeon with AMX
# (2026-11-30, and the 2026-12-02 sweep in benchmarks/RESULTS.md: 1816 lateral-shaped convs, one
# subprocess per case) exactly when the temporal kernel is shorter than the stride (k < stride, the
# windows skip frames: k=3 or 5 at stride 8, k=3 at stride 4, k=5 at stride 16), from 4 channels up,
# on frames of 7 to 20 pixels a side; not in every such shape (k=5 at stride 8 over 16 frames was
# fine), and never with k >= stride (k=5, 7, 9 at stride 4, k=3 at 3, k=5 at 2, stride 1; 8x8's k=7 at
# stride 4). R50 4x16's laterals (k=5, stride 8) are in that family, 8x8's (k=7, stride 4) are not.
# ``auto`` never sends such bf16 calls to the reference, whatever it measures (the compiled kernels do
# not use that convolution), and the differentiable paths that must use PyTorch's conv compute them in
# fp32 (:func:`pytorch_conv_needs_fp32`). k = 1 at a stride > 1 was fine in the sweep and is kept in
# the family anyway: it is the same strided, frame-skipping convolution.
def reference_bf16_conv_unsafe(kernel: int, stride: int) -> bool:
    """Whether a bf16 lateral conv3d of temporal ``kernel`` and ``stride`` falls in the family PyTorch
    computed wrongly or crashed on, on the CPU (see above): ``kernel < stride``. ``auto`` keeps such
    calls on the compiled kernels."""
    return kernel < stride


def pytorch_conv_needs_fp32(x_fast: torch.Tensor, weight: torch.Tensor, stride: int) -> bool:
    """Whether a lateral conv done by PyTorch (the paths that must be differentiable beyond first-order
    reverse mode) has to run in fp32 on ``x_fast``: bf16 on the CPU in the family of
    :func:`reference_bf16_conv_unsafe`."""
    return (
        x_fast.dtype is torch.bfloat16
        and x_fast.device.type == "cpu"
        and reference_bf16_conv_unsafe(weight.shape[2], stride)
    )


def cpu_lateral_beats_reference(dtype: torch.dtype, channels_last: bool, reduction: int, pixels: int) -> bool:
    """Whether the compiled CPU ``lateral_concat`` forward measured faster than the reference for
    inputs of ``dtype``, layout, ``reduction`` = k * C_fast and ``pixels`` = H * W on this CPU (the
    rule ``auto`` follows; see the table above)."""
    rule = _KERNELS_WIN_ON_CPU.get((dtype, channels_last))
    if rule is None:
        return True
    flag, boxes = rule
    if flag not in _cpu_flags():
        return True
    return any(reduction <= largest and pixels <= most for largest, most in boxes)


def resolve_lateral_concat(
    x_slow: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    backend: str | None = None,
) -> str:
    """:func:`resolve` for ``lateral_concat``: under ``auto`` on CPU the reference runs where it
    measured faster than the compiled kernels (:func:`cpu_lateral_beats_reference`), except where
    its bf16 convolution is unsafe (:func:`reference_bf16_conv_unsafe`)."""
    requested = _validate(backend) if backend is not None else get_backend()
    if requested != "auto":
        return resolve(x_slow.device, requested)
    name = _auto(x_slow.device)
    if name != "cpu" or not any(dtype is x_fast.dtype for dtype, _ in _KERNELS_WIN_ON_CPU):
        return name
    if x_fast.dtype is torch.bfloat16 and reference_bf16_conv_unsafe(weight.shape[2], stride):
        return name
    channels_last = not x_fast.is_contiguous() and x_fast.is_contiguous(memory_format=torch.channels_last_3d)
    reduction = weight.shape[1] * weight.shape[2]
    pixels = x_fast.shape[3] * x_fast.shape[4]
    wins = cpu_lateral_beats_reference(x_fast.dtype, channels_last, reduction, pixels)
    return name if wins else "reference"


def available_backends(device: torch.device | str) -> list[str]:
    """Concrete backends that can run on ``device`` here."""
    device = torch.device(device)
    return [b for b in BACKENDS[1:] if usable(b, device)[0]]
