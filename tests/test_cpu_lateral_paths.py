"""Each CPU forward path of lateral_concat against the reference, forced one at a time.

csrc/cpu/lateral_concat.cpp picks between two forwards by a measured rule: the SIMD micro-kernel
(csrc/cpu/lateral_simd.cpp, AVX2 or AVX-512) and one BLAS GEMM per block of gathered columns
("blas"). SLOWFAST_FAST_CPU_LATERAL forces one, so every path is tested here on
every shape whatever the rule would choose; ATEN_CPU_CAPABILITY=avx2 (in a subprocess: the CPU's
vector width is read once) reaches the 8-lane kernel on an AVX-512 CPU.

The shapes put the SIMD kernel's vectorized dimension (H*W in NCDHW, C_lat in channels_last_3d)
below, at, and just past multiples of 8 and 16, so the block tails (the last block shifted back to
overlap) and the single-vector blocks run; C_lat below and above the register block's row count
(8 or 16 channels in NCDHW, 6 or 12 pixels in channels_last_3d); and temporal padding that removes
taps from the first frames.

Tolerances: fp32 at rtol = atol = 1e-5 as in test_cpu_kernels.py (the same sums in another order;
the longest reduction here is k*C_fast = 259 products of O(1) terms, so differences stay ~1e-5 at
worst on values of size ~20, hence atol 1e-4 there); fp16/bf16 by the rule of test_cpu_kernels.py:
at most twice the reference's own error against an fp64 evaluation, or one epsilon of the output.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from slowfast_fast import _extension, reference
from slowfast_fast._layout import output_memory_format

pytestmark = pytest.mark.skipif(
    not _extension.has_kernels("CPU"), reason="slowfast_fast._C built without CPU kernels"
)

OPS = torch.ops.slowfast_fast
CL = torch.channels_last_3d
NC = torch.contiguous_format
PATHS = ("simd", "blas")

# (N, C_slow, C_fast, C_lat, T_fast, H, W, k, stride, padding)
SHAPES = [
    (2, 3, 5, 16, 32, 4, 4, 5, 8, 2),  # H*W = 16 = one AVX-512 vector, C_lat one vector; padded t=0
    (1, 2, 3, 17, 19, 3, 5, 3, 2, 1),  # H*W = 15 (< 16: 8 lanes), C_lat 17: a shifted tail
    (2, 4, 7, 9, 21, 7, 7, 7, 4, 3),  # H*W = 49: three vectors and a tail, C_lat 9 < row block
    (1, 5, 4, 33, 16, 5, 7, 2, 3, 0),  # H*W = 35, C_lat 33, k = 2 without padding
    (2, 2, 6, 40, 24, 11, 9, 5, 8, 2),  # H*W = 99: blocks of three vectors, then single ones
    (1, 3, 37, 21, 20, 3, 3, 7, 4, 3),  # k*C_fast = 259: past the rule's threshold
    (1, 2, 2, 8, 9, 2, 4, 3, 1, 1),  # H*W = 8 and C_lat 8: exactly one AVX2 vector, stride 1
    (2, 3, 5, 7, 11, 2, 3, 5, 8, 2),  # H*W = 6 and C_lat 7: too small for any vector (falls back)
    (1, 3, 37, 21, 12, 17, 17, 7, 4, 3),  # blas: 259 x 289 columns split into pixel blocks 252 + 37
    (2, 2, 3, 300, 9, 16, 16, 3, 2, 1),  # C_lat 300: many register blocks of output channels
]


def _inputs(shape, dtype, fmt, affine, seed=0):
    n, c_s, c_f, c_l, t_f, h, w, k, s, p = shape
    gen = torch.Generator().manual_seed(seed)
    t_s = (t_f + 2 * p - k) // s + 1

    def rand(*size):
        return torch.randn(*size, generator=gen, dtype=torch.float64)

    x_slow = rand(n, c_s, t_s, h, w).to(dtype).contiguous(memory_format=fmt)
    x_fast = rand(n, c_f, t_f, h, w).to(dtype).contiguous(memory_format=fmt)
    weight = rand(c_l, c_f, k, 1, 1).to(dtype)
    scale = (rand(c_l).abs() + 0.5).to(dtype) if affine else None
    shift = rand(c_l).to(dtype) if affine else None
    return x_slow, x_fast, weight, s, p, scale, shift


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setenv("SLOWFAST_FAST_CPU_LATERAL", request.param)
    return request.param


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fmt", [NC, CL])
@pytest.mark.parametrize("affine,relu", [(False, False), (True, True)])
def test_forward_fp32(path, threads, shape, fmt, affine, relu):
    x_slow, x_fast, weight, s, p, scale, shift = _inputs(shape, torch.float32, fmt, affine)
    out = OPS.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift, relu)
    ref = reference.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift, relu)
    assert out.is_contiguous(memory_format=output_memory_format(x_slow))
    assert torch.equal(out[:, : x_slow.shape[1]], x_slow)
    atol = 1e-4 if shape[2] * shape[7] > 200 else 1e-5
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", [NC, CL])
def test_forward_low_precision(path, shape, dtype, fmt):
    args = _inputs(shape, dtype, fmt, affine=True)
    x_slow, x_fast, weight, s, p, scale, shift = args
    out = OPS.lateral_concat(*args, True)
    assert out.dtype == dtype and out.is_contiguous(memory_format=output_memory_format(x_slow))
    truth = reference.lateral_concat(
        *(t.double() for t in (x_slow, x_fast, weight)), s, p, scale.double(), shift.double(), True
    )
    ref = reference.lateral_concat(*args, True)
    err = (out.double() - truth).abs().max().item()
    err_ref = (ref.double() - truth).abs().max().item()
    bound = max(2 * err_ref, torch.finfo(dtype).eps * truth.abs().max().item())
    assert err <= bound, f"error {err} exceeds {bound}"


@pytest.mark.parametrize("fmt", [NC, CL])
def test_forward_fp64_every_path(path, fmt):
    args = _inputs(SHAPES[2], torch.float64, fmt, affine=True)
    out = OPS.lateral_concat(*args, True)
    torch.testing.assert_close(out, reference.lateral_concat(*args, True), rtol=1e-10, atol=1e-10)


def test_paths_agree_with_each_other(monkeypatch):
    """The forwards compute the same function: fp32 results within rounding of each other."""
    args = _inputs(SHAPES[4], torch.float32, CL, affine=True)
    outs = {}
    for name in PATHS:
        monkeypatch.setenv("SLOWFAST_FAST_CPU_LATERAL", name)
        outs[name] = OPS.lateral_concat(*args, True)
    torch.testing.assert_close(outs["simd"], outs["blas"], rtol=1e-5, atol=1e-5)


def test_avx2_kernel_in_a_subprocess():
    """The 8-lane kernel on every shape, both layouts, fp32 and bf16, 2 threads."""
    script = f"""
import torch, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import test_cpu_lateral_paths as t
from slowfast_fast import reference
torch.set_num_threads(2)
for shape in t.SHAPES:
    for fmt in (t.NC, t.CL):
        for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, None)):
            args = t._inputs(shape, dtype, fmt, affine=True)
            out = t.OPS.lateral_concat(*args, True)
            ref = reference.lateral_concat(*args, True)
            if tol is None:
                wide = [a.double() if torch.is_tensor(a) else a for a in args]
                truth = reference.lateral_concat(*wide, True)
                err = (out.double() - truth).abs().max().item()
                eps = torch.finfo(dtype).eps
                bound = max(2 * (ref.double() - truth).abs().max().item(), eps * truth.abs().max().item())
                assert err <= bound, (shape, fmt, err, bound)
            else:
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=tol)
print("checked", len(t.SHAPES) * 4)
"""
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", SLOWFAST_FAST_CPU_LATERAL="simd")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checked {len(SHAPES) * 4}" in done.stdout


@pytest.mark.parametrize("config", [(5, 8, 2, 32), (7, 4, 3, 32)])  # 4x16 and 8x8: k, stride, padding, T
@pytest.mark.parametrize("c_fast", [8, 32, 64, 128])  # the R50 fusion points: k*C_fast from 40 to 896
@pytest.mark.parametrize("fmt", [NC, CL])
@pytest.mark.parametrize("side", [4, 16])  # the rule also looks at the frame: 16 or 256 pixels
def test_rule_at_r50_fusion_points(config, c_fast, fmt, side):
    """Whatever path the rule picks (no override) at R50's channel counts, on small and large frames."""
    k, s, p, t_fast = config
    shape = (2, 8 * c_fast, c_fast, 2 * c_fast, t_fast, side, side, k, s, p)
    args = _inputs(shape, torch.float32, fmt, affine=True)
    out = OPS.lateral_concat(*args, True)
    ref = reference.lateral_concat(*args, True)
    # Up to 896 products of O(1) terms per value and 5M values at 16x16: fp32 sums in another order
    # differ by up to ~2e-4 there. So against an fp64 evaluation: no worse than 4x the reference's
    # own fp32 error (the max errors of two summation orders over millions of outputs measured
    # within 2.5x of each other; a wrong tap or index is off by O(1)), with a 1e-5 floor.
    truth = reference.lateral_concat(*(a.double() if isinstance(a, torch.Tensor) else a for a in args), True)
    err = (out.double() - truth).abs().max().item()
    err_ref = (ref.double() - truth).abs().max().item()
    assert err <= max(4 * err_ref, 1e-5), (err, err_ref)
