"""The CPU emulator that runs the CUDA kernels in CI (tests/cuda_emulation): its checks can fail.

test_cuda_kernels.py runs every CUDA kernel test on it (the ``emulated`` target); a green run there
means something only if the emulator catches the bugs it claims to. Here small kernels with those
bugs (tests/cuda_emulation/emulator_ops.cpp) must fail: a missing __syncthreads, reading a cp.async
buffer before waiting for it, copies left in flight, a misaligned cp.async, a barrier half the block
skips. Then the lateral kernels run under every thread order.
"""

from __future__ import annotations

import _cuda_emulation
import pytest
import test_cuda_kernels as ck
import torch

THREADS = 64  # emulator_ops.cpp's block


def _ops():
    return _cuda_emulation.load()


def _input(blocks=5):
    return torch.randn(blocks * THREADS, generator=torch.Generator().manual_seed(0))


def _neighbours(x):
    """Each thread's right neighbour within its block of THREADS."""
    return x.view(-1, THREADS).roll(-1, dims=1).reshape(-1)


@pytest.mark.parametrize("thread_order", [_cuda_emulation.FORWARD, _cuda_emulation.REVERSE])
def test_barrier_orders_shared_memory(thread_order):
    x = _input()
    with _cuda_emulation.order(thread_order):
        assert torch.equal(_ops().emulator_selftest("barrier", x), _neighbours(x))
        assert torch.equal(_ops().emulator_selftest("async", x), _neighbours(x))


@pytest.mark.parametrize("thread_order", [_cuda_emulation.FORWARD, _cuda_emulation.REVERSE])
@pytest.mark.parametrize("name", ["missing_barrier", "async_read_before_wait"])
def test_racy_kernels_read_poison(name, thread_order):
    """Without the barrier (or the wait) a thread reads a slot no thread has filled yet: NaN (shared
    memory is poisoned before each block), in every block, also when an earlier launch left the
    right values there."""
    x = _input()
    ops = _ops()
    ops.emulator_selftest("barrier", x)  # the right values are now in shared memory
    with _cuda_emulation.order(thread_order):
        got = ops.emulator_selftest(name, x)
    wrong = ~(got == _neighbours(x))
    assert got.isnan().view(-1, THREADS).any(dim=1).all()  # every block went wrong
    assert wrong.sum() >= x.numel() // THREADS


@pytest.mark.parametrize(
    "name,message",
    [
        ("async_never_waited", "cp.async copies in flight"),
        ("async_misaligned", "not aligned to 16 bytes"),
        ("divergent_barrier", "__syncthreads reached by some threads of a block after others exited"),
    ],
)
def test_invalid_kernels_raise(name, message):
    with pytest.raises(RuntimeError, match=message):
        _ops().emulator_selftest(name, _input())


def test_warp_shuffle_down():
    """Lane i adds lane i + d's value, or its own where i + d is past the warp (the hardware's rule):
    the same float32 additions in the same order as this simulation, so equal bit for bit."""
    x = _input()
    want = x.view(-1, 32).clone()
    for d in (16, 8, 4, 2, 1):
        lanes = torch.arange(32)
        src = torch.where(lanes + d < 32, lanes + d, lanes)
        want = want + want[:, src]
    got = _ops().emulator_selftest("warp_sum", x).view(-1, 32)
    assert torch.equal(got, want)
    torch.testing.assert_close(got[:, 0], x.view(-1, 32).sum(dim=1))


def test_counters_count_launches_and_barriers():
    before = _cuda_emulation.counters()
    _ops().emulator_selftest("async", _input(blocks=5))
    launches, blocks, barriers, copies = (
        a - b for a, b in zip(_cuda_emulation.counters(), before, strict=True)
    )
    assert (launches, blocks, barriers, copies) == (1, 5, 5, 5 * THREADS)


@pytest.mark.parametrize("thread_order", [_cuda_emulation.REVERSE, _cuda_emulation.ALTERNATE])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt", [ck.NC, ck.CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("name", ["14x14", "7x7", "5x6"])
def test_lateral_kernels_in_other_thread_orders(name, fmt, dtype, thread_order):
    """test_cuda_kernels.py runs threads in index order; a barrier missing between one thread's write
    and another's read (or read and overwrite) shows in one order or the other."""
    ck.T.name, ck.T.device, ck.T.ops, ck.T.public = "emulated", "cpu", _ops(), False
    geom = ck.ACCESS_GEOMETRIES[name]
    n, c_s, _, c_l, _, h, w = geom[:7]
    for relu in (True, False):  # grad_input's register and cp.async K loops
        inputs = ck._lateral_inputs(geom, dtype, fmt, affine=True, seed=11)
        grad_out = ck._rand(
            n,
            c_s + c_l,
            inputs[0].shape[2],
            h,
            w,
            dtype=dtype,
            fmt=fmt,
            gen=torch.Generator().manual_seed(12),
        )
        with _cuda_emulation.order(thread_order):
            ck._check_lateral(inputs, relu, grad_out, dtype, tf32=dtype == torch.float32)
