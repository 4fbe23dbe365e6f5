"""Markdown tables from the JSON results of a run (for benchmarks/RESULTS.md, and the short table
that benchmarks/gpu_check.sh prints last).

    python -m slowfast_fast.bench.markdown benchmarks/results --device cpu            # all tables
    python -m slowfast_fast.bench.markdown benchmarks/results --device cuda --summary # headline only
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

OPS = ("lateral_concat", "lateral_concat_backward", "resample", "backbone")


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _spread(r: dict) -> str:
    if r["median_ms"] is None:
        return r["status"]
    return f"{r['median_ms']:.3g} ({r['p20_ms']:.3g}-{r['p80_ms']:.3g}), min {r['min_ms']:.3g}"


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
    if meta.get("timed_kernel_backends"):
        parts.append(f"backends timed: {', '.join(meta['timed_kernel_backends'])}")
    if meta.get("auto_backend"):
        parts.append(f"`auto` resolves to `{meta['auto_backend']}`")
    if meta.get("copy_bandwidth_gbps"):
        parts.append(f"copy bandwidth {meta['copy_bandwidth_gbps']:.1f} GB/s")
    if meta.get("load_average_1min") is not None:
        parts.append(
            f"1-min load average at start {meta['load_average_1min']:.1f} on {meta['cpu_count']} CPUs"
        )
    return "; ".join(parts)


def _sum(points: list[dict], key: str) -> float | None:
    """Sum of ``key`` over the four fusion points, or None unless all four were timed."""
    if len(points) != 4 or any(r[key] is None for r in points):
        return None
    return sum(r[key] for r in points)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


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
            pct = _ratio(100 * roofline, median)
            lines.append([
                config, dtype, layout, backend, ",".join(sorted({r["status"] for r in points})), _ms(median),
                _ms(fastest), _ms(roofline), "-" if pct is None else f"{pct:.0f}",
                _speedup(_ratio(ref_median, median)), _speedup(_ratio(ref_min, fastest)),
            ])  # fmt: skip
    headers = ["config", "dtype", "layout", "backend", "status", "sum of medians ms", "sum of minima ms",
               "roofline ms", "% roofline (median)", "speedup (medians)", "speedup (minima)"]  # fmt: skip
    return _table(headers, lines)


def kernel_cases(rows: list[dict]) -> str:
    lines = [
        [
            r["config"] or "-", r["case"], r["dtype"], r["layout"], r["backend"], _spread(r),
            "-" if r["gbps"] is None else f"{r['gbps']:.1f}",
            "-" if r["pct_roofline"] is None else f"{r['pct_roofline']:.0f}", _speedup(r["speedup"]),
        ]
        for r in rows
    ]  # fmt: skip
    headers = ["config", "case", "dtype", "layout", "backend", "median ms (p20-p80), min", "GB/s",
               "% roofline", "speedup"]  # fmt: skip
    return _table(headers, lines)


def backbone_cases(rows: list[dict]) -> str:
    lines = [
        [
            r["config"], r["case"], r["dtype"], r["layout"], r["backend"], _spread(r), _speedup(r["speedup"]),
            "n/a" if r["peak_mem_mib"] is None else f"{r['peak_mem_mib']:.0f}", r["note"],
        ]
        for r in rows
    ]  # fmt: skip
    headers = ["config", "case", "dtype", "layout", "backend", "median ms (p20-p80), min", "speedup",
               "extra peak MiB", "note"]  # fmt: skip
    return _table(headers, lines)


def render(directory: Path, device: str, summary: bool) -> str:
    """Markdown for every op file of ``device`` in ``directory``; ``summary`` keeps the headline
    tables (fusion-point sums, resampling, backbone) and drops the per-point ones."""
    sections = []
    for op in OPS:
        path = directory / f"{device}_{op}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        meta, rows = data["meta"], data["rows"]
        body = [f"### {op}", "", describe_run(meta), ""]
        if not rows:
            body.append("(no rows)")
        elif op.startswith("lateral_concat"):
            body += ["Sum over the four fusion points:", "", lateral_sums(rows)]
            if not summary:
                body += ["", "Per fusion point:", "", kernel_cases(rows)]
        elif op == "resample":
            body.append(kernel_cases(rows))
        else:
            body.append(backbone_cases(rows))
        sections.append("\n".join(body))
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("directory", type=Path)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--summary", action="store_true")
    args = p.parse_args(argv)
    print(render(args.directory, args.device, args.summary), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
