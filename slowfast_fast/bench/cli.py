"""Command line of ``python -m slowfast_fast.bench``.

With no flags: every op, every usable backend, both layouts, at the GPU sizes of BASELINE.md on a
GPU (fp32 and bf16) or at small CPU sizes otherwise (fp32, a few minutes on 2 cores). ``--quick``
trims to the 4x16 config and short timing; ``--full`` adds the 8x8 backbone, bf16 on CPU and the
torch.compile peers. Results go to ``<out>/<device>_<op>.{json,csv}`` (rewritten after every case,
so an interrupted run keeps what it measured) and ``<out>/<device>_<op>_{speedup,roofline}.png``.
The exit status is 1 when any backend was WRONG or raised, else 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from slowfast_fast import backend as _backend
from slowfast_fast.bench import backbone, cases, implementations, kernels, report, timing

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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m slowfast_fast.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=_list, default=list(ALL_OPS), help=f"comma list of {', '.join(ALL_OPS)}")
    p.add_argument(
        "--backends",
        type=_list,
        default=None,
        help="comma list (default: reference, every usable backend, compiled_reference with "
        "--compile); the reference is always measured, as every speedup's base",
    )
    p.add_argument(
        "--dtypes",
        type=_list,
        default=None,
        help="fp32, bf16, fp16 (default: fp32,bf16 on CUDA; fp32 on CPU, plus bf16 with --full)",
    )
    p.add_argument("--layouts", type=_list, default=list(cases.LAYOUTS), help="ncdhw, channels_last_3d")
    p.add_argument(
        "--configs",
        type=_list,
        default=None,
        help="4x16, 8x8 (default: both for kernels, 4x16 for the backbone; --full: both; --quick: 4x16)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--size",
        choices=("auto", *cases.SIZES),
        default="auto",
        help="problem sizes (default: gpu on CUDA, cpu on CPU; tiny is for tests)",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--quick", action="store_true", help="4x16 only, short timing")
    length.add_argument("--full", action="store_true", help="all configs and dtypes, torch.compile peers")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time torch.compile of the reference (default: only with --full)",
    )
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: PyTorch's default, all cores)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--no-plots", action="store_true")
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
        length=length,
        compile_peers=compile_peers,
        available_backends=_backend.available_backends(device),
        timed_kernel_backends=[i.name for i in impls],
        auto_backend=_backend.resolve(device, "auto"),
    )
    if meta["load_average_1min"] is not None and meta["load_average_1min"] > (meta["cpu_count"] or 1):
        print(
            f"warning: load average {meta['load_average_1min']:.1f} on {meta['cpu_count']} CPUs: other "
            "processes are running; CPU timings will be noisy",
            file=sys.stderr,
        )
    if kernel_cases:
        copy_budget = timing.Budget(kernel_budget.warmup_ms, max(kernel_budget.rep_ms, 300), 3)
        bandwidth = timing.copy_bandwidth(device, size.copy_bytes, copy_budget)
        meta["copy_bandwidth_gbps"] = bandwidth / 1e9
        print(
            f"{meta['device_name']}: copy bandwidth {bandwidth / 1e9:.1f} GB/s "
            f"(read + write, {size.copy_bytes >> 20} MiB tensor)",
            flush=True,
        )

    total = len(kernel_cases) * len(impls) + sum(
        len(backbone.implementations_for(c, size, compile_peers)) for c in backbone_cases
    )
    progress = Progress(total)
    failed = False
    try:
        for op in kernel_ops:
            rows: list[dict] = []
            op_cases = [c for c in kernel_cases if c.op == op]
            for case in op_cases:
                for row in kernels.run_case(
                    case, impls, device, meta["copy_bandwidth_gbps"] * 1e9, kernel_budget
                ):
                    rows.append(row)
                    progress.step(
                        f"{op} {case.config} {case.name} {case.dtype} {case.layout} {row['backend']}"
                    )
                _write(args.out, f"{device.type}_{op}", meta, rows)
            failed |= _finish(args, device, op, meta, rows, progress)
        if "backbone" in args.ops:
            rows = []
            for row in backbone.run(backbone_cases, size, device, backbone_budget, compile_peers):
                rows.append(row)
                progress.step(
                    f"backbone {row['config']} {row['case']} {row['dtype']} {row['layout']} {row['backend']}"
                )
                _write(args.out, f"{device.type}_backbone", meta, rows)
            failed |= _finish(args, device, "backbone", meta, rows, progress)
    finally:
        progress.close()
    return 1 if failed else 0


def _finish(args, device, op: str, meta: dict, rows: list[dict], progress: Progress) -> bool:
    """Print and plot one op's rows; True if any backend was WRONG or raised."""
    if progress.bar is not None:
        progress.bar.clear()
    print(f"\n== {op} on {meta['device_name']} ({device.type}), torch {meta['torch']} ==")
    print(report.table(rows), flush=True)
    if not args.no_plots:
        for path in report.plot(args.out / f"{device.type}_{op}", rows, f"{op}, {meta['device_name']}"):
            print(f"wrote {path}")
    return any(r["status"] in ("WRONG", "ERROR") for r in rows)
