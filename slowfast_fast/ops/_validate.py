"""Input checks shared by every backend, so every backend raises the same clear errors.

Argument *types* are checked first, at each public op's entry (a numpy array, a list, a tuple
stride or a float where an int belongs each raise a ``TypeError`` naming the argument, what it
expected and what it got), before anything touches an attribute a wrong type lacks. Then shapes,
dtypes, devices and values, each a ``RuntimeError`` saying what was expected and what was got.

They are plain Python conditions (not ``torch._check`` with message closures, which dynamo cannot
trace), so the public wrappers run them inside ``torch.compile(fullgraph=True)`` too; the fake kernels
run them again at trace time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch.fx.experimental.symbolic_shapes import guard_or_true

from slowfast_fast import backend as _backend


def _require(condition: bool, message: Callable[[], str]) -> None:
    if not condition:
        raise RuntimeError(message())


def _describe(value: object) -> str:
    """A value's type and, when short, the value itself: ``tuple (4, 1, 1)``, ``numpy.ndarray``."""
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    text = repr(value)
    return f"{name} {text}" if len(text) <= 40 and "\n" not in text else name


def _require_type(condition: bool, name: str, expected: str, value: object, hint: str = "") -> None:
    if not condition:
        raise TypeError(f"{name} must be {expected}, got {_describe(value)}{hint}")


def _check_tensor(value: object, name: str, optional: bool = False) -> None:
    if isinstance(value, torch.Tensor) or (optional and value is None):
        return
    array_like = isinstance(value, (list, tuple)) or hasattr(value, "__array__")
    hint = "; convert it with torch.as_tensor(...)" if array_like else ""
    _require_type(False, name, "a torch.Tensor" + (" or None" if optional else ""), value, hint)


def is_int(value: object) -> bool:
    # SymInt: under torch.compile with dynamic shapes an int argument may arrive symbolic.
    return isinstance(value, (numbers.Integral, torch.SymInt)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (numbers.Real, torch.SymInt, torch.SymFloat)) and not isinstance(value, bool)


def check_int(value: object, name: str, meaning: str) -> None:
    """``value`` is a Python int (or numpy integer); a bool, float, tuple or tensor is a TypeError."""
    if type(value) is int:  # the usual case, without the abstract-class isinstance checks (µs each)
        return
    hint = "; pass a Python int (tensor.item())" if isinstance(value, torch.Tensor) else ""
    _require_type(is_int(value), name, f"an int ({meaning})", value, hint)


def check_backend_arg(backend: object) -> None:
    """A ``backend=`` argument: None or a known backend name (a ValueError otherwise, also where the call
    would not need a backend: an identity resample returns its input without choosing one)."""
    if backend is None:
        return
    _require_type(isinstance(backend, str), "backend", "a backend name (str) or None", backend)
    _backend._validate(backend)


def check_lateral_concat_types(
    x_slow: object,
    x_fast: object,
    weight: object,
    stride: object,
    padding: object,
    scale: object,
    shift: object,
    relu: object,
    backend: object,
) -> None:
    """The argument types of :func:`slowfast_fast.lateral_concat`, checked before anything else."""
    _check_tensor(x_slow, "x_slow")
    _check_tensor(x_fast, "x_fast")
    _check_tensor(weight, "weight")
    check_int(stride, "stride", "the temporal stride")
    check_int(padding, "padding", "the temporal zero padding on each side")
    _check_tensor(scale, "scale", optional=True)
    _check_tensor(shift, "shift", optional=True)
    _require_type(isinstance(relu, bool), "relu", "a bool", relu)
    check_backend_arg(backend)


def check_resample_types(x: object, scales: dict[str, object], backend: object) -> None:
    """The argument types of the resampling ops: ``scales`` maps each argument name to its value."""
    _check_tensor(x, "x")
    for name, value in scales.items():
        hint = "; pass a Python number (tensor.item())" if isinstance(value, torch.Tensor) else ""
        _require_type(_is_real(value), name, "a real number (int or float)", value, hint)
    check_backend_arg(backend)


def _check_5d(t: torch.Tensor, name: str, layout: str) -> None:
    _require(t.dim() == 5, lambda: f"{name} must be 5-D {layout}, got shape {tuple(t.shape)}")


_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_float(t: torch.Tensor, name: str) -> None:
    _require(
        t.dtype in _FLOAT_DTYPES,
        lambda: f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}",
    )


def conv_output_length(t_in: int, kernel: int, stride: int, padding: int) -> int:
    return (t_in + 2 * padding - kernel) // stride + 1


def check_lateral_concat(
    x_slow: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    slow_name: str = "x_slow",
) -> None:
    # Every public call runs this (a few microseconds against a ~20 us stem lateral on CPU): each
    # attribute is read once, and the messages are only built on failure.
    ss, fs, ws = x_slow.shape, x_fast.shape, weight.shape
    _check_5d(x_slow, slow_name, "(N, C_slow, T_slow, H, W)")
    _check_5d(x_fast, "x_fast", "(N, C_fast, T_fast, H, W)")
    _check_5d(weight, "weight", "(C_lat, C_fast, k, 1, 1)")
    dtype = x_slow.dtype
    if dtype not in _FLOAT_DTYPES or x_fast.dtype is not dtype or weight.dtype is not dtype:
        for name, t in ((slow_name, x_slow), ("x_fast", x_fast), ("weight", weight)):
            _check_float(t, name)
        _require(
            x_fast.dtype == x_slow.dtype and weight.dtype == x_slow.dtype,
            lambda: (
                f"{slow_name}, x_fast and weight must share one dtype, got "
                f"{x_slow.dtype}, {x_fast.dtype} and {weight.dtype}"
            ),
        )
    device = x_slow.device
    _require(
        x_fast.device == device and weight.device == device,
        lambda: (
            f"{slow_name}, x_fast and weight must be on one device, got "
            f"{x_slow.device}, {x_fast.device} and {weight.device}"
        ),
    )
    _require(
        ws[3] == 1 and ws[4] == 1,
        lambda: f"weight must have a (k, 1, 1) kernel, got kernel {tuple(ws[2:])}",
    )
    _require(
        ws[1] == fs[1],
        lambda: f"weight has {ws[1]} input channels but x_fast has {fs[1]} channels",
    )
    _require(fs[0] == ss[0], lambda: f"batch mismatch: {slow_name} has {ss[0]}, x_fast has {fs[0]}")
    _require(
        fs[3] == ss[3] and fs[4] == ss[4],
        lambda: f"H/W mismatch: {slow_name} has {tuple(ss[3:])}, x_fast has {tuple(fs[3:])}",
    )
    # Only the batch and C_slow may be 0: the reference (F.conv3d) refuses empty frames and channels,
    # and what a conv over nothing would give is no SlowFast's.
    _require(
        fs[1] >= 1 and ws[0] >= 1,
        lambda: f"the lateral conv needs channels: x_fast has C_fast={fs[1]}, weight C_lat={ws[0]}",
    )
    _require(fs[2] >= 1, lambda: "x_fast has no frames (T_fast=0)")
    _require(
        ss[3] >= 1 and ss[4] >= 1,
        lambda: f"frames must have pixels, got H x W = {ss[3]} x {ss[4]}",
    )
    kernel = ws[2]
    _require(kernel >= 1, lambda: "weight's temporal kernel size must be at least 1")
    _require(stride >= 1, lambda: f"stride must be >= 1, got {stride}")
    _require(
        0 <= padding < kernel,
        lambda: (
            f"padding must be in [0, k-1] = [0, {kernel - 1}] (more only adds output frames made "
            f"of padding), got {padding}"
        ),
    )
    t_out = conv_output_length(fs[2], kernel, stride, padding)
    _require(
        t_out >= 1,
        lambda: f"empty temporal output: T_fast={fs[2]}, k={kernel}, stride={stride}, padding={padding}",
    )
    _require(
        t_out == ss[2],
        lambda: (
            f"the lateral conv gives {t_out} frames (T_fast={fs[2]}, k={kernel}, "
            f"stride={stride}, padding={padding}) but {slow_name} has {ss[2]}"
        ),
    )
    _check_affine(scale, "scale", x_slow, ws[0])
    _check_affine(shift, "shift", x_slow, ws[0])


def check_devices(names: str, device: torch.device, *tensors: torch.Tensor | None) -> None:
    """Every tensor given (None skipped) is on ``device``, the first argument's. For the backends'
    kernels, which check shapes once per launch plan but devices on every call."""
    for t in tensors:
        if t is not None and t.device != device:
            got = ", ".join(str(t.device) for t in tensors if t is not None)
            raise RuntimeError(f"{names} must be on one device ({device}), got {got}")


def _check_affine(t: torch.Tensor | None, name: str, like: torch.Tensor, channels: int) -> None:
    if t is None:
        return
    _require(
        t.dim() == 1 and t.shape[0] == channels,
        lambda: f"{name} must have shape ({channels},) (one value per lateral channel), got {tuple(t.shape)}",
    )
    _require(t.dtype == like.dtype, lambda: f"{name} must be {like.dtype}, got {t.dtype}")
    _require(t.device == like.device, lambda: f"{name} must be on {like.device}, got {t.device}")


def check_scale_factor(scale_factor: float, name: str = "scale_factor") -> None:
    _require(
        0 < scale_factor < math.inf,  # not math.isfinite, which a SymFloat (torch.compile) cannot take
        lambda: f"{name} must be a finite positive number, got {scale_factor}",
    )


def _nonzero(size: int | torch.SymInt) -> bool:
    """``size >= 1``; an unbacked (data-dependent) size under torch.compile is taken as non-zero rather
    than failing the trace (the compiled CPU and CUDA kernels check it again when they run)."""
    if isinstance(size, torch.Tensor):  # TorchScript tracing (the ONNX exporter) traces sizes as tensors
        return bool(size >= 1)
    # Not `isinstance(size, torch.SymInt)`: dynamo answers that, and `type(size)`, as for an int.
    return guard_or_true(size >= 1)


def check_resample(x: torch.Tensor, scale_factor: float, name: str = "scale_factor") -> None:
    """A resampling op's input and one of its scales."""
    check_resample_input(x)
    check_resample_scale(x, scale_factor, name)


def check_resample_input(x: torch.Tensor, name: str = "x") -> None:
    """The input of a resampling op (checked once per call, however many scales it takes)."""
    _check_5d(x, name, "(N, C, T, H, W)")
    _check_float(x, name)
    # As F.interpolate, the reference, which refuses them (also where the result would be x itself):
    # only the batch may be 0.
    _require(
        _nonzero(x.shape[1]) and _nonzero(x.shape[3]) and _nonzero(x.shape[4]),
        lambda: (
            f"{name} needs channels and pixels (only the batch may be 0), got C={x.shape[1]}, "
            f"H x W = {x.shape[3]} x {x.shape[4]}"
        ),
    )


def check_resample_scale(x: torch.Tensor, scale_factor: float, name: str = "scale_factor") -> None:
    """One scale of a resampling op on an input :func:`check_resample_input` accepted."""
    _check_resampled_length(x.shape[2], scale_factor, name)


def _check_resampled_length(t_in: int, scale_factor: float, name: str) -> int:
    """The output length of resampling ``t_in`` frames by a valid ``scale_factor``, which must be >= 1."""
    check_scale_factor(scale_factor, name)
    frames = float(t_in) * scale_factor
    _require(
        frames < 4.0e18,  # as the kernels: the length must be an int64 (and finite for math.floor)
        lambda: f"{name}={scale_factor} makes {t_in} frames into more frames than int64 can count",
    )
    length = math.floor(frames)
    _require(length >= 1, lambda: f"empty temporal output: T={t_in} with {name}={scale_factor}")
    return length


def check_resample_backward(grad_out: torch.Tensor, t_in: int, scale_factor: float) -> None:
    """The arguments of a backend's ``temporal_resample_backward`` op (the public ops call it with
    arguments they made; a direct call gets the checks the compiled kernels make)."""
    check_resample_input(grad_out, "grad_out")
    t_out = _check_resampled_length(t_in, scale_factor, "scale_factor")
    _require(
        grad_out.shape[2] == t_out,
        lambda: (
            f"grad_out has {grad_out.shape[2]} frames but resampling t_in={t_in} frames by "
            f"scale_factor={scale_factor} gives {t_out}"
        ),
    )


def check_lateral_concat_grad(
    grad_out: torch.Tensor,
    x_fast: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    out: torch.Tensor | None,
    stride: int,
    padding: int,
) -> None:
    """The arguments of a backend's lateral_concat gradient ops: ``grad_out`` is the gradient of the
    whole ``(N, C_slow + C_lat, T_slow, H, W)`` output and ``out`` (the forward's output, given when it
    applied ReLU) has its shape and dtype. The public ops call these with arguments they made; a direct
    call gets the checks the compiled kernels make. The Triton launch plans run these on meta tensors,
    where every device is meta: :func:`check_devices` compares the real ones."""
    _check_5d(grad_out, "grad_out", "(N, C_slow + C_lat, T_slow, H, W)")
    _check_5d(weight, "weight", "(C_lat, C_fast, k, 1, 1)")
    c_slow = grad_out.shape[1] - weight.shape[0]
    _require(
        c_slow >= 0,
        lambda: (
            f"grad_out has {grad_out.shape[1]} channels, fewer than the lateral conv's "
            f"{weight.shape[0]} output channels"
        ),
    )
    # grad_out's slow channels stand for x_slow: the forward's checks then cover the rest.
    check_lateral_concat(grad_out[:, :c_slow], x_fast, weight, stride, padding, scale, None, "grad_out")
    if out is not None:
        _require(
            out.shape == grad_out.shape and out.dtype == grad_out.dtype,
            lambda: (
                f"out must have grad_out's shape and dtype, {tuple(grad_out.shape)} and {grad_out.dtype}; "
                f"got {tuple(out.shape)} and {out.dtype}"
            ),
        )
