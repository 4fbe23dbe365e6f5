"""Markdown tables from the JSON results of a run (for benchmarks/RESULTS.md, and the short table
that benchmarks/gpu_check.sh prints last).

    python -m slowfast_fast.bench.markdown benchmarks/results --device cpu            # all tables
    python -m slowfast_fast.bench.markdown benchmarks/results --device cuda --summary # headline only

It refuses a run taken on a loaded machine (the rule is in :mod:`slowfast_fast.bench.load`): such
numbers can be several times off, and a summary outlives the warning the benchmark printed.
``--allow-loaded`` renders them anyway, each table then saying it came from a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from slowfast_fast.bench import load
from slowfast_fast.bench.report import format_time, format_time_range

OPS = ("lateral_concat", "lateral_concat_backward", "resample", "backbone")


# Exit status of main when a result file comes from a loaded run and --allow-loaded was not given.
EXIT_LOADED = 3


class LoadedRunError(RuntimeError):
    """A result file was measured on a loaded machine and rendering it was not asked for."""


def _spread(r: dict) -> str:
    if r["median_ms"] is None:
        return r["status"]
    spread = format_time_range(r["p20_ms"], r["p80_ms"])
    return f"{format_time(r['median_ms'])} ({spread}), min {format_time(r['min_ms'])}"


def _speedup(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(headers: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def describe_run(meta: dict) -> str:
    """One line that says what the numbers were measured on."""
    parts = [
        f"{meta['device_name']} (cpu, {meta['cpu_threads']} thread{'s' if meta['cpu_threads'] != 1 else ''})"
        if meta["device"] == "cpu"
        else meta["device_name"],
        f"{meta['date_utc']} UTC",
        f"torch {meta['torch']}",
        f"size preset `{meta['size']}`",
    ]
    if meta.get("kernel_batch") is not None and meta.get("timed_kernel_backends"):
        parts.append(f"kernel batch {meta['kernel_batch']}")
    if meta.get("timed_kernel_backends"):
        parts.append(f"backends timed: {', '.join(meta['timed_kernel_backends'])}")
    if meta.get("auto_backend"):
        parts.append(f"`auto` resolves to `{meta['auto_backend']}`")
    if meta.get("copy_bandwidth_gbps"):
        parts.append(f"copy bandwidth {meta['copy_bandwidth_gbps']:.1f} GB/s")
    if meta.get("launch_cost_ms") is not None:
        parts.append(f"launch cost {format_time(meta['launch_cost_ms'])}")
    parts.append(load.describe_load(meta))
    problem = load.load_problem(meta)
    if problem is not None:
        parts.append(f"**LOADED machine, timings unreliable**: {problem}")
    return "; ".join(parts)


def _sum(points: list[dict], key: str) -> float | None:
    """Sum of ``key`` over the four fusion points, or None unless all four were timed."""
    if len(points) != 4 or any(r[key] is None for r in points):
        return None
    return sum(r[key] for r in points)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _times(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def model_note(meta: dict) -> str:
    """What the predicted and measured / predicted columns mean, with this run's two numbers."""
    if meta.get("launch_cost_ms") is None:
        return "(This run predates the performance model: no predicted times.)"
    text = (
        "Performance model: predicted = fewest bytes the op must move / copy bandwidth "
        f"({meta['copy_bandwidth_gbps']:.1f} GB/s) + one launch ({format_time(meta['launch_cost_ms'])}, "
        f"the median of a {meta.get('launch_cost_probe', 'tiny tensor copy')}), both measured in this "
        "run; measured / predicted is the median over it (1.00 = streaming the bytes at copy speed in "
        "one launch). It ignores arithmetic and caches"
    )
    if meta["device"] == "cpu":
        copy = meta.get("copy_bandwidth_bytes")
        copy_text = f"{copy >> 20} MiB copy" if copy else "large copy"
        text += (
            f": at these CPU sizes the tensors fit in cache, faster than the {copy_text} that sets the "
            "bandwidth, so measured / predicted can be below 1"
        )
    return text + "."


def lateral_sums(rows: list[dict]) -> str:
    """Per config, dtype, layout and backend: the sum over the four fusion points (as BASELINE.md
    reports the reference) of the medians and of the minima, with the roofline of the sum."""
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["config"], r["dtype"], r["layout"])][r["backend"]].append(r)
    lines = []
    for (config, dtype, layout), by_backend in groups.items():
        reference = by_backend.get("reference", [])
        ref_median, ref_min = _sum(reference, "median_ms"), _sum(reference, "min_ms")
        for backend, points in by_backend.items():
            median, fastest = _sum(points, "median_ms"), _sum(points, "min_ms")
            roofline = sum(r["roofline_ms"] for r in points)
            predicted = _sum(points, "predicted_ms") if all("predicted_ms" in r for r in points) else None
            pct = _ratio(100 * roofline, median)
            lines.append([
                config, dtype, layout, backend, ",".join(sorted({r["status"] for r in points})),
                format_time(median), format_time(fastest), format_time(roofline),
                "-" if pct is None else f"{pct:.0f}", format_time(predicted),
                _times(_ratio(median, predicted)),
                _speedup(_ratio(ref_median, median)), _speedup(_ratio(ref_min, fastest)),
            ])  # fmt: skip
    headers = ["config", "dtype", "layout", "backend", "status", "sum of medians", "sum of minima",
               "roofline", "% roofline (median)", "predicted", "measured / predicted (median)",
               "speedup (medians)", "speedup (minima)"]  # fmt: skip
    return _table(headers, lines)


def kernel_cases(rows: list[dict]) -> str:
    lines = [
        [
            r["config"] or "-", r["case"], r["dtype"], r["layout"], r["backend"], _spread(r),
            "-" if r["gbps"] is None else f"{r['gbps']:.1f}",
            "-" if r["pct_roofline"] is None else f"{r['pct_roofline']:.0f}",
            format_time(r.get("predicted_ms")), _times(r.get("measured_over_predicted")),
            _speedup(r["speedup"]),
        ]
        for r in rows
    ]  # fmt: skip
    headers = ["config", "case", "dtype", "layout", "backend", "median (p20-p80), min", "GB/s",
               "% roofline", "predicted", "measured / predicted", "speedup"]  # fmt: skip
    return _table(headers, lines)


def backbone_cases(rows: list[dict]) -> str:
    lines = [
        [
            r["config"], r["case"], r["dtype"], r["layout"], r["backend"], _spread(r), _speedup(r["speedup"]),
            "n/a" if r["peak_mem_mib"] is None else f"{r['peak_mem_mib']:.0f}", r["note"],
        ]
        for r in rows
    ]  # fmt: skip
    headers = ["config", "case", "dtype", "layout", "backend", "median (p20-p80), min", "speedup",
               "extra peak MiB", "note"]  # fmt: skip
    return _table(headers, lines)


def render(directory: Path, device: str, summary: bool, allow_loaded: bool = False) -> str:
    """Markdown for every op file of ``device`` in ``directory``; ``summary`` keeps the headline
    tables (fusion-point sums, resampling, backbone) and drops the per-point ones.

    Raises :class:`LoadedRunError` if a file comes from a loaded run, unless ``allow_loaded``, and
    ``FileNotFoundError`` if ``directory`` holds no result file of ``device``."""
    loaded_files = {}
    results = {}
    for op in OPS:
        path = directory / f"{device}_{op}.json"
        if path.exists():
            results[op] = json.loads(path.read_text())
            problem = load.load_problem(results[op]["meta"])
            if problem is not None:
                loaded_files[path] = problem
    if not results:
        names = ", ".join(f"{device}_{op}.json" for op in OPS)
        raise FileNotFoundError(f"no benchmark results in {directory}: expected any of {names}")
    if loaded_files and not allow_loaded:
        lines = "\n".join(f"  {path}: {problem}" for path, problem in loaded_files.items())
        raise LoadedRunError(
            f"refusing to summarize results measured on a loaded machine (timings can be several times "
            f"off):\n{lines}\nRerun the benchmark on a quiet machine, or pass --allow-loaded to render "
            "them marked as loaded."
        )
    sections = []
    for op, data in results.items():
        meta, rows = data["meta"], data["rows"]
        body = [f"### {op}", "", describe_run(meta), ""]
        if not rows:
            body.append("(no rows)")
        elif op.startswith("lateral_concat"):
            body += [model_note(meta), "", "Sum over the four fusion points:", "", lateral_sums(rows)]
            if not summary:
                body += ["", "Per fusion point:", "", kernel_cases(rows)]
        elif op == "resample":
            body += [model_note(meta), "", kernel_cases(rows)]
        else:
            body.append(backbone_cases(rows))
        sections.append("\n".join(body))
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m slowfast_fast.bench.markdown",
        description="Print Markdown tables (for benchmarks/RESULTS.md) of the JSON files that "
        "python -m slowfast_fast.bench wrote to DIRECTORY. Refuses results measured on a loaded "
        "machine. Exit status: 0 printed; 2 bad command line or no result files; "
        f"{EXIT_LOADED} refused (a loaded run, without --allow-loaded).",
    )
    p.add_argument("directory", type=Path, help="the benchmark's --out directory")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="whose files (default: cpu)")
    p.add_argument("--summary", action="store_true", help="headline tables only (no per-fusion-point tables)")
    p.add_argument(
        "--allow-loaded",
        action="store_true",
        help="render results from a loaded machine too (they are marked as such)",
    )
    args = p.parse_args(argv)
    try:
        text = render(args.directory, args.device, args.summary, args.allow_loaded)
    except LoadedRunError as exc:
        print(exc, file=sys.stderr)
        return EXIT_LOADED
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
