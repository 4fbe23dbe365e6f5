"""Backend-independent checks of the public ops: schemas, the backend switch, validation errors,
the reference's index rule, opcheck, torch.compile and autocast. The property-based comparison
with the reference is in test_ops_property.py.

Per-backend kernel suites live in test_cpu_kernels.py, test_triton_kernels.py, test_cuda_kernels.py.
"""

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import slowfast_fast
from slowfast_fast import _extension, reference
from slowfast_fast.ops import _schemas, _triton_ops, lateral_concat, pathway_split, temporal_resample

KERNEL_BACKENDS = ("cpu", "triton")


def _require(backend):
    if backend == "auto":
        return
    ok, why = slowfast_fast.backend.usable(backend, torch.device("cpu"))
    if not ok:
        pytest.skip(f"{backend} backend unavailable here: {why}")


def _namespace(backend):
    return torch.ops.slowfast_fast if backend == "cpu" else torch.ops.slowfast_fast_triton


def _lateral_inputs(n, c_slow, c_fast, c_lat, t_fast, h, w, k, s, p, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    t_slow = (t_fast + 2 * p - k) // s + 1
    x_slow = torch.randn(n, c_slow, t_slow, h, w, generator=g, dtype=dtype)
    x_fast = torch.randn(n, c_fast, t_fast, h, w, generator=g, dtype=dtype)
    weight = torch.randn(c_lat, c_fast, k, 1, 1, generator=g, dtype=dtype) / (k * c_fast) ** 0.5
    return x_slow, x_fast, weight


def test_compiled_library_loaded_in_ci():
    # CI builds _C; a silently missing extension would turn every cpu test into a skip.
    if os.environ.get("CI") != "true":
        pytest.skip("only enforced in CI")
    assert _extension.compiled_available(), _extension.LOAD_ERROR
    assert "cpu" in slowfast_fast.available_backends("cpu")
    assert _triton_ops.LOAD_ERROR is None, _triton_ops.LOAD_ERROR


def test_compiled_schemas_match_python_schemas():
    if not _extension.compiled_available():
        pytest.skip("slowfast_fast._C not built")
    for name, schema in _schemas.SCHEMAS.items():
        compiled = str(getattr(torch.ops.slowfast_fast, name).default._schema)
        assert compiled == f"slowfast_fast::{schema}"


def test_backend_switch_precedence():
    assert slowfast_fast.get_backend() in slowfast_fast.backend.BACKENDS
    with slowfast_fast.use_backend("reference"):
        assert slowfast_fast.get_backend() == "reference"
        assert slowfast_fast.backend.resolve(torch.device("cpu")) == "reference"
        # the per-call argument overrides the context
        assert slowfast_fast.backend.resolve(torch.device("cpu"), "auto") in ("cpu", "reference")
    with pytest.raises(ValueError, match="unknown slowfast_fast backend"):
        slowfast_fast.set_backend("fastest")


def test_env_var_sets_default_backend():
    code = "import slowfast_fast; print(slowfast_fast.get_backend())"
    env = dict(os.environ, SLOWFAST_FAST_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "reference"
    env["SLOWFAST_FAST_BACKEND"] = "bogus"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown slowfast_fast backend" in bad.stderr


def test_unusable_backend_falls_back_with_one_warning():
    x_slow, x_fast, weight = _lateral_inputs(1, 3, 2, 4, 8, 3, 5, 3, 2, 1)
    expected = reference.lateral_concat(x_slow, x_fast, weight, 2, 1)
    slowfast_fast.backend._warned.clear()
    with pytest.warns(RuntimeWarning, match="backend 'cuda' is unavailable"):
        out = lateral_concat(x_slow, x_fast, weight, 2, 1, backend="cuda")
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lateral_concat(x_slow, x_fast, weight, 2, 1, backend="cuda")  # warned once already


INDEX_RULE_CASES = [
    (t_in, scale_factor)
    for t_in in (1, 7, 13, 32)
    for scale_factor in (1 / 8, 1 / 4, 1 / 3, 1 / 7, 2 / 3, 0.3, 1.5, 2.0, 3.0, 0.999)
    if int(t_in * scale_factor) >= 1
]


@pytest.mark.parametrize("t_in, scale_factor", INDEX_RULE_CASES)
def test_reference_index_rule_matches_interpolate(t_in, scale_factor):
    x = torch.arange(t_in, dtype=torch.float32).view(1, 1, t_in, 1, 1)
    picked = F.interpolate(x, mode="nearest", scale_factor=(scale_factor, 1, 1)).flatten().long()
    assert torch.equal(picked, reference.source_frame_indices(t_in, scale_factor))


def test_identity_resample_returns_input_without_copy():
    x = torch.randn(2, 3, 8, 5, 7)
    assert temporal_resample(x, 1.0) is x
    slow, fast = pathway_split(x, 1 / 4, 1.0)
    assert fast is x
    assert torch.equal(slow, x[:, :, ::4])
    slow, fast = slowfast_fast.ops.pathway_inputs(x, 8, 8)
    assert fast is x and slow.shape[2] == 1


@pytest.mark.parametrize("t_in, scale_factor", [(10, 1.05), (7, 1.1), (2, 1.4)])
def test_same_length_resample_that_is_not_identity(t_in, scale_factor):
    """A scale in (1, 1 + 1/T) keeps T frames but repeats frame 0: the op must not return x."""
    x = torch.randn(2, 3, t_in, 5, 7)
    expected = F.interpolate(x, mode="nearest", scale_factor=(scale_factor, 1, 1))
    assert expected.shape == x.shape and not torch.equal(expected, x)
    got = temporal_resample(x, scale_factor)
    assert got is not x and torch.equal(got, expected)
    slow, fast = pathway_split(x, 0.5, scale_factor)
    assert torch.equal(fast, expected)
    assert torch.equal(slow, F.interpolate(x, mode="nearest", scale_factor=(0.5, 1, 1)))


@pytest.mark.parametrize("backend", ["reference", *KERNEL_BACKENDS])
@pytest.mark.parametrize("t_in, scale_factor", [(2, 1.2), (7, 1.1)])
def test_same_length_resample_gradient_is_the_derivative_of_its_forward(backend, t_in, scale_factor):
    """There F.interpolate's backward treats equal lengths as the identity, which is not the derivative
    of its forward (frame 0 is read twice, the last frame never): every backend, the reference
    included, must give the gradient of what it computes."""
    x = torch.randn(1, 2, t_in, 2, 3, dtype=torch.float64, requires_grad=True)
    out = temporal_resample(x, scale_factor, backend=backend)
    grad_out = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    want = torch.zeros_like(x).index_add(2, reference.source_frame_indices(t_in, scale_factor), grad_out)
    assert torch.equal(grad, want)
    assert (grad[:, :, -1] == 0).all()  # never read
    torch.autograd.gradcheck(lambda t: temporal_resample(t, scale_factor, backend=backend), (x,))


def test_numpy_float32_scales_act_as_the_python_floats_they_convert_to():
    """NumPy 2 computes ``float * np.float32`` in float32: the lengths and the index rule would not be
    F.interpolate's (which converts the scale to a Python float). T=10 at 0.7f: 7 frames in float32,
    6 as F.interpolate; T=25 at 0.04f: the documented empty-output error."""
    np = pytest.importorskip("numpy")
    x = torch.randn(1, 2, 10, 2, 2)
    want = F.interpolate(x, mode="nearest", scale_factor=(float(np.float32(0.7)), 1, 1))
    assert want.shape[2] == 6
    assert reference.resampled_length(10, np.float32(0.7)) == 6
    frames = torch.arange(10.0).view(1, 1, 10, 1, 1)
    picked = (
        F.interpolate(frames, mode="nearest", scale_factor=(float(np.float32(0.7)), 1, 1)).flatten().long()
    )
    assert torch.equal(reference.source_frame_indices(10, np.float32(0.7)), picked)
    for backend in ("reference", *KERNEL_BACKENDS):
        assert torch.equal(temporal_resample(x, np.float32(0.7), backend=backend), want)
        with pytest.raises(RuntimeError, match="empty temporal output"):
            temporal_resample(torch.randn(1, 2, 25, 2, 2), np.float32(0.04), backend=backend)


# (T, scale) where float64 on the CPU picks other frames than the float rule (F.interpolate computes the
# index in double there: frame 54 of T=65 at 6/7 reads 63, not 62), plus ordinary rates.
FLOAT64_RULE_CASES = [(65, 6 / 7), (195, 6 / 7), (253, 3 / 7), (32, 1 / 8), (31, 1 / 3), (13, 2.5)]


@pytest.mark.parametrize("backend", ["reference", *KERNEL_BACKENDS, None])
@pytest.mark.parametrize("t_in, scale_factor", FLOAT64_RULE_CASES)
def test_float64_resampling_follows_pytorchs_cpu_index_rule(backend, t_in, scale_factor):
    if backend is not None:
        _require(backend)
    frames = torch.arange(t_in, dtype=torch.float64).view(1, 1, t_in, 1, 1)
    picked = F.interpolate(frames, mode="nearest", scale_factor=(scale_factor, 1, 1)).flatten().long()
    rule = reference.source_frame_indices(t_in, scale_factor, double_rule=True)
    assert torch.equal(rule, picked)
    float_rule = reference.source_frame_indices(t_in, scale_factor)
    if (t_in, scale_factor) in FLOAT64_RULE_CASES[:3]:
        assert not torch.equal(float_rule, picked)  # the cases where the two rules differ
    g = torch.Generator().manual_seed(t_in)
    for fmt in (torch.contiguous_format, torch.channels_last_3d):
        x = torch.randn(2, 3, t_in, 2, 3, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
        want = F.interpolate(x, mode="nearest", scale_factor=(scale_factor, 1, 1))
        x.requires_grad_()
        got = temporal_resample(x, scale_factor, backend=backend)
        assert torch.equal(got, want)
        grad_out = torch.randn(got.shape, generator=g, dtype=torch.float64)
        (grad,) = torch.autograd.grad(got, x, grad_out)
        assert torch.equal(grad, torch.zeros_like(x).index_add(2, picked, grad_out))
        slow, fast = pathway_split(x.detach(), 1 / 4, scale_factor, backend=backend)
        assert torch.equal(fast, want)
    # float32 data keeps the float rule
    x32 = frames.float().expand(1, 2, t_in, 2, 1)
    assert torch.equal(
        temporal_resample(x32, scale_factor, backend=backend)[0, 0, :, 0, 0].long(), float_rule
    )


@pytest.mark.parametrize("backend", ["reference", *KERNEL_BACKENDS])
@pytest.mark.parametrize("scale_factor", [1e19, 1e300, 1e308])
def test_scales_beyond_int64_frames_raise_a_clear_error(backend, scale_factor):
    """T * scale past int64's range: the kernels cast the length to int64 (undefined behaviour in C++,
    a negative length here) and Python's math.floor raised OverflowError for an infinite product."""
    _require(backend)
    x = torch.randn(1, 2, 3, 2, 2)
    with pytest.raises(RuntimeError, match="more frames than int64 can count"):
        temporal_resample(x, scale_factor, backend=backend)
    with pytest.raises(RuntimeError, match="more frames than int64 can count"):
        pathway_split(x, 0.5, scale_factor, backend=backend)
    if backend == "cpu":  # the compiled kernel's own check, reached directly
        with pytest.raises(RuntimeError, match="more frames than int64 can count"):
            torch.ops.slowfast_fast.temporal_resample(x, scale_factor)


def test_source_indices_past_float32_exact_integers():
    """Output frame numbers past 2^24 are not all float32 integers: building them with a float32
    arange gave other values than PyTorch's int64-to-float conversion (the create_graph=True gradient
    used them)."""
    t_in, scale_factor = (1 << 24) + 5, 1.5
    got = reference.source_frame_indices(t_in, scale_factor)
    dst = torch.arange(got.numel(), dtype=torch.int64)
    want = (
        torch.floor(dst.to(torch.float32) * reference._float32(1 / scale_factor)).long().clamp_(max=t_in - 1)
    )
    assert torch.equal(got, want)
    assert not torch.equal(torch.arange(got.numel(), dtype=torch.float32).long(), dst)  # the old build


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bad_arguments_raise_the_documented_errors_in_every_dtype(dtype):
    """The default backend's bf16 rule reads the inputs' sizes: it must not see a wrong rank or type
    before the checks do (a 2-D weight raised IndexError in bf16)."""
    x_slow, x_fast = torch.randn(1, 2, 2, 3, 3, dtype=dtype), torch.randn(1, 4, 8, 3, 3, dtype=dtype)
    weight = torch.randn(3, 4, 3, 1, 1, dtype=dtype)
    with pytest.raises(RuntimeError, match="weight must be 5-D"):
        lateral_concat(x_slow, x_fast, weight[:, :, 0, 0, 0], 4, 1)
    with pytest.raises(RuntimeError, match="x_fast must be 5-D"):
        lateral_concat(x_slow, x_fast[0], weight, 4, 1)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        lateral_concat(x_slow, x_fast, [[1.0]], 4, 1)


def test_resample_by_a_scale_whose_float32_reciprocal_is_one_returns_input():
    x = torch.randn(1, 2, 9, 3, 3)
    scale_factor = 1.0 + 1e-9
    assert torch.equal(F.interpolate(x, mode="nearest", scale_factor=(scale_factor, 1, 1)), x)
    assert temporal_resample(x, scale_factor) is x


BAD_LATERAL = [
    ("x_slow", dict(x_slow=torch.randn(2, 4, 4, 5)), "x_slow must be 5-D"),
    ("x_fast", dict(x_fast=torch.randn(2, 3, 16, 5)), "x_fast must be 5-D"),
    ("weight rank", dict(weight=torch.randn(6, 3, 5)), "weight must be 5-D"),
    ("batch", dict(x_fast=torch.randn(3, 3, 16, 5, 7)), "batch mismatch"),
    ("height", dict(x_fast=torch.randn(2, 3, 16, 6, 7)), "H/W mismatch"),
    ("channels", dict(weight=torch.randn(6, 4, 5, 1, 1)), "weight has 4 input channels"),
    ("kernel", dict(weight=torch.randn(6, 3, 5, 3, 1)), r"\(k, 1, 1\) kernel"),
    ("stride", dict(stride=0), "stride must be >= 1"),
    ("negative padding", dict(padding=-1), "padding must be in"),
    ("large padding", dict(padding=5), "padding must be in"),
    ("frames", dict(x_slow=torch.randn(2, 4, 3, 5, 7)), "gives 4 frames"),
    ("empty", dict(x_fast=torch.randn(2, 3, 2, 5, 7), padding=0), "empty temporal output"),
    ("dtype", dict(x_fast=torch.randn(2, 3, 16, 5, 7, dtype=torch.float64)), "share one dtype"),
    ("int dtype", dict(x_slow=torch.ones(2, 4, 4, 5, 7, dtype=torch.int32)), "x_slow must be float32"),
    ("scale", dict(scale=torch.randn(5)), r"scale must have shape \(6,\)"),
    ("shift", dict(shift=torch.randn(6, 1)), r"shift must have shape \(6,\)"),
    ("scale dtype", dict(scale=torch.randn(6, dtype=torch.float64)), "scale must be torch.float32"),
    # Only the batch and C_slow may be 0 (the reference refuses the rest; a kernel returned shapes).
    (
        "no fast channels",
        dict(x_fast=torch.randn(2, 0, 16, 5, 7), weight=torch.randn(6, 0, 5, 1, 1)),
        "needs channels",
    ),
    ("no lateral channels", dict(weight=torch.randn(0, 3, 5, 1, 1)), "needs channels"),
    ("no fast frames", dict(x_fast=torch.randn(2, 3, 0, 5, 7)), r"no frames \(T_fast=0\)"),
    (
        "no pixels",
        dict(x_slow=torch.randn(2, 4, 4, 0, 7), x_fast=torch.randn(2, 3, 16, 0, 7)),
        "must have pixels",
    ),
]


@pytest.mark.parametrize("backend", ["reference", *KERNEL_BACKENDS])
@pytest.mark.parametrize("case", BAD_LATERAL, ids=[c[0] for c in BAD_LATERAL])
def test_lateral_concat_rejects_bad_input(case, backend):
    _, override, message = case
    args = dict(
        x_slow=torch.randn(2, 4, 4, 5, 7),
        x_fast=torch.randn(2, 3, 16, 5, 7),
        weight=torch.randn(6, 3, 5, 1, 1),
        stride=4,
        padding=2,
        scale=None,
        shift=None,
    )
    args.update(override)
    with pytest.raises(RuntimeError, match=message):
        lateral_concat(**args, backend=backend)


@pytest.mark.parametrize(
    "x, scale_factor, message",
    [
        (torch.randn(2, 3, 8, 5), 0.5, "x must be 5-D"),
        (torch.randn(2, 3, 8, 5, 5), 0.0, "finite positive"),
        (torch.randn(2, 3, 8, 5, 5), float("nan"), "finite positive"),
        (torch.randn(2, 3, 8, 5, 5), 0.1, "empty temporal output"),
        (torch.ones(2, 3, 8, 5, 5, dtype=torch.long), 0.5, "x must be float32"),
    ],
)
def test_temporal_resample_rejects_bad_input(x, scale_factor, message):
    with pytest.raises(RuntimeError, match=message):
        temporal_resample(x, scale_factor)


@pytest.mark.parametrize("backend", ["reference", *KERNEL_BACKENDS])
@pytest.mark.parametrize("shape", [(2, 0, 8, 5, 5), (2, 3, 8, 0, 5), (2, 3, 8, 5, 0)])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last_3d])
def test_resampling_refuses_frames_without_channels_or_pixels(backend, shape, fmt):
    """As F.interpolate, whatever the backend and also where the result would be x itself (the
    kernels and the identity path returned empty tensors, the reference raised)."""
    x = torch.randn(shape).contiguous(memory_format=fmt)
    with pytest.raises(RuntimeError, match="Non-empty|sizes should be greater than 0"):
        F.interpolate(x, mode="nearest", scale_factor=(0.5, 1.0, 1.0))
    for scale in (0.5, 1.0):
        with pytest.raises(RuntimeError, match="needs channels and pixels"):
            temporal_resample(x, scale, backend=backend)
    with pytest.raises(RuntimeError, match="needs channels and pixels"):
        slowfast_fast.pathway_split(x, 0.25, 1.0, backend=backend)
    with pytest.raises(RuntimeError, match="needs channels and pixels"):
        slowfast_fast.ops.pathway_inputs(x, 4, 4, backend=backend)


@pytest.mark.parametrize("backend", ["reference", *KERNEL_BACKENDS])
def test_resampling_an_empty_batch_gives_an_empty_batch(backend):
    x = torch.randn(0, 3, 8, 5, 5, requires_grad=True)
    want = F.interpolate(x, mode="nearest", scale_factor=(0.5, 1.0, 1.0))
    got = temporal_resample(x, 0.5, backend=backend)
    assert got.shape == want.shape == (0, 3, 4, 5, 5)
    (grad,) = torch.autograd.grad(got.sum(), x)
    assert grad.shape == x.shape


def test_identity_rule_bounds_are_float32_rounding():
    """is_identity_resample compares 1/scale with the ends of float32's rounding interval around 1.0
    (so a SymFloat traces); at and next to both ends, and at random scales near 1, it must agree with
    rounding 1/scale to float32."""
    import numpy as np

    reciprocals = [float(r) for r in np.random.default_rng(0).uniform(1 - 1e-6, 1 + 1e-6, 2000)]
    for end in (1 - 2**-25, 1 + 2**-24):
        r = end
        for _ in range(3):
            r = math.nextafter(r, 0.0)
        for _ in range(7):
            reciprocals.append(r)
            r = math.nextafter(r, 2.0)
    agree = 0
    for r in reciprocals:
        scale = 1.0 / r
        want = float(np.float32(1.0 / scale)) == 1.0
        assert reference.is_identity_resample(4, scale) == (
            want and reference.resampled_length(4, scale) == 4
        )
        agree += want
    assert 0 < agree < len(reciprocals)  # both outcomes occur


def test_resampling_compiles_with_unbacked_sizes():
    """The channels-and-pixels check must not fail a trace where a size is data-dependent (unbacked):
    it assumes such a size is non-zero (the compiled kernels check it when they run)."""
    x = torch.randn(2, 3, 16, 5, 6)
    want = reference.pathway_split(x, 1 / 4, 1 / 2)
    torch._dynamo.reset()
    try:
        for dim in (0, 1, 3):
            torch._dynamo.reset()
            marked = x.clone()
            torch._dynamo.decorators.mark_unbacked(marked, dim)
            got = torch.compile(lambda t: slowfast_fast.ops.pathway_inputs(t, 4, 2), fullgraph=True)(marked)
            assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    finally:
        torch._dynamo.reset()


def test_rates_and_scales_as_dynamic_arguments_compile():
    """Under ``torch.compile(dynamic=True, fullgraph=True)`` a rate or scale passed as an argument is a
    SymInt/SymFloat: the checks (comparisons, not ``math.isfinite``) and the identity rule (an interval,
    not float32 rounding by ``struct``) must trace, and the frames be the eager ones."""
    x = torch.randn(1, 3, 43, 5, 5)
    calls = [
        (lambda t, r: slowfast_fast.ops.pathway_inputs(t, r, 4), 8),
        (lambda t, r: slowfast_fast.ops.pathway_inputs(t, r, 4), 10.5),
        (lambda t, r: slowfast_fast.ops.pathway_inputs(t, r, 8), 10.5),  # fast scale 1.0: the identity rule
        (lambda t, s: slowfast_fast.pathway_split(t, s, 1.0), 1 / 3),
        (lambda t, s: (temporal_resample(t, s),), 0.5),
    ]
    try:
        for fn, value in calls:
            torch._dynamo.reset()
            got = torch.compile(fn, dynamic=True, fullgraph=True)(x, value)
            want = fn(x, value)
            assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True)), value
    finally:
        torch._dynamo.reset()


def test_pathway_inputs_rejects_bad_rates():
    with pytest.raises(ValueError, match="resample_rate >= speed_ratio"):
        slowfast_fast.ops.pathway_inputs(torch.randn(1, 3, 8, 4, 4), 4, 8)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("relu", [False, True])
def test_opcheck_lateral_ops(backend, relu):
    _require(backend)
    ns = _namespace(backend)
    x_slow, x_fast, weight = _lateral_inputs(2, 3, 4, 5, 9, 3, 5, 3, 2, 1)
    scale, shift = torch.rand(5) + 0.5, torch.randn(5)
    for t in (x_slow, x_fast, weight, scale, shift):
        t.requires_grad_(True)
    args = (x_slow, x_fast, weight, 2, 1, scale, shift, relu)
    torch.library.opcheck(ns.lateral_concat, args)
    with torch.no_grad():
        out = ns.lateral_concat(*args)
    grad_out = torch.randn_like(out)
    saved = out if relu else None
    grad_args = (grad_out, x_fast.detach(), weight.detach(), scale.detach(), saved, 2, 1)
    torch.library.opcheck(ns.lateral_concat_grad_input, grad_args)
    torch.library.opcheck(ns.lateral_concat_grad_weight, grad_args)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_opcheck_resample_ops(backend):
    _require(backend)
    ns = _namespace(backend)
    x = torch.randn(2, 3, 11, 4, 5, requires_grad=True)
    torch.library.opcheck(ns.temporal_resample, (x, 1 / 3))
    torch.library.opcheck(ns.pathway_split, (x, 1 / 4, 1 / 2))
    torch.library.opcheck(ns.temporal_resample_backward, (torch.randn(2, 3, 3, 4, 5), 11, 1 / 3))


@pytest.mark.parametrize("backend", ["auto", "reference", *KERNEL_BACKENDS])
def test_torch_compile_fullgraph_matches_eager(backend):
    _require(backend)
    torch._dynamo.reset()

    def block(clip, x_slow, weight, scale, shift):
        slow, fast = slowfast_fast.ops.pathway_inputs(clip, 4, 2, backend=backend)
        fused = lateral_concat(x_slow, fast, weight, 2, 1, scale, shift, True, backend=backend)
        return fused.sum() + slow.sum()

    g = torch.Generator().manual_seed(3)
    clip = torch.randn(2, 3, 12, 5, 6, generator=g, requires_grad=True)
    x_slow = torch.randn(2, 4, 3, 5, 6, generator=g, requires_grad=True)
    weight = torch.randn(7, 3, 3, 1, 1, generator=g, requires_grad=True)
    scale = (torch.rand(7, generator=g) + 0.5).requires_grad_(True)
    shift = torch.randn(7, generator=g, requires_grad=True)
    inputs = (clip, x_slow, weight, scale, shift)
    eager = block(*inputs)
    eager_grads = torch.autograd.grad(eager, inputs)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(*inputs)
    compiled_grads = torch.autograd.grad(compiled, inputs)
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_autocast_matches_reference_under_autocast(backend):
    _require(backend)
    x_slow, x_fast, weight = _lateral_inputs(2, 3, 4, 5, 9, 3, 5, 3, 2, 1)
    x_slow = x_slow.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference.lateral_concat(x_slow, x_fast, weight, 2, 1)
        out = lateral_concat(x_slow, x_fast, weight, 2, 1, backend=backend)
    assert out.dtype == expected.dtype == torch.bfloat16
    # both round the conv inputs to bf16 and the result to bf16; they may differ by a bf16 ulp or two
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize(
    ("slow_dtype", "affine_dtype", "out_dtype"),
    [
        (torch.float32, torch.float32, torch.float32),
        (torch.bfloat16, torch.float32, torch.float32),  # the affine promotes the bf16 conv, cat follows
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
    ],
)
def test_autocast_keeps_scale_and_shift_as_the_reference_does(backend, slow_dtype, affine_dtype, out_dtype):
    """Under autocast only the conv runs in bf16; ``* scale + shift`` is not an autocast op, so the
    reference multiplies the bf16 conv by scale and shift as they are and returns the promoted dtype.
    The public op used to round scale and shift to bf16 (a shift of 100.3 became 100.5) and to return
    bf16 where the reference returns fp32."""
    _require(backend)
    g = torch.Generator().manual_seed(11)
    x_slow = torch.randn(2, 3, 5, 5, 3, generator=g).to(slow_dtype)
    x_fast = torch.randn(2, 3, 9, 5, 3, generator=g)
    weight = torch.randn(6, 3, 3, 1, 1, generator=g) / 3
    scale = (1 + 0.1 * torch.randn(6, generator=g)).to(affine_dtype)
    shift = (100.3 + 0.1 * torch.randn(6, generator=g)).to(affine_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference.lateral_concat(x_slow, x_fast, weight, 2, 1, scale, shift, True)
        out = lateral_concat(x_slow, x_fast, weight, 2, 1, scale, shift, True, backend=backend)
    assert out.dtype == expected.dtype == out_dtype
    torch.testing.assert_close(out[:, :3], expected[:, :3], rtol=0, atol=0)
    # The reference rounds the conv (|conv| < 4 here) to bf16 before the affine, the op does not:
    # at most half a bf16 ulp of the conv times |scale| (< 0.01). Rounding shift to bf16 costs 0.2.
    atol = 0.02 if out_dtype == torch.float32 else 1.0  # bf16 output: one ulp at 100 is 0.5
    torch.testing.assert_close(out.float(), expected.float(), rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", ["reference", "cpu", None])
def test_lateral_concat_keeps_x_slows_memory_format_on_every_backend(backend, dtype):
    """The reference returned a contiguous result for channels_last_3d inputs (PyTorch's CPU conv3d
    returns one and cat follows it), unlike every kernel and the fake kernel."""
    _require(backend or "auto")
    g = torch.Generator().manual_seed(12)
    x_slow = (
        torch.randn(2, 3, 4, 5, 3, generator=g).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    )
    x_fast = (
        torch.randn(2, 2, 16, 5, 3, generator=g).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    )
    weight = torch.randn(4, 2, 5, 1, 1, generator=g).to(dtype)
    out = lateral_concat(x_slow, x_fast, weight, 4, 2, backend=backend)
    assert out.is_contiguous(memory_format=torch.channels_last_3d) and not out.is_contiguous()
    want = reference.lateral_concat(x_slow, x_fast, weight, 4, 2)
    assert want.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, want, **({} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}))
    out = lateral_concat(x_slow.contiguous(), x_fast, weight, 4, 2, backend=backend)
    assert out.is_contiguous()


def test_package_works_without_compiled_library():
    # sys.modules[name] = None makes `import slowfast_fast._C` raise ImportError, as an unbuilt package would.
    code = (
        "import sys, warnings, torch\n"
        "sys.modules['slowfast_fast._C'] = None\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import slowfast_fast\n"
        "from slowfast_fast import reference\n"
        "print(sum('slowfast_fast._C is not built' in str(w.message) for w in caught))\n"
        "print(slowfast_fast.available_backends('cpu'))\n"
        "xs, xf, w = torch.randn(1, 2, 4, 3, 3), torch.randn(1, 3, 8, 3, 3), torch.randn(4, 3, 3, 1, 1)\n"
        "out = slowfast_fast.ops.lateral_concat(xs, xf, w, 2, 1)\n"
        "print(torch.equal(out, reference.lateral_concat(xs, xf, w, 2, 1)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    warned, backends, equal = out.stdout.strip().splitlines()[-3:]
    assert warned == "1"
    assert "cpu" not in backends and "reference" in backends
    assert equal == "True"


def test_an_unknown_backend_name_is_refused_also_where_no_backend_runs():
    """An identity resample returns x without choosing a backend: a misspelt name passed silently there
    and raised at any other scale."""
    x = torch.randn(1, 2, 4, 3, 3)
    with pytest.raises(ValueError, match="unknown slowfast_fast backend 'cuda_'"):
        temporal_resample(x, 1.0, backend="cuda_")
    with pytest.raises(ValueError, match="unknown slowfast_fast backend"):
        pathway_split(x, 1.0, 1.0, backend="Reference")
    with pytest.raises(ValueError, match="unknown slowfast_fast backend"):
        slowfast_fast.ops.pathway_inputs(x, 4, 4, backend="fast")
    assert temporal_resample(x, 1.0, backend="reference") is x


def test_ops_run_on_meta_tensors():
    """Shape inference on the meta device (and models built under ``torch.device("meta")``): the
    autocast check raised there ("unknown device type for autocast"), on every backend."""
    x_slow, x_fast, weight = (t.to("meta") for t in _lateral_inputs(2, 4, 3, 6, 32, 5, 7, 5, 8, 2))
    for backend in (None, "reference"):
        out = lateral_concat(x_slow, x_fast, weight, 8, 2, backend=backend)
        assert out.device.type == "meta" and out.shape == (2, 10, 4, 5, 7)
    scale = torch.ones(6, device="meta")
    assert lateral_concat(x_slow, x_fast, weight, 8, 2, scale, scale, True).shape == (2, 10, 4, 5, 7)
    assert temporal_resample(x_fast, 0.25).shape == (2, 3, 8, 5, 7)


@pytest.mark.parametrize("backend", ["reference", *KERNEL_BACKENDS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resampling_a_sliced_channels_last_clip_gives_the_documented_layout(backend, dtype):
    """A channels_last_3d clip sliced along W is dense in neither format: every backend's output is
    contiguous (``output_memory_format``). The reference returned F.interpolate's own choice, which was
    channels_last_3d in fp32 and contiguous in fp64."""
    _require(backend)
    from slowfast_fast._layout import output_memory_format

    clip = torch.randn(2, 3, 8, 5, 6, dtype=dtype).contiguous(memory_format=torch.channels_last_3d)
    for x in (clip[..., ::2], clip[:, :, ::2], clip[:, :2]):
        fmt = output_memory_format(x)
        assert fmt == torch.contiguous_format
        out = temporal_resample(x, 0.5, backend=backend)
        assert torch.equal(out, x[:, :, ::2]) and out.is_contiguous(memory_format=fmt)
        slow, fast = pathway_split(x, 0.25, 0.5, backend=backend)
        assert slow.is_contiguous(memory_format=fmt) and fast.is_contiguous(memory_format=fmt)
