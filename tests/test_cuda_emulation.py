"""The CPU emulator that runs the CUDA kernels in CI (tests/cuda_emulation): its checks can fail.

test_cuda_kernels.py runs every CUDA kernel test on it (the ``emulated`` target); a green run there
means something only if the emulator catches the bugs it claims to. Here small kernels with those
bugs (tests/cuda_emulation/emulator_ops.cpp) must fail: a missing __syncthreads, reading a cp.async
buffer before waiting for it, copies left in flight, a misaligned cp.async, a barrier half the block
skips. Then the lateral kernels run under every thread order. Last, the AddressSanitizer build of
the emulator (in subprocesses, which preload libasan) must report out-of-bounds accesses, and the
CUDA kernel tests must pass on it without a report.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import _cuda_emulation
import pytest
import test_cuda_kernels as ck
import torch
from _tf32 import conv_tf32

THREADS = 64  # emulator_ops.cpp's block
ROOT = pathlib.Path(__file__).resolve().parents[1]


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
        assert torch.equal(_ops().emulator_selftest("barrier_two_blocks", x), _neighbours(x))  # grid stride
        assert torch.equal(_ops().emulator_selftest("async", x), _neighbours(x))
        x6 = _input(blocks=6)  # 3 blocks: each reads its tile, then refills from the other half
        half = x6.numel() // 2
        assert torch.equal(_ops().emulator_selftest("async_refill", x6)[:half], _neighbours(x6[:half]))


@pytest.mark.parametrize("thread_order", [_cuda_emulation.FORWARD, _cuda_emulation.REVERSE])
@pytest.mark.parametrize("name", ["missing_barrier", "async_read_before_wait"])
def test_racy_kernels_read_poison(name, thread_order):
    """Without the barrier (or the wait) a thread reads a slot no thread has filled yet: NaN (the
    kernel's __shared__ variable, a template's static, is filled with NaN at each block's start), in
    every block, also when an earlier launch left the right values there."""
    x = _input()
    ops = _ops()
    ops.emulator_selftest("barrier", x)  # the right values are now in shared memory
    with _cuda_emulation.order(thread_order):
        got = ops.emulator_selftest(name, x)
    wrong = ~(got == _neighbours(x))
    assert got.isnan().view(-1, THREADS).any(dim=1).all()  # every block went wrong
    assert wrong.sum() >= x.numel() // THREADS


@pytest.mark.parametrize("thread_order", [_cuda_emulation.FORWARD, _cuda_emulation.REVERSE])
def test_missing_barrier_shows_on_later_grid_stride_trips(thread_order):
    """Two blocks loop over five tiles: on a block's later trips its shared memory holds the previous
    tile's values (not NaN), and the missing barrier still gives wrong results there."""
    x = _input()
    with _cuda_emulation.order(thread_order):
        got = _ops().emulator_selftest("missing_barrier_two_blocks", x)
    wrong = ~(got == _neighbours(x)).view(-1, THREADS)
    assert wrong.any(dim=1).all()  # every tile, first trips (NaN) and later ones (stale values)


@pytest.mark.parametrize("thread_order", [_cuda_emulation.FORWARD, _cuda_emulation.REVERSE])
def test_refilling_a_slot_still_being_read_shows(thread_order):
    """A cp.async into a slot another thread has not read yet (no barrier between): that reader gets
    the new value or the poison of a copy in flight, not the old value."""
    x = _input(blocks=6)
    half = x.numel() // 2
    with _cuda_emulation.order(thread_order):
        got = _ops().emulator_selftest("async_refill_without_barrier", x)[:half]
    assert not torch.equal(got, _neighbours(x[:half]))


def test_every_shared_variable_is_poisoned_in_emulation():
    """Each __shared__ declaration in csrc/cuda is followed by SLOWFAST_FAST_SHARED_POISON(its name):
    without it the emulator would not fill it with NaN per block (see cuda_emulation.h)."""
    found = 0
    for path in sorted((ROOT / "csrc" / "cuda").glob("*.cu*")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            decl = re.match(r"\s*__shared__ .*?(\w+)\[.*\];", line)
            if decl:
                found += 1
                assert f"SLOWFAST_FAST_SHARED_POISON({decl.group(1)});" in lines[i + 1], (
                    f"{path.name}:{i + 1}"
                )
    assert found >= 3


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


def test_wmma_calls_must_reach_every_lane():
    """store_matrix_sync by all 32 lanes of each warp stores the tile; by half of them it fails the
    launch (warp-collective on the GPU: undefined if some lanes skip it)."""
    got = _ops().emulator_selftest("wmma_store", _input())
    assert torch.equal(got[:256], torch.full((256,), 2.5)) and not got[256:].any()
    with pytest.raises(RuntimeError, match="different numbers of warp-collective calls"):
        _ops().emulator_selftest("wmma_store_half_warp", _input())


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


@pytest.mark.parametrize("thread_order", [_cuda_emulation.FORWARD, _cuda_emulation.REVERSE])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt", [ck.NC, ck.CL], ids=["ncdhw", "ndhwc"])
@pytest.mark.parametrize("name", ["14x14", "7x7", "5x6"])
def test_lateral_kernels_in_other_thread_orders(name, fmt, dtype, thread_order, monkeypatch):
    """test_cuda_kernels.py runs threads in alternating order; a barrier missing between one thread's
    write and another's read (or read and overwrite) shows in one order or the other, so these run in
    each (two blocks, so every block loops over several tiles)."""
    monkeypatch.setattr(ck.T, "name", "emulated")
    monkeypatch.setattr(ck.T, "device", "cpu")
    monkeypatch.setattr(ck.T, "ops", _ops())
    monkeypatch.setattr(ck.T, "public", False)
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
        with _cuda_emulation.order(thread_order, max_blocks=2):
            ck._check_lateral(inputs, relu, grad_out, dtype, tf32=dtype == torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_weight_takes_the_cp_async_ring_where_it_claims(dtype):
    """channels_last_3d without a ReLU mask, with 16-byte channel units: the CUDA grad_weight fetches
    its tiles with cp.async (the emulator counts them); with the mask, or in NCDHW, it goes through
    registers and issues none. Every path gives the reference's sums."""
    ops = _ops()
    gen = torch.Generator().manual_seed(3)
    n, c_s, c_f, c_l, t_f, k, s, p = (2, 8, 16, 32, 16, 5, 8, 2)
    t_s = (t_f + 2 * p - k) // s + 1
    weight = torch.randn(c_l, c_f, k, 1, 1, generator=gen).to(dtype)
    cl = torch.channels_last_3d

    def run(h, w, fmt, relu):
        x_fast = torch.randn(n, c_f, t_f, h, w, generator=gen).to(dtype).contiguous(memory_format=fmt)
        grad = torch.randn(n, c_s + c_l, t_s, h, w, generator=gen).to(dtype).contiguous(memory_format=fmt)
        out = torch.randn(grad.shape, generator=gen).to(dtype).contiguous(memory_format=fmt) if relu else None
        before = _cuda_emulation.counters()[3]
        with conv_tf32(False):  # fp32 on CUDA cores: exact to fp32 rounding
            got = ops.lateral_concat_grad_weight(grad, x_fast, weight, None, out, s, p)[0]
        issued = _cuda_emulation.counters()[3] - before
        g = grad[:, c_s:].double() * ((out[:, c_s:] > 0) if relu else 1)
        w64 = weight.double().requires_grad_(True)
        lateral = torch.nn.functional.conv3d(x_fast.double(), w64, stride=(s, 1, 1), padding=(p, 0, 0))
        (want,) = torch.autograd.grad(lateral, w64, g)
        bound = 1e-5 if dtype == torch.float32 else 2e-2
        assert ((got.double() - want).abs().max() / want.abs().max()).item() <= bound
        return issued

    assert run(4, 4, cl, relu=False) > 0
    assert run(3, 5, cl, relu=False) > 0  # odd frames: pixels beyond H*W zero-filled
    assert run(4, 4, torch.contiguous_format, relu=False) == 0
    assert run(4, 4, cl, relu=True) == 0  # the ReLU mask is applied on the way through registers


# AddressSanitizer: the emulator built with -fsanitize=address checks every access of the kernels.
# Its processes start with libasan preloaded, so they are subprocesses of the test run.
ASAN_EXIT = 86  # _cuda_emulation.ASAN_OPTIONS: the exit status after a report

_OOB_PROBE = """
import sys, torch, _cuda_emulation
ops = _cuda_emulation.load()
assert ops.emulator_asan(), "not the AddressSanitizer build"
ops.emulator_selftest(sys.argv[1], torch.randn(5 * 64))
print("no report")
"""


def _asan_env():
    env = _cuda_emulation.asan_environment()
    if env is None:
        pytest.skip("the C++ compiler has no libasan (AddressSanitizer)")
    return env


def test_out_of_bounds_selftests_refused_without_the_sanitizer():
    """The plain build has no redzones: these selftests would read neighbouring host memory."""
    assert not _ops().emulator_asan()
    with pytest.raises(RuntimeError, match="only in the AddressSanitizer build"):
        _ops().emulator_selftest("oob_global_past_end", _input())


@pytest.mark.parametrize(
    "name,report",
    [
        ("oob_global_past_end", "heap-buffer-overflow"),
        ("oob_global_before_start", "heap-buffer-overflow"),
        ("oob_shared_past_end", "global-buffer-overflow"),  # a template kernel's __shared__ array
        ("oob_async_past_end", "heap-buffer-overflow"),  # the cp.async source, read when it lands
    ],
)
def test_address_sanitizer_reports_out_of_bounds(name, report):
    """One element out of bounds (one thread of five blocks) is reported, and stops the process."""
    proc = subprocess.run(
        [sys.executable, "-c", _OOB_PROBE, name],
        env=_asan_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == ASAN_EXIT, proc.stderr[-4000:]
    assert f"ERROR: AddressSanitizer: {report}" in proc.stderr
    assert "no report" not in proc.stdout


@pytest.mark.parametrize(
    "selection,least",
    [
        ("emulated and forward_backward", 250),
        ("emulated and not forward_backward", 580),
    ],
    ids=["forward_backward", "the_rest"],
)
def test_cuda_kernels_pass_under_address_sanitizer(selection, least):
    """Every emulated case of test_cuda_kernels.py (every kernel, geometry, dtype, layout, access width
    and epilogue; alternating thread order, grids capped at 3 blocks), in two shards that pytest-xdist
    workers run side by side (about 7 minutes of one core in all), on the AddressSanitizer build: no
    access out of any tensor's or __shared__ array's bounds, and the same results."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(ROOT / "tests" / "test_cuda_kernels.py"), "-k", selection],
        env=_asan_env(), capture_output=True, text=True, timeout=3000, cwd=ROOT,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "AddressSanitizer" not in output
    summary = proc.stdout.strip().splitlines()[-1]  # pytest's last line (warnings go to stderr)
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= least, summary
    assert "failed" not in summary and "error" not in summary, summary
