"""The Triton launchers' cached launch plans.

Each lateral launcher derives what only the inputs' shapes, strides, dtypes and flags decide (tiles,
vector runs, merged strides, index width, split counts) once per such key, from meta tensors, and a
call then only allocates and launches (``_plan`` in slowfast_fast/triton/lateral_concat*.py). What
could go wrong is a call whose tensors do not match the plan's numbers: a copy made at run time that
the plan did not make (or made differently), or a setting the key misses. These tests stub the kernel,
record what it would get, and check every tensor argument against the strides and flags it is given,
on the first call of a key (the plan is made) and on a later call with other tensors of the same key
(the plan is reused), for the odd inputs that make the launchers copy. The kernels' results are
checked against the reference by test_triton_kernels.py, which runs with the cache as it is.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from _tf32 import conv_tf32

pytest.importorskip("triton")

from slowfast_fast._layout import output_memory_format  # noqa: E402
from slowfast_fast.triton import _common  # noqa: E402

fwd = importlib.import_module("slowfast_fast.triton.lateral_concat")
bwd = importlib.import_module("slowfast_fast.triton.lateral_concat_backward")

CL = torch.channels_last_3d
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _recorder(monkeypatch, kernel) -> list[dict]:
    """Replaces ``kernel``'s launch (through its autotuner or not) by a recorder of its arguments by
    name; returns the list the calls are appended to. An autotuner keeps only its first config, so that
    on a GPU it does not benchmark (which would call the recorder once per timed run)."""
    import triton

    fn = kernel
    if isinstance(kernel, triton.runtime.Autotuner):
        fn = kernel.fn
        monkeypatch.setattr(kernel, "configs", kernel.configs[:1])
    calls = []

    def record(*args, grid, warmup, **kwargs):
        calls.append({**dict(zip(fn.arg_names, args, strict=False)), **kwargs, "grid": grid})

    monkeypatch.setattr(fn, "run", record)
    return calls


def _merged(t: torch.Tensor) -> tuple[int, int, int, int]:
    """``t``'s ``(n, c, t, hw)`` strides, which must need no copy to merge H and W."""
    merged, strides = _common.spatial_strides(t)
    assert merged is t, "the kernel got a tensor whose H and W strides do not merge"
    return strides


def _strided(shape, fmt, how: str, dtype: torch.dtype) -> torch.Tensor:
    """A random ``shape`` tensor in ``fmt``, or (``how``) a view whose strides need a copy (made in
    ``dtype``: converting a view would copy it densely)."""
    if how == "sliced_w":  # the first W columns of wider rows: H and W do not merge
        wide = torch.randn(*shape[:-1], shape[-1] + 1, device=DEVICE, dtype=dtype).to(memory_format=fmt)
        return wide[..., : shape[-1]]
    if how == "transposed_hw":
        return torch.randn(*shape[:3], shape[4], shape[3], device=DEVICE, dtype=dtype).transpose(3, 4)
    return torch.randn(shape, device=DEVICE, dtype=dtype).to(memory_format=fmt)


FORWARD_CASES = {
    "ncdhw": (torch.contiguous_format, torch.contiguous_format, "dense", "dense", False),
    "ndhwc": (CL, CL, "dense", "dense", False),
    "mixed": (CL, torch.contiguous_format, "dense", "dense", False),
    "x_fast_sliced": (torch.contiguous_format, CL, "dense", "sliced_w", False),
    "x_slow_transposed": (torch.contiguous_format, torch.contiguous_format, "transposed_hw", "dense", True),
    "weight_strided": (torch.contiguous_format, torch.contiguous_format, "dense", "dense", True),
}


def _forward_inputs(case: str, dtype: torch.dtype):
    slow_fmt, fast_fmt, slow_how, fast_how, odd_weight = FORWARD_CASES[case]
    n, c_slow, c_fast, c_lat, t_fast, k, stride, pad, h, w = 2, 5, 3, 6, 8, 3, 2, 1, 4, 4
    t_slow = (t_fast + 2 * pad - k) // stride + 1
    x_slow = _strided((n, c_slow, t_slow, h, w), slow_fmt, slow_how, dtype)
    x_fast = _strided((n, c_fast, t_fast, h, w), fast_fmt, fast_how, dtype)
    weight = torch.randn(c_lat, c_fast, k, 1, 1, device=DEVICE, dtype=dtype)
    if odd_weight:  # a weight whose memory is not its (C_lat, K) rows
        weight = torch.randn(c_fast, c_lat, k, 1, 1, device=DEVICE, dtype=dtype).transpose(0, 1)
    scale = torch.randn(c_lat, device=DEVICE, dtype=dtype)
    shift = torch.randn(c_lat, device=DEVICE, dtype=dtype)
    return (x_slow, x_fast, weight, stride, pad, scale, shift, True)


def _check_forward_call(call: dict, x_slow, x_fast, weight) -> None:
    fmt = output_memory_format(x_slow)
    out = call["out_ptr"]
    assert out.is_contiguous(memory_format=fmt)
    assert _merged(out) == (call["o_sn"], call["o_sc"], call["o_st"], call["o_shw"])
    xs = call["xs_ptr"]
    assert xs.is_contiguous(memory_format=fmt) and torch.equal(xs, x_slow)
    geometry = fwd._copy_geometry(xs, out.shape[1], fmt)
    assert (call["COPY_ROWS"], call["COPY_INNER"], call["xs_srow"], call["o_srow"]) == geometry
    xf = call["xf_ptr"]
    assert torch.equal(xf, x_fast)
    assert _merged(xf) == (call["xf_sn"], call["xf_sc"], call["xf_st"], call["xf_shw"])
    assert call["TAP_FASTEST"] == (not (xf.stride(1) == 1 and xf.shape[1] > 1))
    rows = call["w_ptr"]
    assert rows.is_contiguous()
    assert torch.equal(rows.reshape(-1), fwd._weight_rows(weight, call["TAP_FASTEST"]).reshape(-1))
    assert call["K_TOTAL"] == weight.shape[1] * weight.shape[2]
    assert call["INDEX"] == _common.index_type(xs, xf, out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_forward_plan_matches_the_tensors_the_kernel_gets(case, dtype, monkeypatch):
    calls = _recorder(monkeypatch, fwd._lateral_concat_kernel)
    fwd._plan.cache_clear()
    first = _forward_inputs(case, dtype)
    second = _forward_inputs(case, dtype)  # other tensors, the same key
    fwd.lateral_concat(*first)
    fwd.lateral_concat(*second)
    assert fwd._plan.cache_info().misses == 1 and fwd._plan.cache_info().hits == 1
    assert len(calls) == 2
    for call, inputs in zip(calls, (first, second), strict=True):
        _check_forward_call(call, *inputs[:3])
    assert calls[0]["grid"] is calls[1]["grid"]


def test_forward_plan_key_holds_the_settings_and_flags(monkeypatch):
    """TF32 on or off, the epilogue flags and the dtype each make their own plan."""
    calls = _recorder(monkeypatch, fwd._lateral_concat_kernel)
    fwd._plan.cache_clear()
    x_slow, x_fast, weight, stride, pad, scale, shift, relu = _forward_inputs("ncdhw", torch.float32)
    for allow in (True, False, True):
        with conv_tf32(allow):
            fwd.lateral_concat(x_slow, x_fast, weight, stride, pad, scale, shift, relu)
        assert calls[-1]["PRECISION"] == ("tf32" if allow else "ieee")
    fwd.lateral_concat(x_slow, x_fast, weight, stride, pad, None, shift, False)
    assert (calls[-1]["HAS_SCALE"], calls[-1]["HAS_SHIFT"], calls[-1]["RELU"]) == (False, True, False)
    assert calls[-1]["scale_ptr"] is calls[-1]["w_ptr"]  # a placeholder address
    half = [t.half() if isinstance(t, torch.Tensor) else t for t in (x_slow, x_fast, weight, stride, pad)]
    fwd.lateral_concat(*half, None, None, False)
    assert calls[-1]["K_SCALE"] == 2 and calls[-1]["xf_ptr"].dtype == torch.float16
    assert fwd._plan.cache_info().misses == 4 and fwd._plan.cache_info().hits == 1


def _backward_inputs(case: str, dtype: torch.dtype):
    n, c_slow, c_fast, c_lat, t_fast, k, stride, pad, h, w = 2, 5, 3, 6, 8, 3, 2, 1, 4, 4
    t_slow = (t_fast + 2 * pad - k) // stride + 1
    fast_fmt, out_fmt, grad_how = {
        "ncdhw": (torch.contiguous_format, torch.contiguous_format, "dense"),
        "ndhwc": (CL, CL, "dense"),
        "mixed_grad_and_out": (CL, CL, "contiguous"),
        "expanded_grad": (torch.contiguous_format, torch.contiguous_format, "expanded"),
        "x_fast_sliced": (torch.contiguous_format, CL, "dense"),
    }[case]
    how = "sliced_w" if case == "x_fast_sliced" else "dense"
    x_fast = _strided((n, c_fast, t_fast, h, w), fast_fmt, how, dtype)
    weight = torch.randn(c_lat, c_fast, k, 1, 1, device=DEVICE, dtype=dtype)
    shape = (n, c_slow + c_lat, t_slow, h, w)
    out = torch.randn(shape, device=DEVICE, dtype=dtype).relu().to(memory_format=out_fmt)
    if grad_how == "expanded":
        grad = torch.ones((), device=DEVICE, dtype=dtype).expand(shape)
    elif grad_how == "contiguous":
        grad = torch.randn(shape, device=DEVICE, dtype=dtype)
    else:
        grad = torch.randn(shape, device=DEVICE, dtype=dtype).to(memory_format=out_fmt)
    scale = torch.randn(c_lat, device=DEVICE, dtype=dtype)
    return grad, x_fast, weight, scale, out, stride, pad


def _check_backward_call(call: dict, grad, x_fast, weight, need_input: bool) -> None:
    g = call["g_ptr"]
    assert torch.equal(g, grad)
    g_strides = _merged(g)
    assert g_strides == (call["g_sn"], call["g_sc"], call["g_st"], call["g_shw"])
    if call["RELU"]:  # the forward output is read at the gradient's offsets
        assert _merged(call["out_ptr"]) == g_strides
    xf = call["xf_ptr"]
    assert torch.equal(xf, x_fast)
    assert _merged(xf) == (call["xf_sn"], call["xf_sc"], call["xf_st"], call["xf_shw"])
    dx = call["dx_ptr"]
    if need_input:
        assert dx.shape == x_fast.shape and dx.is_contiguous(memory_format=output_memory_format(x_fast))
    assert _merged(dx) == (call["dx_sn"], call["dx_sc"], call["dx_st"], call["dx_shw"])
    assert call["wt_ptr"] is weight
    assert weight.stride()[:3] == (call["w_so"], call["w_sc"], call["w_sk"])
    assert call["INDEX"] == _common.index_type(g, call["out_ptr"], dx, xf)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["ncdhw", "ndhwc", "mixed_grad_and_out", "expanded_grad", "x_fast_sliced"])
def test_backward_plan_matches_the_tensors_the_kernel_gets(case, dtype, monkeypatch):
    calls = _recorder(monkeypatch, bwd._backward_kernel)
    bwd._plan.cache_clear()
    first = _backward_inputs(case, dtype)
    second = _backward_inputs(case, dtype)
    for inputs in (first, second):
        dx, grad_weight, grad_scale, grad_shift = bwd.lateral_concat_backward(*inputs)
        assert dx.shape == inputs[1].shape and grad_weight.shape == inputs[2].shape
        assert calls[-1]["dx_ptr"] is dx and calls[-1]["gw_ptr"] is grad_weight
        assert calls[-1]["gscale_ptr"] is grad_scale and calls[-1]["gshift_ptr"] is grad_shift
    assert bwd._plan.cache_info().misses == 1 and bwd._plan.cache_info().hits == 1
    for call, inputs in zip(calls, (first, second), strict=True):
        _check_backward_call(call, *inputs[:3], need_input=True)
    assert calls[0]["grid"] is calls[1]["grid"]


@pytest.mark.parametrize("need", ["input", "weight"])
def test_backward_plan_for_one_result(need, monkeypatch):
    """A launch for one result: the other's programs are off, and its arguments are placeholders."""
    calls = _recorder(monkeypatch, bwd._backward_kernel)
    grad, x_fast, weight, scale, out, stride, pad = _backward_inputs("ndhwc", torch.float32)
    results = bwd.lateral_concat_backward(
        grad, x_fast, weight, scale, out, stride, pad, need == "input", need == "weight"
    )
    call = calls[-1]
    _check_backward_call(call, grad, x_fast, weight, need_input=need == "input")
    assert (call["NEED_INPUT"], call["NEED_WEIGHT"]) == (int(need == "input"), int(need == "weight"))
    if need == "input":
        assert results[1].numel() == 0 and call["gw_ptr"] is not results[1]
        assert call["gw_ptr"].dtype == weight.dtype  # the same compiled kernel as with grad_weight
    else:
        assert results[0].numel() == 0 and call["dx_ptr"] is call["xf_ptr"]


def test_backward_plan_key_holds_determinism_and_the_gpu(monkeypatch):
    """Deterministic mode (pinned config, ordered slabs) and the multiprocessor count each make their
    own plan; a changed count is seen at once (it sets the split count)."""
    calls = _recorder(monkeypatch, bwd._backward_kernel)
    monkeypatch.setattr(bwd._grad_weight_reduce_kernel, "run", lambda *args, **kwargs: None)
    bwd._plan.cache_clear()
    inputs = _backward_inputs("ncdhw", torch.float32)
    chunks = []
    for sms in (1, 64):
        monkeypatch.setattr(bwd, "num_sms", lambda device, sms=sms: sms)
        bwd.lateral_concat_backward(*inputs)
        assert calls[-1]["ATOMIC"] and calls[-1]["part_ptr"].shape[0] == 1
        chunks.append(calls[-1]["CHUNKS_PER_SPLIT"])
    assert chunks[0] > chunks[1]
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        bwd.lateral_concat_backward(*inputs)
    finally:
        torch.use_deterministic_algorithms(previous)
    call = calls[-1]
    assert not call["ATOMIC"]
    assert all(call[name] == value for name, value in bwd.DETERMINISTIC_CONFIG.all_kwargs().items())
    splits = bwd.weight_splits(2, 4, 16, 6, 3, 3, _common.DETERMINISTIC_SMS)[2]
    assert call["part_ptr"].shape == (splits, 6, 9)
    assert bwd._plan.cache_info().misses == 3


def test_public_op_without_grad_calls_the_triton_kernel_below_autograd(monkeypatch):
    """Inference calls skip the autograd layer (a Python kernel that would only pass them down):
    straight to the kernel's device key. Calls that need a gradient still go through it."""
    from slowfast_fast import ops, reference

    lateral_module = importlib.import_module("slowfast_fast.ops.lateral_concat")
    real_kernel_op = lateral_module._kernel_op
    real = real_kernel_op("triton")
    used = []

    class Spy:
        def redispatch(self, keys, *args):
            used.append("direct")
            return real.redispatch(keys, *args)

        def __call__(self, *args):
            used.append("autograd")
            return real(*args)

    monkeypatch.setattr(
        lateral_module, "_kernel_op", lambda name: Spy() if name == "triton" else real_kernel_op(name)
    )
    with conv_tf32(False):  # fp32 exact on a GPU too, in both
        x_slow, x_fast, weight, stride, pad, scale, shift, relu = _forward_inputs("ndhwc", torch.float32)
        args = (x_slow, x_fast, weight, stride, pad, scale, shift, relu)
        expected = reference.lateral_concat(*args)
        out = ops.lateral_concat(*args, backend="triton")
        assert used == ["direct"] and out.grad_fn is None
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        weight.requires_grad_()
        out = ops.lateral_concat(*args, backend="triton")
        assert used[-1] == "autograd" and out.grad_fn is not None
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            ops.lateral_concat(*args, backend="triton")
        assert used[-1] == "direct"


def test_empty_inputs_with_unmergeable_strides_launch_nothing():
    """A zero-batch x_fast seen through a transpose has H and W strides that do not merge, and a copy of
    it is itself again (every layout of nothing is dense): the plans must not try to merge it."""
    from slowfast_fast import ops

    x_slow = torch.randn(0, 5, 2, 3, 4, device=DEVICE)
    x_fast = torch.randn(0, 3, 8, 4, 3, device=DEVICE).transpose(3, 4)
    weight = torch.randn(6, 3, 3, 1, 1, device=DEVICE, requires_grad=True)
    out = ops.lateral_concat(x_slow, x_fast, weight, 4, 1, backend="triton")
    assert out.shape == (0, 11, 2, 3, 4)
    out.sum().backward()
    assert torch.equal(weight.grad, torch.zeros_like(weight))
    grad = torch.randn(0, 11, 2, 4, 3, device=DEVICE).transpose(3, 4)
    dx, grad_weight, grad_scale, grad_shift = bwd.lateral_concat_backward(
        grad, x_fast, weight, None, None, 4, 1
    )
    assert dx.shape == x_fast.shape and torch.equal(grad_weight, torch.zeros_like(weight))
    assert torch.equal(grad_shift, torch.zeros(6, device=DEVICE)) and grad_scale.shape == (6,)


def test_public_op_sends_lazily_negated_inputs_and_profiled_calls_through_the_dispatcher():
    """A negated view (``z.conj().imag``: its memory holds the values' negatives) is resolved by the
    dispatcher's Negative step, above the device key, so it must not take the direct call; neither
    does a call while the profiler runs (it records ops at the full call)."""
    from slowfast_fast import ops, reference

    lateral_module = importlib.import_module("slowfast_fast.ops.lateral_concat")
    x_slow = torch.randn(1, 2, 2, 3, 2, device=DEVICE)
    x_fast = torch.randn(1, 3, 4, 3, 2, dtype=torch.complex64, device=DEVICE).conj().imag
    weight = torch.randn(2, 3, 3, 1, 1, device=DEVICE)
    assert x_fast.is_neg()
    assert not lateral_module._direct_call(x_slow, x_fast, weight, None, None)
    assert lateral_module._direct_call(x_slow, x_fast.resolve_neg(), weight, None, None)
    with conv_tf32(False):
        expected = reference.lateral_concat(x_slow, x_fast.resolve_neg(), weight, 2, 1)
        out = ops.lateral_concat(x_slow, x_fast, weight, 2, 1, backend="triton")
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    plain = x_fast.resolve_neg()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        assert not lateral_module._direct_call(x_slow, plain, weight, None, None)
        ops.lateral_concat(x_slow, plain, weight, 2, 1, backend="triton")
    assert any(event.key == "slowfast_fast_triton::lateral_concat" for event in profile.key_averages())


res = importlib.import_module("slowfast_fast.triton.resample")

RESAMPLE_CASES = {
    "ncdhw": (torch.contiguous_format, "dense"),
    "ndhwc": (CL, "dense"),
    "sliced_w": (CL, "sliced_w"),
    "transposed_hw": (torch.contiguous_format, "transposed_hw"),
}


def _frame_strides(call: dict, name: str) -> tuple[int, int, int, int]:
    """The ``(n, t, row, inner)`` strides of tensor ``name`` that a resampling kernel got."""
    return tuple(call[f"{name}_s{s}"] for s in "ntri")


def _check_frames(t: torch.Tensor, other: torch.Tensor, given: tuple, rows: int, inner: int) -> None:
    """``t`` needs no copy to merge H and W, and ``given`` (its (n, t, row, inner) strides as the kernel
    got them) with ``(rows, inner)`` is how ``t`` looks next to ``other``."""
    _merged(t)
    assert res._frame_view(t, other) == (given, rows, inner)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", list(RESAMPLE_CASES))
@pytest.mark.parametrize("scales", [(1 / 3,), (1 / 4, 1 / 2)], ids=["one", "split"])
def test_resample_plan_matches_the_tensors_the_kernel_gets(scales, case, dtype, monkeypatch):
    calls = _recorder(monkeypatch, res._gather_frames_kernel)
    res._gather_plan.cache_clear()
    fmt, how = RESAMPLE_CASES[case]
    inputs = [_strided((2, 3, 12, 4, 5), fmt, how, dtype) for _ in range(2)]  # the same key
    outputs = [res._gather(x, scales) for x in inputs]
    assert res._gather_plan.cache_info().misses == 1 and res._gather_plan.cache_info().hits == 1
    for call, x, ys in zip(calls, inputs, outputs, strict=True):
        assert torch.equal(call["x_ptr"], x)
        assert call["y1_ptr"] is ys[0] and call["y2_ptr"] is ys[-1] and call["TWO"] == (len(scales) == 2)
        for y, scale in zip(ys, scales, strict=True):
            assert y.shape == (2, 3, len(reference_frames(12, scale)), 4, 5)
            assert y.dtype == dtype and y.is_contiguous(memory_format=output_memory_format(x))
        rows, inner = call["ROWS"], call["INNER"]
        _check_frames(call["x_ptr"], ys[0], _frame_strides(call, "x"), rows, inner)
        _check_frames(ys[0], call["x_ptr"], _frame_strides(call, "y1"), rows, inner)
        _check_frames(ys[-1], call["x_ptr"], _frame_strides(call, "y2"), rows, inner)
        table = call["read_ptr"]
        assert call["READ"] == table.shape[0] == len(set().union(*(reference_frames(12, s) for s in scales)))
        assert torch.equal(table, res._read_table(12, scales, x.device))
        assert (
            call["grid"] == res.frame_grid(2, call["READ"], rows, inner, call["BLOCK_R"], call["BLOCK_I"])[0]
        )
        assert call["FRAME_TILES"] == call["grid"][0] // (2 * call["READ"])
    assert calls[0]["grid"] is calls[1]["grid"]


def reference_frames(t_in: int, scale: float) -> list[int]:
    from slowfast_fast import reference

    return reference.source_frame_indices(t_in, scale).tolist()


@pytest.mark.parametrize("case", ["ncdhw", "ndhwc", "sliced_w", "expanded"])
def test_resample_backward_plan_matches_the_tensors_the_kernel_gets(case, monkeypatch):
    calls = _recorder(monkeypatch, res._sum_runs_kernel)
    res._sum_plan.cache_clear()
    shape = (2, 3, 4, 4, 5)
    if case == "expanded":
        grads = [torch.randn((), device=DEVICE).expand(shape) for _ in range(2)]
    else:
        fmt, how = RESAMPLE_CASES[case]
        grads = [_strided(shape, fmt, how, torch.float32) for _ in range(2)]
    results = [res.temporal_resample_backward(g, 12, 1 / 3) for g in grads]
    # Another scale that gives the same 4 frames: its own plan (the plan's checks read the scale), the
    # same launch arguments but its own run table.
    results.append(res.temporal_resample_backward(grads[0], 12, 0.34))
    assert res._sum_plan.cache_info().misses == 2 and res._sum_plan.cache_info().hits == 1
    for call, g, gx, scale in zip(calls, [*grads, grads[0]], results, (1 / 3, 1 / 3, 0.34), strict=True):
        assert torch.equal(call["gy_ptr"], g) and call["gx_ptr"] is gx
        assert gx.shape == (2, 3, 12, 4, 5) and gx.is_contiguous(memory_format=output_memory_format(g))
        rows, inner = call["ROWS"], call["INNER"]
        _check_frames(call["gy_ptr"], gx, _frame_strides(call, "gy"), rows, inner)
        _check_frames(gx, call["gy_ptr"], _frame_strides(call, "gx"), rows, inner)
        assert torch.equal(call["runs_ptr"], res._run_table(12, scale, None, g.device))
        assert call["T_IN"] == 12
        assert call["grid"] == res.frame_grid(2, 12, rows, inner, call["BLOCK_R"], call["BLOCK_I"])[0]


@pytest.mark.parametrize("case", list(RESAMPLE_CASES))
def test_resample_results_when_a_plan_is_reused(case):
    """The real kernels (interpreted on the CPU), twice per key with other values: the reused plan gives
    the reference's results, forward and backward."""
    from slowfast_fast import reference

    res._gather_plan.cache_clear()
    res._sum_plan.cache_clear()
    fmt, how = RESAMPLE_CASES[case]
    for _ in range(2):
        x = _strided((2, 3, 9, 3, 4), fmt, how, torch.float32)
        slow, fast = res.pathway_split(x, 1 / 3, 2 / 3)
        assert torch.equal(slow, reference.temporal_resample(x, 1 / 3))
        assert torch.equal(fast, reference.temporal_resample(x, 2 / 3))
        grad = _strided(tuple(fast.shape), fmt, how, torch.float32)
        x64 = x.double().requires_grad_()
        (truth,) = torch.autograd.grad(reference.temporal_resample(x64, 2 / 3), x64, grad.double())
        # Each source frame's gradient is at most one frame here (2/3 never repeats a frame): exact.
        assert torch.equal(res.temporal_resample_backward(grad, 9, 2 / 3).double(), truth)
    assert res._gather_plan.cache_info().hits == 1 and res._sum_plan.cache_info().hits == 1
