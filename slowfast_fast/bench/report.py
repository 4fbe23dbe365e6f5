"""Output of a benchmark run: a plain table on stdout, JSON and CSV files, and PNG plots
(speedup over the reference, and percent of roofline, per case). Plots need matplotlib and are
skipped with a message without it."""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import sys
import traceback
from pathlib import Path

import torch

COLUMNS = (
    "suite",
    "op",
    "config",
    "case",
    "shape",
    "dtype",
    "layout",
    "device",
    "backend",
    "status",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "min_ms",
    "bytes",
    "gbps",
    "roofline_ms",
    "pct_roofline",
    "speedup",
    "max_err",
    "tol",
    "peak_mem_mib",
    "note",
)


def new_row(**fields) -> dict:
    """A result row: every column of :data:`COLUMNS`, unmeasured ones None, status "ok"."""
    row = dict.fromkeys(COLUMNS)
    row.update(status="ok", note="")
    row.update(fields)
    return row


def error_note(exc: BaseException) -> str:
    """One line naming an exception and where it was raised, for a row's note."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}"[:300]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def metadata(device: torch.device, argv: list[str], **extra) -> dict:
    """What the numbers were measured on: every result file carries it."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "cpu_model": _cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "argv": argv,
        # Other processes on the machine slow CPU timings down (and multi-threaded ops most):
        # the load when the run started says how much to trust them.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        from slowfast_fast._precision import conv_allows_tf32

        meta["cudnn_allow_tf32"] = conv_allows_tf32()
    meta.update(extra)
    return meta


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    """A fixed-width text table of ``rows``."""
    headers = (
        "op",
        "config",
        "case",
        "dtype",
        "layout",
        "backend",
        "status",
        "median ms",
        "p20-p80 ms",
        "min ms",
        "GB/s",
        "% roofline",
        "speedup",
        "peak MiB",
        "note",
    )
    lines = []
    for r in rows:
        spread = "-" if r["p20_ms"] is None else f"{r['p20_ms']:.4g}-{r['p80_ms']:.4g}"
        lines.append(
            (
                r["op"],
                r["config"] or "-",
                r["case"],
                r["dtype"],
                r["layout"],
                r["backend"],
                r["status"],
                _fmt(r["median_ms"], ".4g"),
                spread,
                _fmt(r["min_ms"], ".4g"),
                _fmt(r["gbps"], ".1f"),
                _fmt(r["pct_roofline"], ".0f"),
                "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                _fmt(r["peak_mem_mib"], ".0f"),
                r["note"][:70],
            )
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    return "\n".join(out)


def write_json(path: Path, meta: dict, rows: list[dict]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    os.replace(tmp, path)  # a run killed mid-write leaves the previous complete file


def write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _case_label(r: dict) -> str:
    parts = [r["config"], r["case"], r["dtype"], "cl3d" if r["layout"] == "channels_last_3d" else "ncdhw"]
    return " ".join(p for p in parts if p)


def plot(prefix: Path, rows: list[dict], title: str) -> list[Path]:
    """``<prefix>_speedup.png`` (each backend's speedup over the eager reference, per case) and, where
    the op has a byte count, ``<prefix>_roofline.png`` (percent of the copy-bandwidth roofline)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return []
    timed = [r for r in rows if r["median_ms"] is not None]
    labels = list(dict.fromkeys(_case_label(r) for r in timed))
    backends = list(dict.fromkeys(r["backend"] for r in timed))
    written = []
    for metric, suffix, ylabel, skip_reference in (
        ("speedup", "speedup", "speedup over eager reference (x)", True),
        ("pct_roofline", "roofline", "% of copy-bandwidth roofline", False),
    ):
        series = [b for b in backends if not (skip_reference and b == "reference")]
        values = {(_case_label(r), r["backend"]): r[metric] for r in timed if r[metric] is not None}
        if not labels or not series or not values:
            continue
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(labels) * max(1, len(series))), 4.5))
        width = 0.8 / len(series)
        for i, b in enumerate(series):
            xs = [j + i * width for j in range(len(labels))]
            ax.bar(xs, [values.get((lab, b), float("nan")) for lab in labels], width, label=b)
        if metric == "speedup":
            ax.set_yscale("log")  # ratios: 2x faster and 2x slower sit equally far from 1
            ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = prefix.with_name(f"{prefix.name}_{suffix}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
