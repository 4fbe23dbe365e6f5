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
REGISTERS_PER_SM = 65536
SHARED_PER_SM = 228 * 1024
SHARED_RESERVED_PER_CTA = 1024

_TIME_LIMIT_S = 600


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
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    line = next(line for line in text.splitlines() if "REG:" in line)
    fields = dict(item.split(":", 1) for item in line.split() if ":" in item and item[0].isupper())
    return {k: int(fields[k]) for k in ("REG", "STACK", "LOCAL")}


_JOBS: list = []


def _build(index: int) -> dict:
    """Compiles recorded specialization ``index`` (run in a forked worker, which inherits ``_JOBS``)."""
    name, src, options, label, target = _JOBS[index]
    import triton

    compiled = triton.compile(src, target=target, options=options.__dict__)
    constexprs = {src.fn.arg_names[path[0]]: v for path, v in src.constants.items()}
    return {
        "kernel": name,
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


def _compile_to(path: str) -> None:
    """Runs this file as a subprocess that writes the compiled table to ``path``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory() as cache:
        env["TRITON_CACHE_DIR"] = cache
        done = subprocess.run(
            [sys.executable, __file__, "--json", path + ".part"],
            env=env,
            capture_output=True,
            text=True,
            timeout=_TIME_LIMIT_S,
        )
    assert done.returncode == 0, done.stderr[-6000:]
    os.replace(path + ".part", path)


@pytest.fixture(scope="module")
def compiled_kernels(request):
    """The compiled table, made once per test run: under pytest-xdist the workers that get this
    module's tests share one table (the first to take the lock compiles, the others wait and read it)
    instead of each compiling all ~240 specializations again."""
    pytest.importorskip("triton")
    if _tools() is None:
        pytest.skip("Triton's bundled ptxas/cuobjdump are absent: cannot compile for sm_90")
    try:
        run = request.getfixturevalue("testrun_uid")  # pytest-xdist: the same in every worker
    except pytest.FixtureLookupError:
        run = None
    if run is None or fcntl is None:
        with tempfile.TemporaryDirectory() as out:
            path = os.path.join(out, "table.json")
            _compile_to(path)
            with open(path) as f:
                return json.load(f)
    path = os.path.join(tempfile.gettempdir(), f"slowfast_fast_sm90_{run}.json")
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(path):
            _compile_to(path)
    with open(path) as f:
        return json.load(f)


def _describe(row: dict) -> str:
    tiles = {k: v for k, v in row["constexprs"].items() if k.startswith("BLOCK")}
    warps = row["threads"] // 32
    return f"{row['kernel']} [{row['case']}] {row['dtype']} {tiles} w{warps}s{row['num_stages']}"


def test_every_kernel_was_compiled(compiled_kernels):
    assert {row["kernel"] for row in compiled_kernels} == set(OCCUPANCY)
    for kernel in ("_lateral_concat_kernel", "_backward_kernel"):
        rows = [row for row in compiled_kernels if row["kernel"] == kernel]
        assert {(row["dtype"], row["constexprs"]["PRECISION"]) for row in rows} == {
            ("fp32", "tf32"),
            ("fp32", "ieee"),
            ("bf16", "tf32"),
            ("fp16", "tf32"),
        }
        assert {"ncdhw" in row["case"] for row in rows} == {True, False}


def test_no_spills(compiled_kernels):
    spilling = [
        f"{_describe(r)}: STACK {r['STACK']} LOCAL {r['LOCAL']}"
        for r in compiled_kernels
        if r["STACK"] or r["LOCAL"]
    ]
    assert not spilling, "\n".join(spilling)


def test_registers_and_shared_memory_allow_the_designed_occupancy(compiled_kernels):
    over = []
    for row in compiled_kernels:
        regs, shared = _budget(row["kernel"], row["threads"])
        if row["REG"] > regs or row["shared"] > shared:
            over.append(
                f"{_describe(row)}: {row['REG']} regs (budget {regs}), {row['shared']} B shared"
                f" (budget {shared}) for {OCCUPANCY[row['kernel']]} CTAs/SM"
            )
    assert not over, "\n".join(over)


def test_copies_move_16_bytes_per_access(compiled_kernels):
    """The x_slow copy inside the forward and the resampling kernels are pure copies: at the R50 shapes
    every run is 16-byte aligned (the forward tells the compiler through its run length), so they
    must compile to 16-byte loads and stores."""
    copies = [
        row
        for row in compiled_kernels
        if row["kernel"] in ("_lateral_concat_kernel", "_gather_frames_kernel", "_sum_runs_kernel")
    ]
    assert copies
    scalar = [_describe(row) for row in copies if not (row["ld16"] and row["st16"])]
    assert not scalar, "\n".join(scalar)


def _print_table(rows: list[dict]) -> None:
    rows = sorted(rows, key=lambda r: (r["kernel"], r["dtype"], r["case"], str(r["constexprs"])))
    for r in rows:
        regs, shared = _budget(r["kernel"], r["threads"])
        print(
            f"{_describe(r)}: REG {r['REG']}/{regs} STACK {r['STACK']} LOCAL {r['LOCAL']} "
            f"shared {r['shared']}/{shared} ld16 {r['ld16']} st16 {r['st16']} cp.async16 {r['cp16']}"
        )
    print(f"{len(rows)} distinct specializations")


if __name__ == "__main__":
    # --json PATH (what the tests run), or kernel names to print the table of (all if none).
    if sys.argv[1:2] == ["--json"]:
        with open(sys.argv[2], "w") as f:
            json.dump(_compile_all([]), f)
    else:
        _print_table(_compile_all(sys.argv[1:]))
