"""The CPU backward kernels of lateral_concat on shapes that reach each of their code paths.

csrc/cpu/lateral_concat.cpp computes grad_x_fast by pixel blocks: a task owns pixels
[p0, p0 + size) of every frame of one sample and walks the output frames upwards, storing the
first contribution to a fast frame and adding the later ones (fp16/bf16 in an fp32 ring slot that
is rounded after the last one), and zeroing the fast frames no tap reads. grad_weight runs one
GEMM per (output frame, tap) on the fast frame in place, with the per-channel sums as a GEMM with
a ones vector. The shapes here put those paths to work: several pixel blocks per frame with a
shorter last block (k*C_fast*H*W past the kernel's 64K-element budget, or one sample on two
threads), up to three contributions per fast frame (stride < k, stride 1), fast frames no tap
reads (stride > k, and trailing frames past the last tap), taps in the padding, k = 1 and H*W = 1;
on one and two threads (the block split depends on the thread count), in both layouts, every dtype.

Tolerances follow test_cpu_kernels.py's (its module docstring): fp32 at rtol = atol = 1e-5 for
grad_x_fast and atol 1e-5 * sqrt(reduction length) for the weight and per-channel gradients (see
test_grads_fp32); fp64 at 1e-10; fp16/bf16 at most
twice PyTorch's own error at that precision against an fp64 evaluation (or one epsilon of the
output's magnitude).
"""

from __future__ import annotations

import pytest
import torch
from test_cpu_kernels import _assert_lowp_close, _double, _grad_truth, _rand

from slowfast_fast import _extension, reference
from slowfast_fast._layout import output_memory_format

pytestmark = pytest.mark.skipif(
    not _extension.has_kernels("CPU"), reason="slowfast_fast._C built without CPU kernels"
)

OPS = torch.ops.slowfast_fast
CL = torch.channels_last_3d
NC = torch.contiguous_format

# (N, C_slow, C_fast, C_lat, T_fast, H, W, k, stride, padding)
SHAPES = [
    (1, 3, 37, 21, 12, 17, 17, 7, 4, 3),  # 259 x 289 > 64K: blocks of 160 + 129 pixels; 2 taps per frame
    (1, 2, 16, 10, 13, 30, 31, 5, 2, 2),  # 80 x 930: blocks of 480 + 450; up to 3 taps per frame
    (1, 3, 8, 24, 29, 23, 29, 5, 8, 2),  # stride > k: frames 3-5, 11-13, 19-21 and 27-28 unread
    (2, 2, 5, 7, 10, 5, 7, 3, 1, 0),  # stride 1 without padding: 3 taps per inner frame
    (2, 1, 3, 4, 9, 1, 1, 2, 2, 1),  # H*W = 1
    (1, 2, 4, 6, 7, 5, 5, 1, 3, 0),  # k = 1: frames 1, 2, 4, 5 unread
]


def _case(shape, dtype, fmt, relu, with_scale, seed=0):
    n, c_s, c_f, c_l, t_f, h, w, k, s, p = shape
    gen = torch.Generator().manual_seed(seed)
    t_s = (t_f + 2 * p - k) // s + 1
    x_slow = _rand(n, c_s, t_s, h, w, dtype=dtype, fmt=fmt, gen=gen)
    x_fast = _rand(n, c_f, t_f, h, w, dtype=dtype, fmt=fmt, gen=gen)
    weight = _rand(c_l, c_f, k, 1, 1, dtype=dtype, gen=gen)
    scale = (_rand(c_l, dtype=torch.float64, gen=gen).abs() + 0.5).to(dtype) if with_scale else None
    shift = _rand(c_l, dtype=dtype, gen=gen)
    out = reference.lateral_concat(x_slow, x_fast, weight, s, p, scale, shift, relu) if relu else None
    grad_out = _rand(n, c_s + c_l, t_s, h, w, dtype=dtype, fmt=fmt, gen=gen)
    return grad_out, x_fast, weight, scale, out, s, p


def _ours(args):
    return (OPS.lateral_concat_grad_input(*args), *OPS.lateral_concat_grad_weight(*args))


def _truth(args):
    return _grad_truth(*(_double(t) if isinstance(t, torch.Tensor) else t for t in args))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fmt", [NC, CL])
@pytest.mark.parametrize("relu,with_scale", [(False, False), (True, True), (False, True)])
def test_grads_fp32(threads, shape, fmt, relu, with_scale):
    args = _case(shape, torch.float32, fmt, relu, with_scale)
    ours = _ours(args)
    assert ours[0].shape == args[1].shape
    assert ours[0].is_contiguous(memory_format=output_memory_format(args[1]))
    # grad_x_fast sums at most C_lat * ceil(k / s) products; the weight and per-channel gradients
    # sum m = N * T_slow * H * W of them (up to 6510 here), values of size ~sqrt(m), where fp32 sums
    # in another order differ by ~eps * m at worst: atol 1e-5 * sqrt(m) (observed: at most 4e-5 at m = 6510).
    n, t_slow, hw = shape[0], args[0].shape[2], shape[5] * shape[6]
    atols = [1e-5] + [1e-5 * max(1.0, (n * t_slow * hw) ** 0.5)] * 3
    for got, want, atol in zip(ours, _truth(args), atols, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fmt", [NC, CL])
def test_grads_fp64(threads, shape, fmt):
    args = _case(shape, torch.float64, fmt, relu=True, with_scale=True)
    for got, want in zip(_ours(args), _truth(args), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", [NC, CL])
def test_grads_low_precision(threads, shape, dtype, fmt):
    args = _case(shape, dtype, fmt, relu=True, with_scale=True)
    ref = _grad_truth(*args)  # PyTorch's own conv backward at this precision
    for got, r, want in zip(_ours(args), ref, _truth(args), strict=True):
        assert got.dtype == dtype
        _assert_lowp_close(got, r, want)


@pytest.mark.parametrize("fmt", [NC, CL])
def test_unread_fast_frames_get_zero_gradient(fmt):
    """Fast frames no tap reads get exactly zero, whatever was in the memory before (the kernel
    writes every element of grad_x_fast; nothing is pre-zeroed for it)."""
    args = _case(SHAPES[2], torch.float32, fmt, relu=False, with_scale=False)
    for _ in range(3):  # later calls may reuse freed memory holding earlier results
        gx = OPS.lateral_concat_grad_input(*args)
        unread = [3, 4, 5, 11, 12, 13, 19, 20, 21, 27, 28]
        read = [f for f in range(gx.shape[2]) if f not in unread]
        assert torch.equal(gx[:, :, unread], torch.zeros_like(gx[:, :, unread]))
        assert gx[:, :, read].abs().amin(dim=(0, 1, 3, 4)).gt(0).all()
