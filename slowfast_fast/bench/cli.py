"""Command line of ``python -m slowfast_fast.bench``: ``parse_args`` holds the whole ``--help``
text (what runs, where files go, exit status, backends, every flag); ``main`` runs the suites."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from slowfast_fast import backend as _backend
from slowfast_fast.bench import backbone, cases, implementations, kernels, load, plots, report, timing

ALL_OPS = (*kernels.KERNEL_OPS, "backbone")

# (kernel budget, backbone budget) per device type and run length. CPU backbone calls take
# hundreds of milliseconds, so their budget is a handful of calls.
BUDGETS = {
    ("cpu", "quick"): (timing.Budget(10, 60, 3), timing.Budget(0, 400, 2, 5)),
    ("cpu", "default"): (timing.Budget(30, 200, 5), timing.Budget(0, 1000, 3, 10)),
    ("cpu", "full"): (timing.Budget(50, 500, 5), timing.Budget(0, 3000, 5, 20)),
    ("cuda", "quick"): (timing.Budget(10, 40), timing.Budget(25, 150)),
    ("cuda", "default"): (timing.Budget(25, 100), timing.Budget(100, 500)),
    # --full on a GPU covers 2x the backbone cases of the default in the same few minutes.
    ("cuda", "full"): (timing.Budget(25, 100), timing.Budget(50, 300)),
}


def _list(text: str) -> list[str]:
    return [item for item in text.replace(",", " ").split() if item]


DESCRIPTION = """\
Benchmark slowfast_fast against the pure-PyTorch reference (mmaction2's computation), both measured
in the same run on the same inputs.

What runs: lateral_concat forward and backward at the four fusion points of SlowFast R50 (4x16 and
8x8 configs), nearest temporal resampling of the input clip, and the whole ResNet3dSlowFast backbone
(inference at each batch of the size preset, and one training step), for every backend usable on the
device. Each backend's output is first checked against a float64 run of the reference: one that
disagrees is reported WRONG and not timed. With no flags: on a GPU the full sizes of BASELINE.md in
fp32 and bf16; on a CPU small sizes in fp32 (about a minute on 2 idle cores).

Output (<dev> is cpu or cuda, <op> each of --ops):
  stdout                      a table per op: median, p20-p80 and min time per call (in µs, ms or
                              s), GB/s, % of the copy-bandwidth roofline, the model's predicted
                              time and measured/predicted (see "performance model" below), speedup
                              over the reference, and the 1-minute load average when each row was
                              measured
  OUT/<dev>_<op>.json         metadata (device, versions, date, command, load average at start and
                              end) and every row; rewritten after every case, so an interrupted run
                              keeps what it measured
  OUT/<dev>_<op>.csv          the same rows, one per (case, backend)
  OUT/<dev>_<op>_time.png     median time per case and backend (plus _speedup.png and, for kernels,
                              _roofline.png); skipped with --no-plots or without matplotlib
  stderr                      progress, skipped backends, and a warning when the machine is busy
Files of the same device and op are overwritten. For RESULTS.md tables run
`python -m slowfast_fast.bench.markdown OUT`; it refuses a run taken on a loaded machine.
"""

EPILOG = """\
backends (--backends; names are case-sensitive):
  reference           eager PyTorch: the base of every speedup, always timed
  cpu                 the compiled C++ kernels (slowfast_fast._C), CPU tensors
  cuda                the compiled CUDA kernels, CUDA tensors
  triton              the Triton kernels, CUDA tensors (on CPU only Triton's interpreter: never timed)
  compiled_reference  torch.compile of the reference (default with --compile or --full)
  usable here: cpu tensors: {cpu}; cuda tensors: {cuda}
--backends applies to the kernel benchmarks. The backbone benchmark has its own contenders: the
base of its speedups (real mmaction2 eager when installed, else our module on the reference
backend), ours eager on `auto`, ours after optimize_for_inference (plus a CUDA graph on CUDA), and
with --compile torch.compile peers (listed in slowfast_fast/bench/backbone.py's docstring and in
each row's backend column).

performance model (kernel ops; columns predicted and meas/pred, in JSON/CSV predicted_ms and
measured_over_predicted; slowfast_fast/bench/perf_model.py):
  predicted = fewest bytes the op must move (slowfast_fast/bench/cases.py) / copy bandwidth
              + one per-launch cost
  Both machine numbers are measured at the start of the same run: the copy bandwidth (bytes read +
  written) of a large tensor copy (1 GiB device-to-device on the gpu sizes, 256 MiB on cpu sizes),
  the launch cost as the median time of a 4 KiB tensor copy. meas/pred = median / predicted: 1.0 is
  a kernel that streams its bytes at copy speed in one launch. The model ignores arithmetic, caches
  and re-read bytes: at CPU sizes the tensors fit in cache, so meas/pred can be below 1 there.
  % roofline = 100 x (bytes / copy bandwidth) / median: the same comparison without the launch cost.

load: every output records the 1-minute load average (processes running or waiting for a core).
A run is loaded when at its start the load exceeds the cores it leaves idle by more than 0.5 (on a
2-core machine running 2 threads: above 0.5), or at its end exceeds the core count by more than 0.5.
Loaded timings can be several times off; rerun on a quiet machine.

exit status: 0 every backend matched the reference (timings were taken); 1 some backend was WRONG
or raised an error (see its row's note); 2 a bad command line, or --device cuda without a GPU.

examples:
  python -m slowfast_fast.bench --quick                    # 4x16 only, short timing
  python -m slowfast_fast.bench --size tiny --quick        # a smoke test: tiny shapes, numbers meaningless
  python -m slowfast_fast.bench --ops backbone --threads 1 --out /tmp/bb
  python -m slowfast_fast.bench --backends cpu --dtypes fp32,bf16 --layouts ncdhw --no-plots
"""


def _help_epilog() -> str:
    cuda = ", ".join(_backend.available_backends("cuda")) if torch.cuda.is_available() else "none (no GPU)"
    return EPILOG.format(cpu=", ".join(_backend.available_backends("cpu")), cuda=cuda)


def build_parser() -> argparse.ArgumentParser:
    """The parser; its ``--help`` is the tool's manual."""
    p = argparse.ArgumentParser(
        prog="python -m slowfast_fast.bench",
        description=DESCRIPTION,
        epilog=_help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--ops",
        type=_list,
        default=list(ALL_OPS),
        metavar="LIST",
        help="which benchmarks, comma-separated: lateral_concat (forward), lateral_concat_backward "
        "(gradients of x_slow, x_fast and weight), resample (temporal resampling), backbone (the whole "
        "ResNet3dSlowFast). Default: all",
    )
    p.add_argument(
        "--backends",
        type=_list,
        default=None,
        metavar="LIST",
        help="kernel backends to time, comma-separated (see below). Default: every backend usable on "
        "the device, plus compiled_reference with --compile. The reference is always timed",
    )
    p.add_argument(
        "--dtypes",
        type=_list,
        default=None,
        metavar="LIST",
        help="fp32, bf16, fp16 (the backbone runs low precision as autocast). Default: fp32,bf16 on "
        "CUDA; fp32 on CPU, plus bf16 with --full",
    )
    p.add_argument(
        "--layouts",
        type=_list,
        default=list(cases.LAYOUTS),
        metavar="LIST",
        help="memory formats of the inputs: ncdhw (contiguous), channels_last_3d. Default: both",
    )
    p.add_argument(
        "--configs",
        type=_list,
        default=None,
        metavar="LIST",
        help="SlowFast sampling configs: 4x16, 8x8. Default: both for the kernels, 4x16 for the "
        "backbone; --full: both everywhere; --quick: 4x16",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to run: auto is cuda when a GPU is visible, else cpu (default: auto)",
    )
    p.add_argument(
        "--size",
        choices=("auto", *cases.SIZES),
        default="auto",
        help="problem sizes: gpu = BASELINE.md's (batch 8 x 32 frames x 224x224 kernel clips, "
        "32x224x224 backbone clips); cpu = small (batch 2 x 32 x 56x56, backbone 16x40x40); tiny = "
        "for tests. Default (auto): gpu on CUDA, cpu on CPU",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--quick", action="store_true", help="4x16 only and shorter timing (fewer calls per case)"
    )
    length.add_argument(
        "--full",
        action="store_true",
        help="both configs everywhere, bf16 on CPU too, the torch.compile peers, longer timing",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time torch.compile of the reference (and of the backbone); compiling costs tens "
        "of seconds per shape. Default: only with --full",
    )
    p.add_argument(
        "--kernel-batch",
        type=int,
        default=None,
        metavar="N",
        help="batch of the kernel benchmarks' clips (lateral_concat, its backward, resample), e.g. 1 "
        "for the batch-1 latency target. Default: the size preset's (gpu 8, cpu 2, tiny 1)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for PyTorch (torch.set_num_threads). Default: PyTorch's, one per core",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        metavar="DIR",
        help="directory for the JSON, CSV and PNG files, created if missing (default: %(default)s)",
    )
    p.add_argument(
        "--no-plots", action="store_true", help="write no PNG plots (faster; matplotlib not needed)"
    )
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line; a bad value exits with status 2 and a message naming the choices."""
    p = build_parser()
    args = p.parse_args(argv)
    for name, allowed in (
        ("ops", ALL_OPS),
        ("layouts", cases.LAYOUTS),
        ("dtypes", cases.DTYPES),
        ("configs", cases.CONFIGS),
    ):
        bad = [v for v in getattr(args, name) or [] if v not in allowed]
        if bad:
            p.error(f"--{name}: unknown {bad}; choose from {list(allowed)}")
    if args.kernel_batch is not None and args.kernel_batch < 1:
        p.error(f"--kernel-batch must be at least 1, got {args.kernel_batch}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    return args


class Progress:
    """tqdm on a terminal when it is installed; otherwise one line per step on stderr."""

    def __init__(self, total: int):
        self.total, self.done, self.bar = total, 0, None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="run", dynamic_ncols=True)
            except ImportError:
                pass

    def step(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description_str(label[:60], refresh=False)
            self.bar.update(1)
        else:
            print(f"[{self.done}/{self.total}] {label}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _kernel_implementations(args, device, compile_peers: bool) -> list[implementations.Implementation]:
    names = args.backends
    if names is None:
        names = implementations.concrete_backends(device) + (["compiled_reference"] if compile_peers else [])
    chosen = ["reference"]
    for name in names:
        why = implementations.unavailable_reason(name, device)
        if why is not None:
            print(f"skipping backend {name!r}: {why}", file=sys.stderr)
        elif name not in chosen:
            chosen.append(name)
    return [implementations.get(n) for n in chosen]


def _write(out: Path, stem: str, meta: dict, rows: list[dict]) -> None:
    meta["load_1min_end"] = load.load_average()
    report.write_json(out / f"{stem}.json", meta, rows)
    report.write_csv(out / f"{stem}.csv", rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    length = "quick" if args.quick else "full" if args.full else "default"
    size = cases.SIZES[args.size if args.size != "auto" else ("gpu" if device.type == "cuda" else "cpu")]
    if args.kernel_batch is not None:
        size = dataclasses.replace(size, kernel_batch=args.kernel_batch)
    kernel_budget, backbone_budget = BUDGETS[(device.type, length)]
    compile_peers = args.full if args.compile is None else args.compile
    dtypes = args.dtypes or (["fp32", "bf16"] if device.type == "cuda" or args.full else ["fp32"])
    kernel_configs = args.configs or (["4x16"] if args.quick else list(cases.CONFIGS))
    backbone_configs = args.configs or (list(cases.CONFIGS) if args.full else ["4x16"])
    args.out.mkdir(parents=True, exist_ok=True)

    kernel_ops = [op for op in args.ops if op != "backbone"]
    impls = _kernel_implementations(args, device, compile_peers) if kernel_ops else []
    kernel_cases = kernels.build_cases(kernel_ops, size, kernel_configs, dtypes, args.layouts)
    backbone_cases = []
    if "backbone" in args.ops:
        backbone_cases = backbone.build_cases(size, backbone_configs, dtypes, args.layouts)

    meta = report.metadata(
        device,
        ["python -m slowfast_fast.bench", *(argv if argv is not None else sys.argv[1:])],
        size=size.name,
        kernel_batch=size.kernel_batch,
        length=length,
        compile_peers=compile_peers,
        available_backends=_backend.available_backends(device),
        timed_kernel_backends=[i.name for i in impls],
        auto_backend=_backend.resolve(device, "auto"),
    )
    _warn_if_loaded(meta, "the machine is busy")
    if kernel_cases:
        copy_budget = timing.Budget(kernel_budget.warmup_ms, max(kernel_budget.rep_ms, 300), 3)
        bandwidth = timing.copy_bandwidth(device, size.copy_bytes, copy_budget)
        meta["copy_bandwidth_gbps"] = bandwidth / 1e9
        meta["copy_bandwidth_bytes"] = size.copy_bytes
        meta["launch_cost_ms"] = timing.launch_cost(device, copy_budget)
        meta["launch_cost_probe"] = f"{timing.LAUNCH_PROBE_BYTES >> 10} KiB tensor copy"
        print(
            f"{meta['device_name']}: copy bandwidth {bandwidth / 1e9:.1f} GB/s "
            f"(read + write, {size.copy_bytes >> 20} MiB tensor); launch cost "
            f"{report.format_time(meta['launch_cost_ms'])} ({meta['launch_cost_probe']})",
            flush=True,
        )

    total = len(kernel_cases) * len(impls) + sum(
        len(backbone.implementations_for(c, size, compile_peers, device)) for c in backbone_cases
    )
    progress = Progress(total)
    failed = False
    try:
        for op in kernel_ops:
            rows: list[dict] = []
            op_cases = [c for c in kernel_cases if c.op == op]
            for case in op_cases:
                for row in kernels.run_case(
                    case, impls, device, bandwidth, meta["launch_cost_ms"], kernel_budget
                ):
                    row["load_1min"] = load.load_average()
                    rows.append(row)
                    progress.step(
                        f"{op} {case.config} {case.name} {case.dtype} {case.layout} {row['backend']}"
                    )
                _write(args.out, f"{device.type}_{op}", meta, rows)
            failed |= _finish(args, device, op, meta, rows, progress)
        if "backbone" in args.ops:
            rows = []
            for row in backbone.run(backbone_cases, size, device, backbone_budget, compile_peers):
                row["load_1min"] = load.load_average()
                rows.append(row)
                progress.step(
                    f"backbone {row['config']} {row['case']} {row['dtype']} {row['layout']} {row['backend']}"
                )
                _write(args.out, f"{device.type}_backbone", meta, rows)
            failed |= _finish(args, device, "backbone", meta, rows, progress)
    finally:
        progress.close()
    meta["load_1min_end"] = load.load_average()
    _warn_if_loaded(meta, "this run counts as loaded")
    return 1 if failed else 0


def _warn_if_loaded(meta: dict, what: str) -> None:
    """One stderr line when :func:`load.load_problem` finds the run loaded (at the start, and again
    at the end where it is the last thing a reader sees)."""
    problem = load.load_problem(meta)
    if problem is not None:
        print(
            f"warning: {what}: {problem}. Timings can be several times off; "
            "bench.markdown will refuse these results unless given --allow-loaded",
            file=sys.stderr,
        )


def _finish(args, device, op: str, meta: dict, rows: list[dict], progress: Progress) -> bool:
    """Print and plot one op's rows; True if any backend was WRONG or raised."""
    if progress.bar is not None:
        progress.bar.clear()
    print(
        f"\n== {op} on {meta['device_name']} ({device.type}, {meta['cpu_threads']} CPU threads), "
        f"torch {meta['torch']}, {load.describe_load(meta)} =="
    )
    print(report.table(rows), flush=True)
    if not args.no_plots:
        for path in plots.plot(args.out / f"{device.type}_{op}", rows, plots.title(op, meta, rows)):
            print(f"wrote {path}")
    return any(r["status"] in ("WRONG", "ERROR") for r in rows)
