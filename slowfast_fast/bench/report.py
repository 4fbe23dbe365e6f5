"""Output of a benchmark run: result rows, the metadata every file carries, a plain table on stdout
with times in a unit that fits (µs, ms, s), and JSON and CSV files. Plots are in :mod:`plots`."""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import traceback
from pathlib import Path

import torch

from slowfast_fast.bench import load

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
    "predicted_ms",  # the performance model's time for the case (perf_model.predicted_ms)
    "measured_over_predicted",  # median_ms / predicted_ms
    "speedup",
    "max_err",
    "tol",
    "peak_mem_mib",
    "load_1min",  # the 1-minute load average when the row's case finished
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
        # Other processes on the machine distort timings (see bench/load.py); the end value is
        # filled in as the run goes.
        "load_1min_start": load.load_average(),
        "load_1min_end": None,
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        from slowfast_fast._precision import conv_allows_tf32

        meta["cudnn_allow_tf32"] = conv_allows_tf32()
    meta.update(extra)
    return meta


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# Time units from the largest down, with their size in milliseconds.
_UNITS = (("s", 1e3), ("ms", 1.0), ("µs", 1e-3))


def _sig3(value: float) -> str:
    """Three significant digits, trailing zeros kept (``1.20``, ``14.4``, ``143``)."""
    return format(value, "#.3g").rstrip(".")


def time_unit(ms: float) -> tuple[str, float]:
    """The largest unit in which ``ms`` reads as at least 1 after rounding to 3 digits, and its size
    in ms (µs for anything shorter)."""
    for name, size in _UNITS[:-1]:
        if float(format(ms / size, ".3g")) >= 1:
            return name, size
    return _UNITS[-1]


def format_time(ms: float | None, trim: bool = False) -> str:
    """``ms`` milliseconds in a unit that fits, with 3 significant digits: ``143 µs``,
    ``1.44 ms``, ``14.4 s``; ``-`` for None. ``trim`` drops trailing zeros (``50 µs``, for ticks)."""
    if ms is None:
        return "-"
    unit, size = time_unit(ms)
    value = format(ms / size, ".3g") if trim else _sig3(ms / size)
    return f"{value} {unit}"


def format_time_range(low_ms: float | None, high_ms: float | None) -> str:
    """A spread in the unit of its upper end: ``128-145 µs``, ``0.950-1.02 ms``; ``-`` if unmeasured."""
    if low_ms is None or high_ms is None:
        return "-"
    unit, size = time_unit(high_ms)
    return f"{_sig3(low_ms / size)}-{_sig3(high_ms / size)} {unit}"


def table(rows: list[dict]) -> str:
    """A fixed-width text table of ``rows``: times with their unit, the p20-p80 spread of the
    timed calls, the performance model's prediction and measured (median) / predicted, and the load
    average when each row was measured."""
    headers = (
        "op",
        "config",
        "case",
        "dtype",
        "layout",
        "backend",
        "status",
        "median",
        "p20-p80",
        "min",
        "GB/s",
        "% roofline",
        "predicted",
        "meas/pred",
        "speedup",
        "peak MiB",
        "load",
        "note",
    )
    lines = []
    for r in rows:
        lines.append(
            (
                r["op"],
                r["config"] or "-",
                r["case"],
                r["dtype"],
                r["layout"],
                r["backend"],
                r["status"],
                format_time(r["median_ms"]),
                format_time_range(r["p20_ms"], r["p80_ms"]),
                format_time(r["min_ms"]),
                _fmt(r["gbps"], ".1f"),
                _fmt(r["pct_roofline"], ".0f"),
                format_time(r.get("predicted_ms")),
                _fmt(r.get("measured_over_predicted"), ".2f"),
                "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                _fmt(r["peak_mem_mib"], ".0f"),
                _fmt(r.get("load_1min"), ".2f"),
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
