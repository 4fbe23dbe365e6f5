"""The CUDA kernels (csrc/cuda/) against the pure-PyTorch reference, on two targets:

* ``gpu``: the compiled library's CUDA kernels on a GPU (marked ``cuda``: skipped without one);
* ``emulated``: the same sources compiled for the CPU emulator of tests/cuda_emulation (fibers for
  threads, barriers, cp.async groups, warp shuffles and wmma emulated; see cuda_emulation.h), so that
  CI, which has no GPU, runs every kernel and every code path these tests reach. What the emulator
  cannot show (timing, registers, the hardware's own faults) is left to the GPU run.

The first test needs neither. Inputs are random
normals; shapes are odd on purpose, plus a few with channel/pixel counts that take the 16-byte
vector paths and several 64-wide tiles, and ACCESS_GEOMETRIES and offset views that take each
access width (16 bytes, 8 bytes, one element) of the forward's copy and GEMM.

Tolerances (errors are measured against an fp64 evaluation of the same rounded inputs, relative to
the largest magnitude of that fp64 result):
* fp32 with TF32 off: 1e-5. We sum the same products as the reference in fp32, in another order.
* fp64: 1e-12, for the same reason.
* fp16/bf16, and fp32 with TF32 on: at most twice the error of PyTorch's own computation at that
  precision (flash-attention's rule), or a floor of two units of the format's epsilon, whichever
  is larger. Tensor cores accumulate in fp32 and we round once, so this floor is generous.
* Resampling only moves values: bit-exact; its backward is exact wherever at most one output frame
  comes from each input frame, and fp32-accurate where several are summed.
"""

from __future__ import annotations

import pathlib
import re

import _cuda_emulation
import pytest
import test_relu_nan
import torch
import torch.nn.functional as F
from _tf32 import conv_tf32

from slowfast_fast import ops as sf_ops
from slowfast_fast import reference
from slowfast_fast._layout import output_memory_format

ROOT = pathlib.Path(__file__).resolve().parents[1]
CL = torch.channels_last_3d
NC = torch.contiguous_format
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
EPS = {torch.float32: 1.2e-7, torch.float16: 9.8e-4, torch.bfloat16: 7.9e-3}


def _registered_ops(source: str) -> set[str]:
    return set(re.findall(r'm\.impl\(\s*"(\w+)"', source))


def test_cuda_sources_register_every_op():
    """Each op declared in csrc/ops.cpp has exactly one CUDA kernel in csrc/cuda/*.cu (no GPU needed);
    the other .cu files only instantiate kernel templates (one dtype each, for a parallel build)."""
    declared = set(re.findall(r'm\.def\(\s*"(\w+)\(', (ROOT / "csrc" / "ops.cpp").read_text()))
    assert declared, "no schemas found in csrc/ops.cpp"
    registered: list[str] = []
    for path in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
        text = path.read_text()
        if "SLOWFAST_FAST_CUDA_LIBRARY_IMPL(m)" in text:
            registered += sorted(_registered_ops(text))
        else:
            instantiates = re.search(r"^template void \w+<", text, re.M)
            assert instantiates, f"{path.name} neither registers kernels nor instantiates any"
    assert sorted(registered) == sorted(declared)


cuda = pytest.mark.cuda


class _Target:
    """Where the kernels under test run (set by the ``target`` fixture): ``ops`` is the op namespace,
    ``device`` the tensors' device, ``public`` whether the public ops (``backend="cuda"``) reach them."""

    name = "gpu"
    device = "cuda"
    ops = torch.ops.slowfast_fast
    public = True


T = _Target()


@pytest.fixture(params=[pytest.param("gpu", marks=cuda), "emulated"])
def target(request):
    if request.param == "gpu":
        T.name, T.device, T.ops, T.public = "gpu", "cuda", torch.ops.slowfast_fast, True
    else:
        T.name, T.device, T.ops, T.public = "emulated", "cpu", _cuda_emulation.load(), False
        # Threads alternate direction phase by phase; at most 3 blocks, so the kernels' grid-stride
        # loops run several tiles per block (reusing shared memory) wherever a grid has more.
        _cuda_emulation.configure(_cuda_emulation.ALTERNATE, max_blocks=3)
    # The emulated kernels must really run (no silent fallback to another kernel): every test that
    # passes launched at least one, but those of empty batches, which launch nothing.
    before = _cuda_emulation.counters() if T.name == "emulated" else None
    yield T
    if T.name == "emulated":
        _cuda_emulation.configure()
    report = getattr(request.node, "rep_call", None)
    if before is not None and report is not None and report.passed and "empty" not in request.node.name:
        assert _cuda_emulation.counters()[0] > before[0], "no emulated kernel was launched"


@pytest.fixture(autouse=True)
def _kernels_built(request):
    """On a GPU machine a build without CUDA kernels fails the CUDA tests instead of skipping them."""
    if "cuda" in request.keywords and torch.cuda.is_available():
        assert torch._C._dispatch_has_kernel_for_dispatch_key("slowfast_fast::lateral_concat", "CUDA"), (
            "slowfast_fast._C was built without CUDA kernels"
        )


def _rand(*shape, dtype=torch.float32, fmt=NC, gen=None):
    t = torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)
    return t.to(T.device).contiguous(memory_format=fmt)


def _out_len(t_fast, k, s, p):
    return (t_fast + 2 * p - k) // s + 1


# (N, C_slow, C_fast, C_lat, T_fast, H, W, k, stride, padding)
GEOMETRIES = [
    (2, 3, 5, 7, 13, 3, 5, 5, 8, 2),  # s > k: frames never read
    (1, 4, 3, 6, 17, 5, 3, 7, 4, 3),
    (3, 2, 4, 5, 9, 2, 3, 3, 1, 1),
    (2, 5, 2, 3, 11, 1, 7, 1, 2, 0),  # k = 1
    (1, 1, 6, 9, 23, 3, 2, 2, 5, 1),
    (2, 6, 5, 4, 15, 3, 3, 4, 4, 0),
    (1, 3, 7, 11, 19, 2, 5, 6, 3, 5),  # padding = k - 1
    (2, 2, 1, 2, 8, 4, 1, 3, 7, 2),
    (1, 5, 3, 4, 12, 3, 3, 6, 6, 0),  # s == k
    (2, 24, 16, 32, 16, 8, 8, 5, 8, 2),  # 16-byte vector paths in both layouts, all dtypes
    (1, 40, 24, 72, 10, 11, 12, 3, 2, 1),  # 2 pixel tiles, 2 channel tiles, 2 reduction chunks
    (1, 8, 20, 130, 9, 9, 15, 7, 1, 3),  # 3 output-channel tiles, odd pixel count
    # C_fast > 64: grad_input's several output tiles (its outputs are x_fast's channels) and
    # grad_weight's several fast-channel tiles, as at R50's layer3 lateral (C_fast = 128)
    (1, 8, 130, 16, 9, 3, 5, 7, 2, 3),
    (2, 8, 128, 64, 16, 4, 4, 5, 8, 2),
]


def _lateral_inputs(geom, dtype, fmt, affine, seed=0):
    n, c_s, c_f, c_l, t_f, h, w, k, s, p = geom
    gen = torch.Generator().manual_seed(seed)
    t_s = _out_len(t_f, k, s, p)
    x_slow = _rand(n, c_s, t_s, h, w, dtype=dtype, fmt=fmt, gen=gen)
    x_fast = _rand(n, c_f, t_f, h, w, dtype=dtype, fmt=fmt, gen=gen)
    weight = _rand(c_l, c_f, k, 1, 1, dtype=dtype, gen=gen)
    scale = shift = None
    if affine:
        scale = (torch.randn(c_l, generator=gen, dtype=torch.float64).abs() + 0.5).to(dtype).to(T.device)
        shift = _rand(c_l, dtype=dtype, gen=gen)
    return x_slow, x_fast, weight, s, p, scale, shift


def _double(t):
    return None if t is None else t.detach().double()


def _err(got, want64):
    scale = want64.abs().max().clamp_min(1.0)
    return ((got.double() - want64).abs().max() / scale).item()


def _assert_close(got, same_dtype, want64, dtype, tf32=False):
    """got: our result; same_dtype: PyTorch's result at got's precision; want64: fp64 truth."""
    assert got.dtype == want64.dtype or got.dtype == dtype
    assert got.shape == want64.shape
    if dtype == torch.float64:
        bound = 1e-12
    elif dtype == torch.float32 and not tf32:
        bound = 1e-5
    else:
        eps = 2.0**-10 if (dtype == torch.float32 and tf32) else EPS[dtype]
        bound = max(2.0 * _err(same_dtype, want64), 2.0 * eps)
    assert _err(got, want64) <= bound


def _reference(inputs, relu, dtype=None):
    """The reference forward in ``dtype`` (fp64 when None)."""
    x_slow, x_fast, weight, s, p, scale, shift = inputs
    cast = _double if dtype is None else (lambda t: None if t is None else t.detach().to(dtype))
    return reference.lateral_concat(
        cast(x_slow), cast(x_fast), cast(weight), s, p, cast(scale), cast(shift), relu
    )


def _reference_grads(inputs, grad_out, dtype=None):
    """Grads of the reference without ReLU for (x_slow, x_fast, weight[, scale, shift]).

    With ReLU, callers pass grad_out already multiplied by the mask of OUR forward output: where a
    pre-activation is within rounding of 0 the mask of an fp64 forward may differ from ours, and
    the gradient is defined by the forward that was actually run.
    """
    x_slow, x_fast, weight, s, p, scale, shift = inputs
    cast = _double if dtype is None else (lambda t: None if t is None else t.detach().to(dtype))
    leaves = [cast(t) for t in (x_slow, x_fast, weight, scale, shift)]
    for t in leaves:
        if t is not None:
            t.requires_grad_(True)
    out = reference.lateral_concat(leaves[0], leaves[1], leaves[2], s, p, leaves[3], leaves[4], False)
    wanted = [t for t in leaves if t is not None]
    return torch.autograd.grad(out, wanted, grad_out.to(out.dtype))


def _ours(inputs, relu, grad_out):
    x_slow, x_fast, weight, s, p, scale, shift = inputs
    # detach() keeps each input's storage and offset, so the kernels see exactly the views the test
    # built (misaligned ones included); a clone would be freshly aligned.
    leaves = [
        None if t is None else t.detach().requires_grad_(True) for t in (x_slow, x_fast, weight, scale, shift)
    ]
    if T.public:
        out = sf_ops.lateral_concat(
            leaves[0], leaves[1], leaves[2], s, p, leaves[3], leaves[4], relu, backend="cuda"
        )
    else:
        out = T.ops.lateral_concat(leaves[0], leaves[1], leaves[2], s, p, leaves[3], leaves[4], relu)
    wanted = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, wanted, grad_out)
    return out.detach(), grads


def _masked(grad_out, out, c_slow, relu):
    if not relu:
        return grad_out
    return test_relu_nan.relu_mask(grad_out, out, c_slow)  # torch.relu's: passes where out is NaN


def _check_lateral(inputs, relu, grad_out, dtype, tf32):
    c_slow = inputs[0].shape[1]
    with conv_tf32(tf32):
        out, grads = _ours(inputs, relu, grad_out)
        same_out = _reference(inputs, relu, dtype)
        masked = _masked(grad_out, out, c_slow, relu)
        same_grads = _reference_grads(inputs, masked, dtype)
    want_out = _reference(inputs, relu)
    want_grads = _reference_grads(inputs, masked)

    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=output_memory_format(inputs[0]))
    assert torch.equal(out[:, :c_slow], inputs[0])  # the x_slow part of the concat is a copy
    _assert_close(out, same_out, want_out, dtype, tf32)
    for got, same, want in zip(grads, same_grads, want_grads, strict=True):
        assert got.shape == want.shape and got.dtype == dtype
        _assert_close(got, same, want, dtype, tf32)


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize(
    "affine,relu",
    # The GPU smoke run keeps the full epilogue; the other two only in `pytest -m cuda`.
    [
        pytest.param(False, False, marks=pytest.mark.slow),
        (True, True),
        pytest.param(True, False, marks=pytest.mark.slow),
    ],
)
def test_lateral_concat_forward_backward(geom, dtype, fmt, affine, relu, target):
    inputs = _lateral_inputs(geom, dtype, fmt, affine)
    n, c_s, _, c_l, _, h, w = geom[:7]
    grad_out = _rand(
        n, c_s + c_l, inputs[0].shape[2], h, w, dtype=dtype, fmt=fmt, gen=torch.Generator().manual_seed(1)
    )
    _check_lateral(inputs, relu, grad_out, dtype, tf32=False)


# Shapes that take each access width of the forward's x_slow copy and of the lateral GEMM's operand
# loads and output stores (16, 8 and, for 2-byte types, 4 bytes, or one element; see access_width and
# copy_rows in csrc/cuda/lateral_concat.cu), its flat K loop across taps, and both of its K loops:
# cp.async (accesses of 4 bytes or more, no ReLU mask) and registers (grad_input with the ReLU mask,
# 2-byte elements one at a time). (N, C_slow, C_fast, C_lat, T_fast, H, W, k, stride, padding); the
# widths named are fp16's / fp32's.
ACCESS_GEOMETRIES = {
    # H*W = 196: NCDHW 8-byte (fp16) / 16-byte (fp32) tiles; C_fast = 8 with k = 5: every K step of 16
    # spans two taps; copy rows of 2 x 16 x 196 elements in 16-byte units, several chunks per row.
    "14x14": (2, 16, 8, 16, 16, 14, 14, 5, 8, 2),
    # H*W = 49 and 15: NCDHW element-wide tiles (fp16: the register K loop; fp32: 4-byte cp.async);
    # one sample (a single copy row: its strides never matter) of 90 elements: a 16-byte body and a
    # 2-element tail; NDHWC C_slow = 3: 2- / 4-byte copy.
    "7x7": (2, 8, 8, 16, 16, 7, 7, 5, 8, 2),
    "5x3": (1, 3, 8, 5, 16, 5, 3, 5, 8, 2),
    # H*W = 30: NCDHW 4-byte (fp16) / 8-byte (fp32) tiles; NDHWC C_fast = 6 and C_slow = 6: 4-byte
    # (fp16) / 8-byte (fp32) operand loads, copy and output stores.
    "5x6": (2, 6, 6, 10, 12, 5, 6, 3, 4, 1),
    # C_fast = 12: NDHWC 8-byte (fp16) / 16-byte (fp32) operand loads, K steps crossing taps at 12.
    "3x4": (2, 4, 12, 12, 10, 3, 4, 3, 2, 1),
    # NCDHW copy rows of 2400 elements: 600 16-byte units (fp32), one tile per row with idle lanes.
    "10x12": (3, 10, 4, 6, 8, 10, 12, 3, 4, 1),
    # Four samples of 16 elements: several whole copy rows per block tile.
    "2x2": (4, 2, 3, 5, 6, 2, 2, 3, 3, 1),
}
ALL_DTYPES = (*DTYPES, torch.float64)


@pytest.mark.parametrize("name", list(ACCESS_GEOMETRIES))
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "linear"])
def test_lateral_concat_access_widths(name, dtype, fmt, relu, target):
    """With relu, grad_input applies the ReLU mask and so takes the register K loop; without, the
    cp.async one wherever its accesses are 4 bytes or wider."""
    geom = ACCESS_GEOMETRIES[name]
    inputs = _lateral_inputs(geom, dtype, fmt, affine=True, seed=7)
    n, c_s, _, c_l, _, h, w = geom[:7]
    grad_out = _rand(
        n, c_s + c_l, inputs[0].shape[2], h, w, dtype=dtype, fmt=fmt, gen=torch.Generator().manual_seed(8)
    )
    _check_lateral(inputs, relu, grad_out, dtype, tf32=False)


# (N, C_slow, C_fast, C_lat, T_fast, H, W, k, stride, padding), k = 2 * padding + 1 (test_relu_nan.py).
# H*W = 16: 16-byte units in NCDHW; the second also in NDHWC (C_slow, C_fast, C_lat multiples of 8),
# where the first's C_slow = 3 and C_fast = 5 take element-wide accesses.
RELU_NAN_GEOMETRIES = [test_relu_nan.CPU_SHAPE, (2, 8, 8, 16, 12, 4, 4, 3, 2, 1)]


@pytest.mark.parametrize("geom", RELU_NAN_GEOMETRIES, ids=["odd", "aligned"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("poison", test_relu_nan.POISONS)
def test_lateral_concat_relu_nan(geom, dtype, fmt, poison, target):
    """NaN and +-inf pre-activations through the ReLU as torch.relu: NaN kept in the forward, and
    the gradient passed where the output is NaN, by grad_input's mask (the register K loop) and
    grad_weight's (see test_relu_nan.py for the inputs and the checks)."""
    inputs, grad_out = test_relu_nan.poisoned_inputs(geom, dtype, fmt, poison, device=T.device)

    def run(leaves, relu):
        if T.public:
            return sf_ops.lateral_concat(*leaves, relu, backend="cuda")
        return T.ops.lateral_concat(*leaves, relu)

    with conv_tf32(False):
        test_relu_nan.check_relu_nan(inputs, grad_out, dtype, run)


@pytest.mark.parametrize("geom", RELU_NAN_GEOMETRIES, ids=["odd", "aligned"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("poison", test_relu_nan.POISONS)
def test_lateral_concat_relu_nan_backward(geom, dtype, fmt, poison, target):
    """The gradient ops alone, given the reference's forward output (NaN included) as the mask."""
    inputs, grad_out = test_relu_nan.poisoned_inputs(geom, dtype, fmt, poison, device=T.device)

    def backward(*args):
        return (T.ops.lateral_concat_grad_input(*args), *T.ops.lateral_concat_grad_weight(*args))

    with conv_tf32(False):
        test_relu_nan.check_backward_nan(inputs, grad_out, dtype, backward)


def _at_offset(t, offset):
    """t's values in the same memory format, stored `offset` elements into a larger buffer."""
    if t is None:
        return None
    cl = t.dim() == 5 and output_memory_format(t) == CL
    dense = t.permute(0, 2, 3, 4, 1) if cl else t  # the order the elements lie in memory
    buffer = torch.empty(dense.numel() + offset, dtype=t.dtype, device=t.device)
    view = buffer[offset:].view(dense.shape)
    view.copy_(dense)
    return view.permute(0, 4, 1, 2, 3) if cl else view


@pytest.mark.parametrize("offset", [1, 2, 4])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
def test_lateral_concat_offset_views(offset, dtype, fmt, target):
    """x_slow, x_fast and grad_out that start `offset` elements into their storage, so the copy and the
    GEMM take the narrower paths their alignment allows although the shapes allow 16 bytes (fp16 at
    offsets 1, 2, 4: 2-, 4-, 8-byte aligned; fp32 at 4 and fp64 at 2 and 4 are 16-byte aligned again)."""
    geom = ACCESS_GEOMETRIES["14x14"]
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(geom, dtype, fmt, affine=True, seed=9)
    inputs = (_at_offset(x_slow, offset), _at_offset(x_fast, offset), weight, s, p, scale, shift)
    for view, original in zip(inputs[:2], (x_slow, x_fast), strict=True):
        assert view.storage_offset() == offset and torch.equal(view, original)
        assert output_memory_format(view) == output_memory_format(original)
    n, c_s, _, c_l, _, h, w = geom[:7]
    grad_out = _rand(
        n, c_s + c_l, x_slow.shape[2], h, w, dtype=dtype, fmt=fmt, gen=torch.Generator().manual_seed(10)
    )
    _check_lateral(inputs, True, _at_offset(grad_out, offset), dtype, tf32=False)


@pytest.mark.parametrize("k", range(1, 8))
@pytest.mark.parametrize("s", range(1, 9))
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "linear"])
def test_lateral_concat_every_kernel_and_stride_channels_last(k, s, relu, target):
    """The tap runs of the flat K loop (forward: consecutive taps; grad_input: every s-th tap) with
    16-byte NDHWC tiles and K steps that span taps (C_fast = 8, C_lat = 16 in bf16). Without ReLU,
    grad_input takes the cp.async K loop; with it, the register loop that applies the mask."""
    p = (k - 1) // 2
    geom = (2, 8, 8, 16, 2 * s + k + 1, 3, 4, k, s, p)
    inputs = _lateral_inputs(geom, torch.bfloat16, CL, affine=True, seed=k * 10 + s)
    grad_out = _rand(
        2,
        8 + 16,
        inputs[0].shape[2],
        3,
        4,
        dtype=torch.bfloat16,
        fmt=CL,
        gen=torch.Generator().manual_seed(4),
    )
    _check_lateral(inputs, relu, grad_out, torch.bfloat16, tf32=False)


@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("geom", [GEOMETRIES[0], GEOMETRIES[9], GEOMETRIES[11]])
def test_lateral_concat_fp32conv_tf32(geom, fmt, target):
    """With torch.backends.cudnn.allow_tf32 (PyTorch's default) fp32 runs on TF32 tensor cores."""
    inputs = _lateral_inputs(geom, torch.float32, fmt, affine=True)
    n, c_s, _, c_l, _, h, w = geom[:7]
    grad_out = _rand(n, c_s + c_l, inputs[0].shape[2], h, w, fmt=fmt, gen=torch.Generator().manual_seed(2))
    _check_lateral(inputs, True, grad_out, torch.float32, tf32=True)


@pytest.mark.parametrize("k", range(1, 8))
@pytest.mark.parametrize("s", range(1, 9))
def test_lateral_concat_every_kernel_and_stride(k, s, target):
    p = (k - 1) // 2
    geom = (2, 3, 5, 6, 2 * s + k + 1, 3, 4, k, s, p)
    inputs = _lateral_inputs(geom, torch.float32, NC, affine=True, seed=k * 10 + s)
    grad_out = _rand(2, 3 + 6, inputs[0].shape[2], 3, 4, gen=torch.Generator().manual_seed(3))
    _check_lateral(inputs, True, grad_out, torch.float32, tf32=False)


def test_lateral_concat_mixed_layouts_and_noncontiguous(target):
    """x_fast in another layout than x_slow, a non-contiguous weight and grad_out compute the same."""
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(
        GEOMETRIES[10], torch.float32, CL, affine=True
    )
    x_fast = x_fast.contiguous()
    weight_nc = weight.transpose(0, 1).contiguous().transpose(0, 1)
    with conv_tf32(False):
        out = T.ops.lateral_concat(x_slow, x_fast, weight_nc, s, p, scale, shift, True)
        assert out.is_contiguous(memory_format=CL)
        want = T.ops.lateral_concat(x_slow.contiguous(), x_fast, weight, s, p, scale, shift, True)
        torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)  # other layout, same sums
        grad_out = torch.randn(out.shape[::-1], device=T.device).permute(4, 3, 2, 1, 0)
        gx = T.ops.lateral_concat_grad_input(grad_out, x_fast, weight_nc, scale, out, s, p)
        gx_ref = T.ops.lateral_concat_grad_input(
            grad_out.contiguous(), x_fast, weight, scale, out.contiguous(), s, p
        )
        torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lateral_concat_empty_batch(dtype, target):
    inputs = list(_lateral_inputs((2, 3, 5, 7, 13, 3, 5, 5, 8, 2), dtype, NC, affine=True))
    inputs[0] = inputs[0][:0]
    inputs[1] = inputs[1][:0]
    x_slow, x_fast, weight, s, p, scale, shift = inputs
    out = T.ops.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift, True)
    assert out.shape == (0, 3 + 7, x_slow.shape[2], 3, 5)
    grad_out = torch.zeros_like(out)
    gx = T.ops.lateral_concat_grad_input(grad_out, x_fast, weight, scale, out, s, p)
    assert gx.shape == x_fast.shape
    gw, gs, gb = T.ops.lateral_concat_grad_weight(grad_out, x_fast, weight, scale, out, s, p)
    assert gw.shape == weight.shape and gs.shape == (7,) and gb.shape == (7,)
    assert not gw.any() and not gs.any() and not gb.any()


def test_lateral_concat_grad_weight_large_reduction(target):
    """Many splits of the pixel reduction (batch x frames x pixels far above one block's share)."""
    inputs = _lateral_inputs((4, 8, 32, 64, 32, 28, 28, 5, 8, 2), torch.float32, CL, affine=True)
    x_slow, x_fast, weight, s, p, scale, shift = inputs
    with conv_tf32(False):
        out = T.ops.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift, True)
        grad_out = torch.randn_like(out)
        got = T.ops.lateral_concat_grad_weight(grad_out, x_fast, weight, scale, out, s, p)
    want = _reference_grads(inputs, _masked(grad_out, out, x_slow.shape[1], True))
    for g, w in zip(got, want[2:], strict=True):
        assert _err(g, w) <= 1e-5


def test_lateral_concat_grad_weight_deterministic(target):
    """Under torch.use_deterministic_algorithms the split reduction gives the same bits every call."""
    inputs = _lateral_inputs((4, 8, 32, 64, 32, 28, 28, 5, 8, 2), torch.float32, CL, affine=True)
    x_slow, x_fast, weight, s, p, scale, shift = inputs
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        out = T.ops.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift, True)
        grad_out = torch.randn_like(out)
        first = T.ops.lateral_concat_grad_weight(grad_out, x_fast, weight, scale, out, s, p)
        second = T.ops.lateral_concat_grad_weight(grad_out, x_fast, weight, scale, out, s, p)
    finally:
        torch.use_deterministic_algorithms(before)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
def test_lateral_concat_opcheck(dtype, fmt, target):
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(GEOMETRIES[0], dtype, fmt, affine=True)
    for relu in (False, True):
        args = (x_slow, x_fast, weight.requires_grad_(), s, p, scale, shift, relu)
        torch.library.opcheck(T.ops.lateral_concat, args)
    out = T.ops.lateral_concat(x_slow, x_fast, weight.detach(), s, p, scale, shift, True)
    grad_out = torch.randn_like(out)
    torch.library.opcheck(
        T.ops.lateral_concat_grad_input, (grad_out, x_fast, weight.detach(), scale, out, s, p)
    )
    torch.library.opcheck(
        T.ops.lateral_concat_grad_weight, (grad_out, x_fast, weight.detach(), scale, out, s, p)
    )


@pytest.mark.slow  # inductor compiles for tens of seconds: not in the GPU smoke run
@cuda
@pytest.mark.parametrize("target", ["gpu"], indirect=True)  # inductor on the emulator: minutes, no new path
def test_lateral_concat_torch_compile_fullgraph(target):
    x_slow, x_fast, weight, s, p, scale, shift = _lateral_inputs(
        GEOMETRIES[9], torch.float32, CL, affine=True
    )

    def f(a, b, w):
        return T.ops.lateral_concat(a, b, w, s, p, scale, shift, True).sum(dim=1)

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x_slow, x_fast, weight), f(x_slow, x_fast, weight))


# Resampling: rates with float rounding subtleties (1/3, 1/7, 0.37, 2.5) and plain ones.
SCALES = [1 / 8, 1 / 4, 1 / 3, 1 / 7, 0.37, 0.5, 2.5, 3.0]
RESAMPLE_SHAPES = [(2, 3, 32, 7, 9), (1, 5, 23, 4, 4), (3, 8, 17, 8, 8), (1, 1, 7, 1, 3)]


@pytest.mark.parametrize("scale_factor", SCALES)
@pytest.mark.parametrize("shape", RESAMPLE_SHAPES)
@pytest.mark.parametrize(
    "dtype",
    # fp16 and fp64 move the same bytes as bf16 and fp32 pairs: not in the GPU smoke run.
    [torch.float32, torch.bfloat16]
    + [pytest.param(t, marks=pytest.mark.slow) for t in (torch.float16, torch.float64)],
)
@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
def test_temporal_resample_bit_exact(scale_factor, shape, dtype, fmt, target):
    if reference.resampled_length(shape[2], scale_factor) < 1:
        pytest.skip("empty output")
    x = _rand(*shape, dtype=dtype, fmt=fmt).requires_grad_(True)
    out = T.ops.temporal_resample(x, scale_factor)
    want = F.interpolate(x, mode="nearest", scale_factor=(scale_factor, 1.0, 1.0))
    assert out.is_contiguous(memory_format=output_memory_format(x))
    assert torch.equal(out, want)

    grad = _rand(*out.shape, dtype=dtype, fmt=fmt, gen=torch.Generator().manual_seed(5))
    got = T.ops.temporal_resample_backward(grad, shape[2], scale_factor)
    (want_grad,) = torch.autograd.grad(want, x, grad)
    assert got.is_contiguous(memory_format=output_memory_format(grad))
    if scale_factor <= 1.0:
        assert torch.equal(got, want_grad)
    else:  # several output frames per input frame: sums, accurate to a few units of rounding
        x64 = x.detach().double().requires_grad_(True)
        interp64 = F.interpolate(x64, mode="nearest", scale_factor=(scale_factor, 1.0, 1.0))
        (want64,) = torch.autograd.grad(interp64, x64, grad.double())
        tol = 4 * EPS.get(dtype, 1e-15)
        torch.testing.assert_close(got.double(), want64, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("scales", [(1 / 8, 1 / 2), (1 / 3, 1 / 7), (0.25, 2.5)])
def test_pathway_split_bit_exact(dtype, fmt, scales, target):
    x = _rand(2, 3, 19, 5, 6, dtype=dtype, fmt=fmt).requires_grad_(True)
    if T.public:
        slow, fast = sf_ops.pathway_split(x, *scales, backend="cuda")
    else:
        slow, fast = T.ops.pathway_split(x, *scales)
    want = [F.interpolate(x, mode="nearest", scale_factor=(sc, 1.0, 1.0)) for sc in scales]
    assert torch.equal(slow, want[0]) and torch.equal(fast, want[1])
    g_slow, g_fast = torch.randn_like(slow), torch.randn_like(fast)
    (got,) = torch.autograd.grad((slow, fast), x, (g_slow, g_fast))
    (ref,) = torch.autograd.grad(want, x, (g_slow, g_fast))
    torch.testing.assert_close(got, ref)


def test_resample_unaligned_view(target):
    """A view starting at an odd element takes the narrow copy path and still matches exactly."""
    base = torch.randn(2 * 3 * 17 * 5 * 5 + 1, device=T.device, dtype=torch.float16)
    x = base[1:].view(2, 3, 17, 5, 5)
    assert torch.equal(
        T.ops.temporal_resample(x, 1 / 3), F.interpolate(x, mode="nearest", scale_factor=(1 / 3, 1, 1))
    )


@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
def test_resample_empty_batch(fmt, target):
    x = torch.randn(0, 3, 16, 4, 4, device=T.device).contiguous(memory_format=fmt)
    assert T.ops.temporal_resample(x, 0.25).shape == (0, 3, 4, 4, 4)
    slow, fast = T.ops.pathway_split(x, 0.125, 0.5)
    assert slow.shape == (0, 3, 2, 4, 4) and fast.shape == (0, 3, 8, 4, 4)
    assert (
        T.ops.temporal_resample_backward(torch.randn(0, 3, 4, 4, 4, device=T.device), 16, 0.25).shape
        == x.shape
    )


@pytest.mark.parametrize("fmt", [NC, CL], ids=["ncdhw", "ndhwc"])
def test_resample_opcheck(fmt, target):
    x = _rand(2, 3, 13, 4, 5, fmt=fmt).requires_grad_(True)
    torch.library.opcheck(T.ops.temporal_resample, (x, 1 / 3))
    torch.library.opcheck(T.ops.pathway_split, (x, 1 / 4, 1 / 2))
    torch.library.opcheck(T.ops.temporal_resample_backward, (_rand(2, 3, 4, 4, 5, fmt=fmt), 13, 1 / 3))


@pytest.mark.slow  # inductor compiles for tens of seconds: not in the GPU smoke run
@cuda
@pytest.mark.parametrize("target", ["gpu"], indirect=True)  # inductor on the emulator: minutes, no new path
def test_resample_torch_compile_fullgraph(target):
    x = _rand(2, 3, 16, 6, 6, fmt=CL)

    def f(t):
        slow, fast = T.ops.pathway_split(t, 0.125, 0.5)
        return slow.sum() + fast.sum()

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x))
