"""Static performance checks of every Triton kernel as compiled for sm_90 (H100/H200), no GPU needed.

The launchers run for real on CPU tensors of the R50 SlowFast fusion-point shapes (4x16 and 8x8,
batch 8, 224x224 clip: ``slowfast_fast.bench.cases``), both layouts, fp32 (TF32 as by default, and
IEEE with TF32 off), bf16 and fp16, with the folded-BN/ReLU epilogue, and the resampling shapes of
the bench. Their kernel launches are intercepted: instead of running, each launch
is specialized exactly as Triton's runtime JIT would specialize it (the JIT's own binder: dtypes,
16-byte alignment of pointers, integers equal to 1 or divisible by 16, constexprs), once per autotune
config that would be tried on a GPU, and the distinct specializations are compiled for sm_90 with
Triton's bundled ptxas. ``cuobjdump --dump-resource-usage`` then gives registers, stack and local
(spill) bytes per thread; Triton's metadata gives the dynamic shared memory.

Asserted per compiled kernel:

* no spills: STACK and LOCAL are 0 (cuobjdump's STACK counts the stack frame, which only spills
  and local arrays need; none of these kernels has local arrays);
* registers and shared memory within the budget of the occupancy the kernel's design needs
  (:data:`OCCUPANCY`): ``regs <= 65536 / (ctas * threads)`` and
  ``shared <= 228 KiB / ctas - 1 KiB`` (sm_90: 64K registers and 228 KiB shared memory per SM,
  1 KiB reserved per CTA);
* the copies (the forward's x_slow programs, resampling) use 16-byte loads and stores.

Two Tritons. The table is compiled with this environment's Triton (CI's: 3.8, ptxas 12.9) and, when
``SLOWFAST_FAST_SM90_SECOND_PYTHON`` names a Python that imports another Triton, again with that one:
``make test`` sets it to a venv with the GPU machine's Triton 3.6 (ptxas 12.8), which compiles what
that machine will run and spills where 3.8 does not (2026-12-01, with the 64-pixel grad_input tile's
K step of 32 channels: 19 backward variants, up to 464 bytes, 81 local loads inside its K loop). For
this Triton every kernel must spill nothing. For the second, spills inside a loop fail
(``cuobjdump -sass``: a local load or store between a backward branch and its target); a few values
saved around the loops (at most :data:`SECOND_TRITON_STACK` bytes) are allowed and reported.
Registers, shared memory and 16-byte copies are asserted for both.

Runs in a subprocess without ``TRITON_INTERPRET`` (tests/conftest.py sets it for this process), with
a fresh Triton cache, so what it measures is the compile of a CI machine: 210 compiles since the
backward became one launch on 2026-12-01 (2 min 22 s on the shared 2-core development machine;
268 when it had more kernels, which took 50-95 s when the machine was quiet). Under pytest-xdist
the workers share one compile per test run (a table in the temp directory named by the run's id,
under a file lock).
``python tests/test_triton_sm90_static.py [kernel ...]`` prints the table.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

try:
    import fcntl
except ImportError:  # not POSIX: every worker compiles its own table
    fcntl = None

# CTAs per SM each kernel's design needs, and why. Registers and shared memory must allow them.
OCCUPANCY = {
    # One kernel does both jobs: the x_slow copy (80% of the bytes) needs >= ~21 KB of loads in flight
    # per SM (4 TB/s x ~0.7 us / 132 SMs); each 4-warp copy program keeps 16 KB in flight, so 2 CTAs
    # give 32 KB. Its GEMM programs need 2 CTAs so one CTA's epilogue overlaps another's main loop.
    "_lateral_concat_kernel": 2,
    # Both backward GEMMs in one launch, each designed for 2 CTAs of 4 warps: grad_input (a transposed
    # conv at low arithmetic intensity, memory-bound) and the grad_weight partials (a reduction over all
    # pixels per (kt, channel tile): loads of one CTA overlap the MMAs of the other; the old design's
    # 115-184 KB of shared memory allowed 1). The kernel's registers and shared memory are those of its
    # hungrier role, so both roles must fit the budget of 2.
    "_backward_kernel": 2,
    # Adds the partials: tiny, 1 CTA of 4 warps is plenty, but it must not spill.
    "_grad_weight_reduce_kernel": 1,
    # Pure copies of 8 KB tiles per program: 8 CTAs/SM (32 warps) keep 64 KB in flight.
    "_gather_frames_kernel": 8,
    "_sum_runs_kernel": 8,
}
# Stack bytes per thread that the second Triton may use outside every loop: values saved before a loop
# and reloaded after it, once per program (Triton 3.6 at the R50 shapes, 2026-12-01: at most 56 bytes,
# 16-28 local loads and stores per thread per program, against a K loop of hundreds of instructions
# per trip).
SECOND_TRITON_STACK = 64
SECOND_PYTHON_ENV = "SLOWFAST_FAST_SM90_SECOND_PYTHON"
# The Triton the second Python must have: the GPU machine's (the Makefile installs this release).
SECOND_TRITON_VERSION = "3.6."
REGISTERS_PER_SM = 65536
SHARED_PER_SM = 228 * 1024
SHARED_RESERVED_PER_CTA = 1024

# Per table. Under pytest-xdist the two tables may compile at once, each with one process per core,
# beside other tests: 2 min 22 s alone on the 2-core machine, up to about 10 min when loaded.
_TIME_LIMIT_S = 1500


def _budget(name: str, threads: int) -> tuple[int, int]:
    """``(max registers per thread, max shared bytes per CTA)`` for kernel ``name``: what lets
    :data:`OCCUPANCY` CTAs of ``threads`` threads share one SM. Registers are allocated per warp in
    units of 8 per thread, capped at 255."""
    ctas = OCCUPANCY[name]
    regs = min(255, REGISTERS_PER_SM // (ctas * threads) // 8 * 8)
    return regs, SHARED_PER_SM // ctas - SHARED_RESERVED_PER_CTA


def _tools():
    import triton

    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    cuobjdump = os.path.join(bin_dir, "cuobjdump")
    ptxas = os.path.join(bin_dir, "ptxas")
    return (cuobjdump, ptxas) if os.path.exists(cuobjdump) and os.path.exists(ptxas) else None


# --- the subprocess: intercept launches, compile, measure -----------------------------------------


def _record_launches():
    """Patches Triton so that a kernel launch records its sm_90 specialization (one per autotune config)
    instead of running. Returns the dict it fills: key -> (kernel name, ASTSource, options, label)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime import autotuner, jit

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    recorded = {}
    binders = {}
    context = {"label": ""}

    def run(self, *args, grid, warmup, **kwargs):
        kwargs.setdefault("debug", False)
        if self not in binders:
            binders[self] = jit.create_function_from_signature(self.signature, self.params, backend)
        bound, specialization, options = binders[self](*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(
            backend, kwargs, bound, specialization, options
        )
        src = ASTSource(self, signature, constexprs, attrs)
        key = (self.fn.__name__, str(sorted(signature.items())), str(sorted(constexprs.items())))
        key += (str(sorted(attrs.items())), str(options))
        recorded.setdefault(key, (self.fn.__name__, src, options, context["label"]))

    def tune(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args, strict=False))
        for config in self.prune_configs(kwargs):
            self.fn.run(*args, **kwargs, **config.all_kwargs())

    jit.JITFunction.run = run
    autotuner.Autotuner.run = tune
    return recorded, context, target, triton


def _launch_all(context):
    """Calls every launcher at every R50 fusion point / resample shape, layout, dtype and epilogue."""
    import importlib

    import torch

    from slowfast_fast.bench import cases
    from slowfast_fast.triton import _common, resample
    from slowfast_fast.triton.lateral_concat import lateral_concat

    # By module path: the package re-exports the function of the same name.
    lateral_concat_backward = importlib.import_module("slowfast_fast.triton.lateral_concat_backward")

    # An H200's SM count sizes the grad_weight split, as on the GPU.
    lateral_concat_backward.num_sms = lambda device: 132
    size = cases.SIZES["gpu"]
    empty = torch.empty
    # (name, dtype, TF32 allowed): fp32 as PyTorch's default runs it (TF32, as cuDNN's convs) and with
    # TF32 off (IEEE fp32 on CUDA cores: another code path, with its own register pressure).
    variants = [(name, dtype, True) for name, dtype in cases.DTYPES.items()] + [
        ("fp32-ieee", torch.float32, False)
    ]
    tf32 = torch.backends.cudnn.allow_tf32
    for variant, dtype, allow_tf32 in variants:
        torch.backends.cudnn.allow_tf32 = allow_tf32
        for layout_name, fmt in cases.LAYOUTS.items():
            for config in cases.CONFIGS.values():
                for shape in cases.lateral_shapes(size, config):
                    context["label"] = f"{config.name} {shape.point} {variant} {layout_name}"
                    n, s = shape.batch, shape.spatial
                    x_slow = empty((n, shape.c_slow, shape.t_slow, s, s), dtype=dtype, memory_format=fmt)
                    x_fast = empty((n, shape.c_fast, shape.t_fast, s, s), dtype=dtype, memory_format=fmt)
                    weight = empty((shape.c_lateral, shape.c_fast, shape.kernel, 1, 1), dtype=dtype)
                    vec = empty((shape.c_lateral,), dtype=dtype)
                    grad_out = empty((n, shape.c_slow + shape.c_lateral, shape.t_slow, s, s), dtype=dtype)
                    grad_out = grad_out.contiguous(memory_format=fmt)
                    # The folded epilogue (BN scale/shift + ReLU; the backward's ReLU mask) only: the
                    # plain kernels (mmaction2's default lateral) lack only code these have, and
                    # compiling both would put this test well past 90 s. When the plain variants were
                    # last measured (bf16, both layouts, every config) they were within budget: at
                    # most 168 registers, 0 spills.
                    lateral_concat(x_slow, x_fast, weight, shape.stride, shape.padding, vec, vec, True)
                    args = (grad_out, x_fast, weight, vec, grad_out, shape.stride, shape.padding)
                    # Both roles in one launch, the grad_weight splits adding atomically (the separate
                    # grad ops launch the same kernels with one role's programs: no other code).
                    lateral_concat_backward.lateral_concat_backward(*args)
                    torch.use_deterministic_algorithms(True)  # ordered partials, pinned config
                    try:
                        lateral_concat_backward.lateral_concat_backward(*args)
                    finally:
                        torch.use_deterministic_algorithms(False)
            if allow_tf32:  # resampling only copies: the precision setting does not reach it
                for shape in cases.resample_shapes(size):
                    context["label"] = f"resample {shape.name} {variant} {layout_name}"
                    x = empty((shape.batch, 3, shape.frames, shape.spatial, shape.spatial), dtype=dtype)
                    x = x.contiguous(memory_format=fmt)
                    y = resample.temporal_resample(x, shape.scale_factor)
                    resample.pathway_split(x, shape.scale_factor, 1.0)
                    resample.temporal_resample_backward(y, shape.frames, shape.scale_factor)
    torch.backends.cudnn.allow_tf32 = tf32
    assert not _common.INTERPRET


def _resources(cubin: bytes, cuobjdump: str) -> dict:
    """Registers, stack and local bytes per thread (``--dump-resource-usage``), and from the SASS the
    loops (backward branches), the local-memory instructions, and how many of those lie in a loop."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    line = next(line for line in text.splitlines() if "REG:" in line)
    fields = dict(item.split(":", 1) for item in line.split() if ":" in item and item[0].isupper())
    return {k: int(fields[k]) for k in ("REG", "STACK", "LOCAL")} | local_accesses(sass)


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);")
# A direct branch's target is its last operand, after any predicate or convergence operands
# (`@!P1 BRA !P2, 0xc90`, `BRA.U !UP0, 0x...`, `BRA.DIV UR4, 0x...`).
_BRANCH_TARGET = re.compile(r"\bBRA\b.*\b0x([0-9a-f]+)\s*$")
_LOCAL_OP = re.compile(r"\b(?:LDL|STL)\b")
# Control flow that a backward branch does not describe: calls (a routine placed after EXIT, called
# from inside a loop) and indirect jumps.
_OTHER_FLOW = re.compile(r"\b(?:CALL|BRX|JMX|JMP)\b")


def local_accesses(sass: str) -> dict:
    """``INSTRUCTIONS``, ``LOOPS`` (backward branches), ``LOCAL_OPS`` (local loads and stores: spills, as
    these kernels have no local arrays), ``LOOP_LOCAL_OPS`` (those between a backward branch's target
    and the branch, i.e. executed on every trip of that loop) and ``OTHER_FLOW`` (calls and indirect
    jumps, which would put code outside those spans) in one kernel's ``cuobjdump -sass`` text."""
    code = [(int(a, 16), text) for a, text in _SASS_LINE.findall(sass)]
    loops = []
    for address, text in code:
        target = _BRANCH_TARGET.search(text)
        # Strictly backward: the branch to itself that ends each kernel (a trap after EXIT) is no loop.
        if target and int(target.group(1), 16) < address:
            loops.append((int(target.group(1), 16), address))
    local = [address for address, text in code if _LOCAL_OP.search(text)]
    in_loop = [a for a in local if any(start <= a <= end for start, end in loops)]
    return {
        "INSTRUCTIONS": len(code),
        "LOOPS": len(loops),
        "LOCAL_OPS": len(local),
        "LOOP_LOCAL_OPS": len(in_loop),
        "OTHER_FLOW": sum(1 for _, text in code if _OTHER_FLOW.search(text)),
    }


_JOBS: list = []


def _build(index: int) -> dict:
    """Compiles recorded specialization ``index`` (run in a forked worker, which inherits ``_JOBS``)."""
    name, src, options, label, target = _JOBS[index]
    import triton

    compiled = triton.compile(src, target=target, options=options.__dict__)
    constexprs = {src.fn.arg_names[path[0]]: v for path, v in src.constants.items()}
    return {
        "kernel": name,
        "triton": triton.__version__,
        "case": label,
        "dtype": next((t for t in src.signature.values() if t.startswith("*")), "")[1:],
        "constexprs": {k: str(v) for k, v in constexprs.items()},
        "threads": options.num_warps * 32,
        "num_stages": options.num_stages,
        "shared": compiled.metadata.shared,
        # 16-byte global accesses in the PTX: plain loads/stores and cp.async into shared memory.
        "ld16": compiled.asm["ptx"].count("ld.global.v4."),
        "st16": compiled.asm["ptx"].count("st.global.v4."),
        "cp16": len(re.findall(r"cp\.async\.cg\.shared\.global[^;]*, 0x10", compiled.asm["ptx"])),
        **_resources(compiled.asm["cubin"], _tools()[0]),
    }


def _compile_all(kernels: list[str]) -> list[dict]:
    """Every recorded specialization compiled and measured (only those of ``kernels`` if given)."""
    import multiprocessing

    recorded, context, target, _ = _record_launches()
    _launch_all(context)
    _JOBS[:] = [(*item, target) for item in recorded.values() if not kernels or item[0] in kernels]
    # Triton's compiler holds the GIL: one forked process per core (this machine's 2 in CI).
    with multiprocessing.get_context("fork").Pool(min(os.cpu_count() or 1, 4)) as pool:
        return pool.map(_build, range(len(_JOBS)), chunksize=1)


# --- the tests ---------------------------------------------------------------------------------------


def _compile_to(path: str, python: str = sys.executable) -> None:
    """Runs this file under ``python`` as a subprocess that writes the compiled table to ``path``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # The package from this tree, whichever Python compiles (another venv may not have it installed).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as cache:
        env["TRITON_CACHE_DIR"] = cache
        done = subprocess.run(
            [python, __file__, "--json", path + ".part"],
            env=env,
            capture_output=True,
            text=True,
            timeout=_TIME_LIMIT_S,
        )
    assert done.returncode == 0, done.stderr[-6000:]
    os.replace(path + ".part", path)


def _shared_table(request, name: str, python: str) -> list[dict]:
    """The table compiled by ``python``, made once per test run: under pytest-xdist the workers that get
    this module's tests share one table (the first to take the lock compiles, the others wait and read
    it) instead of each compiling all ~210 specializations again."""
    try:
        run = request.getfixturevalue("testrun_uid")  # pytest-xdist: the same in every worker
    except pytest.FixtureLookupError:
        run = None
    if run is None or fcntl is None:
        with tempfile.TemporaryDirectory() as out:
            path = os.path.join(out, "table.json")
            _compile_to(path, python)
            with open(path) as f:
                return json.load(f)
    path = os.path.join(tempfile.gettempdir(), f"slowfast_fast_sm90_{name}_{run}.json")
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(path):
            _compile_to(path, python)
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def compiled_kernels(request):
    """The table compiled by this environment's Triton (CI's)."""
    pytest.importorskip("triton")
    if _tools() is None:
        pytest.skip("Triton's bundled ptxas/cuobjdump are absent: cannot compile for sm_90")
    return _shared_table(request, "ci", sys.executable)


@pytest.fixture(scope="module")
def second_triton_kernels(request):
    """The table compiled by the Python in ``SLOWFAST_FAST_SM90_SECOND_PYTHON`` (``make test``: a venv
    with the GPU machine's Triton 3.6). Skipped when unset, so a bare ``pytest`` run still works; CI
    runs ``make test``, which sets it."""
    python = os.environ.get(SECOND_PYTHON_ENV)
    if not python:
        pytest.skip(f"{SECOND_PYTHON_ENV} is not set (make test sets it)")
    rows = _shared_table(request, "second", python)
    import triton

    versions = {row["triton"] for row in rows}
    assert len(versions) == 1 and versions.pop().startswith(SECOND_TRITON_VERSION), (
        f"{SECOND_PYTHON_ENV} compiled with Triton {versions}, not {SECOND_TRITON_VERSION}x"
    )
    assert triton.__version__ != rows[0]["triton"], "the second Triton is this environment's own"
    return rows


def _describe(row: dict) -> str:
    tiles = {k: v for k, v in row["constexprs"].items() if k.startswith("BLOCK")}
    warps = row["threads"] // 32
    return f"{row['kernel']} [{row['case']}] {row['dtype']} {tiles} w{warps}s{row['num_stages']}"


def _check_every_kernel_was_compiled(rows: list[dict]) -> None:
    assert {row["kernel"] for row in rows} == set(OCCUPANCY)
    for kernel in ("_lateral_concat_kernel", "_backward_kernel"):
        kernel_rows = [row for row in rows if row["kernel"] == kernel]
        assert {(row["dtype"], row["constexprs"]["PRECISION"]) for row in kernel_rows} == {
            ("fp32", "tf32"),
            ("fp32", "ieee"),
            ("bf16", "tf32"),
            ("fp16", "tf32"),
        }
        assert {"ncdhw" in row["case"] for row in kernel_rows} == {True, False}


def _check_budget(rows: list[dict]) -> None:
    over = []
    for row in rows:
        regs, shared = _budget(row["kernel"], row["threads"])
        if row["REG"] > regs or row["shared"] > shared:
            over.append(
                f"{_describe(row)}: {row['REG']} regs (budget {regs}), {row['shared']} B shared"
                f" (budget {shared}) for {OCCUPANCY[row['kernel']]} CTAs/SM"
            )
    assert not over, "\n".join(over)


def _check_copies(rows: list[dict]) -> None:
    copies = [
        row
        for row in rows
        if row["kernel"] in ("_lateral_concat_kernel", "_gather_frames_kernel", "_sum_runs_kernel")
    ]
    assert copies
    scalar = [_describe(row) for row in copies if not (row["ld16"] and row["st16"])]
    assert not scalar, "\n".join(scalar)


def test_every_kernel_was_compiled(compiled_kernels):
    _check_every_kernel_was_compiled(compiled_kernels)


def _check_sass_was_read(rows: list[dict]) -> None:
    """Every row's SASS was parsed (a listing format the parser cannot read would count no spills)."""
    unread = [_describe(r) for r in rows if r["INSTRUCTIONS"] == 0]
    assert not unread, "\n".join(unread)


def test_no_spills(compiled_kernels):
    _check_sass_was_read(compiled_kernels)
    if compiled_kernels[0]["triton"].startswith(SECOND_TRITON_VERSION):
        # This environment has the GPU machine's Triton (torch 2.11): it saves a few values around the
        # backward's loops (see the module docstring), so its rule is the second Triton's.
        _check_no_spills_inside_loops(compiled_kernels)
        return
    spilling = [
        f"{_describe(r)}: STACK {r['STACK']} LOCAL {r['LOCAL']}"
        for r in compiled_kernels
        if r["STACK"] or r["LOCAL"] or r["LOCAL_OPS"]
    ]
    assert not spilling, "\n".join(spilling)


def test_registers_and_shared_memory_allow_the_designed_occupancy(compiled_kernels):
    _check_budget(compiled_kernels)


def test_copies_move_16_bytes_per_access(compiled_kernels):
    """The x_slow copy inside the forward and the resampling kernels are pure copies: at the R50 shapes
    every run is 16-byte aligned (the forward tells the compiler through its run length), so they
    must compile to 16-byte loads and stores."""
    _check_copies(compiled_kernels)


def test_second_triton_compiles_every_kernel(second_triton_kernels):
    _check_every_kernel_was_compiled(second_triton_kernels)


def test_second_triton_spills_nothing_inside_a_loop(second_triton_kernels):
    _check_sass_was_read(second_triton_kernels)
    _check_no_spills_inside_loops(second_triton_kernels)


def _check_no_spills_inside_loops(rows: list[dict]) -> None:
    """The GEMM kernels' loops are found (so the check below is not vacuous), no local load or store
    lies inside any loop, a kernel that spills has no calls or indirect jumps (whose code the loop spans
    would not place), and what spills around the loops stays within :data:`SECOND_TRITON_STACK`."""
    # The backward kernel has two: grad_input's K loop and grad_weight's pixel loop.
    for kernel, loops in (
        ("_lateral_concat_kernel", 1),
        ("_backward_kernel", 2),
        ("_grad_weight_reduce_kernel", 1),
    ):
        assert all(r["LOOPS"] >= loops for r in rows if r["kernel"] == kernel), kernel
    bad = [
        f"{_describe(r)}: STACK {r['STACK']} LOCAL {r['LOCAL']}, {r['LOOP_LOCAL_OPS']} of "
        f"{r['LOCAL_OPS']} local accesses inside a loop"
        for r in rows
        if r["LOOP_LOCAL_OPS"]
        or r["LOCAL"]
        or r["STACK"] > SECOND_TRITON_STACK
        or (r["LOCAL_OPS"] and r["OTHER_FLOW"])
    ]
    assert not bad, "\n".join(bad)


def test_second_triton_registers_and_shared_memory_allow_the_designed_occupancy(second_triton_kernels):
    _check_budget(second_triton_kernels)


def test_second_triton_copies_move_16_bytes_per_access(second_triton_kernels):
    _check_copies(second_triton_kernels)


def test_local_accesses_are_placed_in_or_out_of_loops():
    """The SASS reading behind the second Triton's spill check, on a hand-made listing."""
    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   STL [R1+0x4], R5 ;
        /*0020*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0030*/                   LDL R6, [R1+0x4] ;
        /*0040*/               @P0 BRA 0x20 ;
        /*0050*/                   LDL.LU R5, [R1+0x4] ;
        /*0060*/               @P1 BRA 0x90 ;
        /*0070*/                   STL.64 [R1+0x8], R6 ;
        /*0080*/              @!P1 BRA !P2, 0x70 ;
        /*0090*/                   CALL.REL.NOINC 0xb0 ;
        /*00a0*/                   EXIT ;
        /*00b0*/                   BRA 0xb0 ;
    """
    # Loops: 0x20-0x40 (one local load) and 0x70-0x80 (a branch with a convergence operand; one
    # store). Neither the forward branch at 0x60 nor the branch at 0xb0 to itself (the trap ptxas puts
    # after the last EXIT) is a loop; the call is other control flow.
    assert local_accesses(sass) == {
        "INSTRUCTIONS": 12,
        "LOOPS": 2,
        "LOCAL_OPS": 4,
        "LOOP_LOCAL_OPS": 2,
        "OTHER_FLOW": 1,
    }


def _print_table(rows: list[dict]) -> None:
    rows = sorted(rows, key=lambda r: (r["kernel"], r["dtype"], r["case"], str(r["constexprs"])))
    for r in rows:
        regs, shared = _budget(r["kernel"], r["threads"])
        print(
            f"{_describe(r)}: REG {r['REG']}/{regs} STACK {r['STACK']} LOCAL {r['LOCAL']} "
            f"local ops {r['LOCAL_OPS']} ({r['LOOP_LOCAL_OPS']} in loops) "
            f"shared {r['shared']}/{shared} ld16 {r['ld16']} st16 {r['st16']} cp.async16 {r['cp16']}"
        )
    print(f"{len(rows)} distinct specializations, Triton {rows[0]['triton'] if rows else '?'}")


if __name__ == "__main__":
    # --json PATH (what the tests run), or kernel names to print the table of (all if none).
    if sys.argv[1:2] == ["--json"]:
        with open(sys.argv[2], "w") as f:
            json.dump(_compile_all([]), f)
    else:
        _print_table(_compile_all(sys.argv[1:]))
