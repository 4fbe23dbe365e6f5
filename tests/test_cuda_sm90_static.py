"""Static checks of the compiled CUDA kernels' sm_90 code (no GPU needed): what ptxas made of them.

The installed ``slowfast_fast._C`` is read with ``cuobjdump`` (Triton's bundled copy, else one on
PATH). A CPU-only build has no device code: every test here skips with that reason. Point
``SLOWFAST_FAST_STATIC_SO`` at another build (e.g. an out-of-tree ``setup.py build_ext --build-lib``)
to check it instead of the installed one.

For every kernel of the package, on sm_90:

* no stack frame (spills and local arrays live in local memory, ~DRAM latency, in the middle of
  loops written to keep loads in flight). fp64 instantiations are exempt: they exist for gradcheck-
  style accuracy checks on the GPU, not for speed, and hold twice the accumulator and operand registers
  of fp32 under the same register cap as the fast dtypes, so a few spilled bytes there are the price
  of keeping one tile shape for every dtype rather than tuning a separate fp64 kernel;
* registers and shared memory that let the number of blocks per SM the kernel was designed for be
  resident at once (DESIGNS below says which, and why that occupancy is what the design needs);
* the x_slow copy of lateral_concat uses 16-byte global loads and stores in its 16-byte variant
  (and 8-byte ones in its 8-byte variant), so it runs at copy bandwidth; the lateral GEMM has 16- and
  8-byte operand loads and output stores, and fetches its activation tiles with cp.async.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from functools import cache

import pytest

ARCH = "sm_90"
# Hopper: 64K 32-bit registers and 228 KB of shared memory per SM, 1 KB of which the driver reserves
# per resident block (cuobjdump's SHARED seems to include it already where a kernel has static shared
# memory: ptxas -v reports 1 KB less; counting it again only makes the check stricter); registers are
# allocated per warp in units of 256 (8 per thread).
REGISTERS_PER_SM = 65536
SHARED_PER_SM = 228 * 1024
SHARED_RESERVED_PER_BLOCK = 1024

# kernel name -> (threads per block, blocks per SM the design needs, why). The register budget is the
# largest per-thread count that fits that many blocks: 65536 / (threads * blocks).
DESIGNS = {
    # 256 x 2 = 16 warps per SM: 2 blocks so one block's MMA and epilogue overlap the other's loads
    # (each block keeps its next K step's A and weight tiles in flight in registers); budget 128.
    "lateral_gemm_kernel": (256, 2, "two GEMM blocks per SM overlap one's MMA with the other's loads"),
    "grad_weight_partial_kernel": (256, 2, "two GEMM blocks per SM, as the lateral GEMM"),
    # Streaming kernels have no reuse to hide latency behind: occupancy is what keeps bytes in flight.
    # 4 x 256 = 1024 threads per SM, each with 4 independent 16-byte loads before its first store, is
    # 64 KB in flight per SM, about 3x what Little's law asks at H200 bandwidth (~4.8 TB/s over 132
    # SMs at ~1.8 GHz is ~20 B/cycle/SM; times ~1000 cycles of DRAM latency is ~20 KB); budget 64.
    "concat_copy_kernel": (256, 4, "1024 threads x 4 loads of 16 B in flight per SM (64 KB)"),
    "resample_forward_kernel": (128, 8, "1024 threads x 4 loads in flight per SM, as the copy"),
    "resample_backward_kernel": (128, 8, "1024 threads x 4 loads in flight per SM, as the copy"),
    # One block per lateral channel summing the split partials: a streaming reduction, as the copy.
    "grad_weight_finish_kernel": (256, 4, "a streaming reduction: 1024 threads per SM"),
}


def _cuobjdump() -> str | None:
    try:
        import triton

        bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        if os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    return shutil.which("cuobjdump")


def _library() -> str:
    path = os.environ.get("SLOWFAST_FAST_STATIC_SO")
    if path:
        assert os.path.isfile(path), f"SLOWFAST_FAST_STATIC_SO={path} is not a file"
        return path
    spec = importlib.util.find_spec("slowfast_fast._C")
    if spec is None or spec.origin is None:
        pytest.skip("slowfast_fast._C is not built")
    return spec.origin


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@cache
def _resource_table(library: str, tool: str) -> dict[str, dict[str, int]] | None:
    """{mangled kernel name: {REG, STACK, SHARED, LOCAL}} of the sm_90 code, None without device code."""
    done = _run(tool, "--dump-resource-usage", "-arch", ARCH, library)
    if "does not contain device code" in done.stdout + done.stderr:
        return None
    assert done.returncode == 0, done.stderr[-2000:]
    table: dict[str, dict[str, int]] = {}
    name = None
    for line in done.stdout.splitlines():
        function = re.match(r"\s*Function (\S+):$", line)
        if function:
            name = function.group(1)
        elif name is not None and "REG:" in line:
            table[name] = {key: int(value) for key, value in re.findall(r"(\w+):(\d+)", line)}
            name = None
    return table


def _demangled(names: list[str]) -> dict[str, str]:
    tool = shutil.which("c++filt")
    if tool is None:
        pytest.skip("needs c++filt (binutils) to tell kernels' dtypes apart")
    done = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(zip(names, done.stdout.splitlines(), strict=True))


@pytest.fixture(scope="module")
def kernels():
    """[(mangled, demangled, resources)] of every sm_90 kernel of the package in the library."""
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (neither Triton's bundled copy nor one on PATH)")
    library = _library()
    table = _resource_table(library, tool)
    if table is None:
        pytest.skip(f"{os.path.basename(library)} has no device code (built without CUDA kernels)")
    assert table, (
        f"{library} holds device code but none for {ARCH}: the package's default TORCH_CUDA_ARCH_LIST "
        "builds sm_90 SASS, which these checks read"
    )
    names = _demangled(sorted(table))
    ours = [(m, names[m], table[m]) for m in sorted(table) if names[m].startswith(_NAMESPACES)]
    assert ours, f"no slowfast_fast kernels among {sorted(names.values())}"
    return tool, library, ours


_NAMESPACES = ("void slowfast_fast::", "slowfast_fast::")


def _kernel_name(demangled: str) -> str:
    """The unqualified kernel name of a demangled signature, e.g. 'lateral_gemm_kernel'."""
    head = demangled.replace("(anonymous namespace)::", "").split("<", 1)[0].split("(", 1)[0]
    return head.rsplit("::", 1)[-1]


def _is_fp64(demangled: str) -> bool:
    return re.search(r"\bdouble\b", demangled) is not None


def _resident_blocks(threads: int, resources: dict[str, int]) -> int:
    regs_per_thread = -(-max(resources["REG"], 1) // 8) * 8
    by_registers = REGISTERS_PER_SM // (regs_per_thread * threads)
    by_shared = SHARED_PER_SM // (resources["SHARED"] + SHARED_RESERVED_PER_BLOCK)
    return min(by_registers, by_shared)


def _table_text(kernels) -> str:
    rows = [f"{'REG':>4} {'STACK':>5} {'SHARED':>6}  kernel"]
    for _, demangled, r in kernels:
        rows.append(f"{r['REG']:>4} {r['STACK']:>5} {r['SHARED']:>6}  {demangled[:160]}")
    return "\n".join(rows)


def test_every_kernel_has_a_stated_design(kernels):
    """A new kernel needs its occupancy design in DESIGNS before its budget can be checked."""
    _, _, found = kernels
    unknown = sorted({_kernel_name(d) for _, d, _ in found} - set(DESIGNS))
    assert not unknown, f"kernels without a design entry: {unknown}"


def test_no_stack_outside_fp64(kernels):
    _, _, found = kernels
    bad = [(d, r["STACK"]) for _, d, r in found if r["STACK"] > 0 and not _is_fp64(d)]
    assert not bad, "kernels with a stack frame (spills or local arrays):\n" + "\n".join(
        f"  {stack:>4} B  {d[:200]}" for d, stack in bad
    )


def test_registers_and_shared_memory_fit_the_designed_occupancy(kernels):
    _, _, found = kernels
    bad = []
    for _, demangled, resources in found:
        design = DESIGNS.get(_kernel_name(demangled))
        if design is None:
            continue  # reported by test_every_kernel_has_a_stated_design
        threads, blocks, _why = design
        resident = _resident_blocks(threads, resources)
        if resident < blocks:
            budget = REGISTERS_PER_SM // (threads * blocks)
            bad.append(
                f"  {resident} < {blocks} blocks/SM (REG {resources['REG']} of {budget}, "
                f"SHARED {resources['SHARED']}): {demangled[:200]}"
            )
    assert not bad, "below the designed occupancy:\n" + "\n".join(bad) + "\n" + _table_text(found)


@cache
def _sass(tool: str, library: str, mangled: str) -> str:
    done = _run(tool, "-sass", "-arch", ARCH, "-fun", mangled, library)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _global_accesses(sass: str) -> set[str]:
    """The global load/store widths in a kernel's SASS, e.g. {'LDG.E.128', 'STG.E.128'} (sm_90 spells
    them LDG.E[.64|.128|.U16][.CONSTANT] and STG.E[.64|.128|.U16]; a plain 4-byte access is 'LDG.E')."""
    found = set()
    for op, width in re.findall(r"\b(LDG|STG)\.E(\.(?:64|128|U16|U8|S16|S8))?\b", sass):
        found.add(f"{op}.E{width}")
    return found


@pytest.mark.parametrize("unit,width", [("uint4", "128"), ("uint2", "64")])
def test_x_slow_copy_moves_wide_units(kernels, unit, width):
    """The copy's 16-byte (8-byte) instantiation loads and stores 16 (8) bytes per instruction, and no
    narrower access: the copy runs on full-width memory transactions."""
    tool, library, found = kernels
    copies = [(m, d) for m, d, _ in found if _kernel_name(d) == "concat_copy_kernel" and f"<{unit}>" in d]
    assert copies, f"no concat_copy_kernel<{unit}> in the library"
    for mangled, demangled in copies:
        accesses = _global_accesses(_sass(tool, library, mangled))
        assert accesses == {f"LDG.E.{width}", f"STG.E.{width}"}, (demangled, sorted(accesses))


def test_gemm_operands_and_epilogue_have_16_and_8_byte_paths(kernels):
    """Each fp32/fp16/bf16 lateral GEMM loads its activation tiles and stores its output 16 bytes at a
    time where the shape allows, and 8 bytes where only that is allowed (H*W % 8 == 4 in fp16: 14x14).
    The epilogue assembles its units element by element, which the compiler used to store as 4-byte
    pieces; this keeps it honest."""
    tool, library, found = kernels
    gemms = [(m, d) for m, d, _ in found if _kernel_name(d) == "lateral_gemm_kernel" and not _is_fp64(d)]
    assert gemms, "no lateral_gemm_kernel in the library"
    for mangled, demangled in gemms:
        accesses = _global_accesses(_sass(tool, library, mangled))
        wanted = {"LDG.E.128", "LDG.E.64", "STG.E.128", "STG.E.64"}
        assert wanted <= accesses, (demangled, sorted(accesses))


def test_gemm_fetches_activation_tiles_with_cp_async(kernels):
    """Each lateral GEMM fetches its activation tiles with cp.async, 16 and 8 bytes at a time
    (sm_90 SASS: LDGSTS.E.BYPASS.128, LDGSTS.E.64), into its multi-stage ring."""
    tool, library, found = kernels
    gemms = [(m, d) for m, d, _ in found if _kernel_name(d) == "lateral_gemm_kernel"]
    assert gemms, "no lateral_gemm_kernel in the library"
    for mangled, demangled in gemms:
        sass = _sass(tool, library, mangled)
        copies = set(re.findall(r"\bLDGSTS\.E(?:\.BYPASS)?(?:\.64|\.128)?\b", sass))
        assert {"LDGSTS.E.BYPASS.128", "LDGSTS.E.64"} <= copies, (demangled, sorted(copies))
