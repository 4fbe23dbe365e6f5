"""Builds and loads the CPU emulation of the CUDA kernels (tests/cuda_emulation/cuda_emulation.h says
what is emulated and how): csrc/cuda compiled by the host compiler with SLOWFAST_FAST_CUDA_EMULATION,
registered as the CPU kernels of the ``slowfast_fast_cudaemu`` namespace. CI has no GPU; this is how the
kernels nvcc compiles run there.

The build (about a minute on two cores, once; then cached under build/cuda_emulation, and rebuilt
when a source changes) is shared by pytest-xdist workers through torch's own build lock.

With ``SLOWFAST_FAST_EMULATION_ASAN=1`` the emulator is built with AddressSanitizer instead (under
build/cuda_emulation_asan), so that every memory access of the kernels is checked; the process must
then run with the compiler's libasan preloaded: :func:`asan_environment` gives the variables for a
subprocess.
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess

import torch

from slowfast_fast.ops._schemas import SCHEMAS

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "cuda_emulation"
NAMESPACE = "slowfast_fast_cudaemu"
SOURCES = ["lateral_concat_emu.cpp", "grad_weight_emu.cpp", "temporal_resample_emu.cpp", "emulator_ops.cpp"]

# Thread orders within a phase (see cuda_emulation.h).
FORWARD, REVERSE, ALTERNATE = 0, 1, 2

_LIBRARIES = []  # the Python-side definitions must outlive the tests
ASAN_VARIABLE = "SLOWFAST_FAST_EMULATION_ASAN"
# Leaks: CPython and torch keep their allocations at exit. Reports abort the process (halt_on_error).
ASAN_OPTIONS = "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86"


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _compiler_library(name: str) -> str | None:
    """The path of library ``name`` as the emulator's compiler links it, or None."""
    try:
        out = subprocess.run(
            [_compiler(), f"-print-file-name={name}"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out if os.path.isabs(out) and os.path.exists(out) else None


def asan_environment() -> dict[str, str] | None:
    """``os.environ`` plus what a subprocess needs to load the AddressSanitizer build of the emulator
    (None when the compiler has no libasan). libstdc++ is preloaded after libasan: Python itself is
    not a C++ program, and libasan, looking up the C++ runtime's ``__cxa_throw`` as it starts, would
    otherwise fail its own check at the first C++ exception (torch throws some while importing)."""
    runtime, cxx = _compiler_library("libasan.so"), _compiler_library("libstdc++.so")
    if runtime is None or cxx is None:
        return None
    env = dict(os.environ)
    env[ASAN_VARIABLE] = "1"
    env["LD_PRELOAD"] = f"{runtime} {cxx}"
    env["ASAN_OPTIONS"] = ASAN_OPTIONS
    paths = (str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _asan_loaded() -> bool:
    with open("/proc/self/maps") as maps:
        return "libasan" in maps.read()


@functools.cache
def load():
    """The emulated ops, ``torch.ops.slowfast_fast_cudaemu`` (built on first use)."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:  # pip's ninja (make install) in a venv whose bin is not on PATH
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    asan = os.environ.get(ASAN_VARIABLE) == "1"
    if asan and not _asan_loaded():
        raise RuntimeError(
            f"{ASAN_VARIABLE}=1 needs the process started with libasan preloaded "
            "(tests/_cuda_emulation.py: asan_environment())"
        )
    lib = torch.library.Library(NAMESPACE, "FRAGMENT")
    for schema in SCHEMAS.values():
        lib.define(schema)
    _LIBRARIES.append(lib)
    build = ROOT / "build" / ("cuda_emulation_asan" if asan else "cuda_emulation")
    build.mkdir(parents=True, exist_ok=True)
    # -U_FORTIFY_SOURCE: the fibers switch stacks with _longjmp, which fortified glibc refuses.
    flags = ["-O2", "-U_FORTIFY_SOURCE", "-DSLOWFAST_FAST_CUDA_EMULATION", "-Wno-unknown-pragmas"]
    if asan:
        flags = [*flags, "-fsanitize=address", "-fno-omit-frame-pointer"]
    cpp_extension.load(
        name=NAMESPACE + ("_asan" if asan else ""),
        sources=[str(HERE / s) for s in SOURCES],
        extra_include_paths=[str(HERE), str(ROOT / "csrc"), str(ROOT / "csrc" / "cuda")],
        extra_cflags=flags,
        extra_ldflags=["-fsanitize=address"] if asan else None,
        build_directory=str(build),
        is_python_module=False,
        verbose=bool(os.environ.get("SLOWFAST_FAST_EMULATION_VERBOSE")),
    )
    from slowfast_fast.ops._registration import register

    register(NAMESPACE)  # the same fake kernels and autograd formulas as the real namespaces
    ops = getattr(torch.ops, NAMESPACE)
    if ops.emulator_asan() != asan:  # a test that asked for the sanitizer must not run without it
        raise RuntimeError(f"the emulator loaded is {'not ' if asan else ''}the AddressSanitizer build")
    return ops


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
