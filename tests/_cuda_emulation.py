"""Builds and loads the CPU emulation of the CUDA kernels (tests/cuda_emulation/cuda_emulation.h says
what is emulated and how): csrc/cuda compiled by the host compiler with SLOWFAST_FAST_CUDA_EMULATION,
registered as the CPU kernels of the ``slowfast_fast_cudaemu`` namespace. CI has no GPU; this is how the
kernels nvcc compiles run there.

The build (about a minute on two cores, once; then cached under build/cuda_emulation, and rebuilt
when a source changes) is shared by pytest-xdist workers through torch's own build lock.
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil

import torch

from slowfast_fast.ops._schemas import SCHEMAS

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "cuda_emulation"
NAMESPACE = "slowfast_fast_cudaemu"
SOURCES = ["lateral_concat_emu.cpp", "grad_weight_emu.cpp", "temporal_resample_emu.cpp", "emulator_ops.cpp"]

# Thread orders within a phase (see cuda_emulation.h).
FORWARD, REVERSE, ALTERNATE = 0, 1, 2

_LIBRARIES = []  # the Python-side definitions must outlive the tests


@functools.cache
def load():
    """The emulated ops, ``torch.ops.slowfast_fast_cudaemu`` (built on first use)."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:  # pip's ninja (make install) in a venv whose bin is not on PATH
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    lib = torch.library.Library(NAMESPACE, "FRAGMENT")
    for schema in SCHEMAS.values():
        lib.define(schema)
    _LIBRARIES.append(lib)
    build = ROOT / "build" / "cuda_emulation"
    build.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=NAMESPACE,
        sources=[str(HERE / s) for s in SOURCES],
        extra_include_paths=[str(HERE), str(ROOT / "csrc"), str(ROOT / "csrc" / "cuda")],
        # -U_FORTIFY_SOURCE: the fibers switch stacks with _longjmp, which fortified glibc refuses.
        extra_cflags=["-O2", "-U_FORTIFY_SOURCE", "-DSLOWFAST_FAST_CUDA_EMULATION", "-Wno-unknown-pragmas"],
        build_directory=str(build),
        is_python_module=False,
        verbose=bool(os.environ.get("SLOWFAST_FAST_EMULATION_VERBOSE")),
    )
    from slowfast_fast.ops._registration import register

    register(NAMESPACE)  # the same fake kernels and autograd formulas as the real namespaces
    return getattr(torch.ops, NAMESPACE)


def counters() -> list[int]:
    """Kernel launches, blocks, block-wide barriers and cp.async copies the emulator has run so far
    in this process."""
    return list(load().emulator_counters())


def configure(thread_order: int = FORWARD, max_blocks: int = 0, sms: int = 132) -> None:
    """The emulated threads of a block run in ``thread_order`` (FORWARD, REVERSE or ALTERNATE) within
    each phase; launches run at most ``max_blocks`` blocks (0: the whole grid; the kernels loop over
    their tiles with a grid stride, so fewer blocks each run several tiles); the host code sees ``sms``
    multiprocessors."""
    load().emulator_configure(thread_order, sms, max_blocks)


class order:
    """Context manager: :func:`configure` inside, the defaults (FORWARD, whole grid) after."""

    def __init__(self, thread_order: int, max_blocks: int = 0, sms: int = 132):
        self.args = (thread_order, max_blocks, sms)

    def __enter__(self):
        configure(*self.args)

    def __exit__(self, *exc):
        configure()
