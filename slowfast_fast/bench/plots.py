"""PNG plots of one op's results (they need matplotlib; without it the run says so and skips them).

* ``<prefix>_time.png``: the median time of every backend in every case, on a log axis whose ticks
  are labelled in µs / ms / s (cases differ by orders of magnitude);
* ``<prefix>_speedup.png``: each backend's speedup over the base (the first backend timed: the eager
  reference), on a linear axis with a line at 1x (so a 3% difference looks like 3%);
* ``<prefix>_roofline.png``: percent of the copy-bandwidth roofline, for ops with a byte count.

Every bar is labelled with its value, whiskers span the p20-p80 spread of the timed calls, and a
backend with no number in a case (WRONG, ERROR, or not run there) gets "n/a" where its bar would be.
The title says what the numbers were measured on: op, device, dtypes, threads, date and load.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slowfast_fast.bench import load, report

# Row fields that tell cases apart, and how each appears in a bar's label.
_LABEL_FIELDS = ("config", "case", "dtype", "layout")
_LAYOUT_SHORT = {"channels_last_3d": "cl3d"}


@dataclass(frozen=True)
class _Metric:
    """One plot: ``value(row)`` -> (height, low, high) or None when the row has no number."""

    suffix: str
    ylabel: str
    value: Callable[[dict], tuple[float, float, float] | None]
    text: Callable[[float], str]
    log: bool
    include_reference: bool


def _time(r: dict):
    return None if r["median_ms"] is None else (r["median_ms"], r["p20_ms"], r["p80_ms"])


def _speedup(r: dict):
    if r["speedup"] is None or r["median_ms"] is None:
        return None
    reference_ms = r["speedup"] * r["median_ms"]
    # The reference's median over this backend's p80 and p20: the spread of this backend's calls.
    return r["speedup"], reference_ms / r["p80_ms"], reference_ms / r["p20_ms"]


def _roofline(r: dict):
    if r["pct_roofline"] is None or r["median_ms"] is None:
        return None
    roofline_ms = r["pct_roofline"] * r["median_ms"] / 100
    return r["pct_roofline"], 100 * roofline_ms / r["p80_ms"], 100 * roofline_ms / r["p20_ms"]


def _percent(value: float) -> str:
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


METRICS = (
    _Metric("time", "median time per call (log scale)", _time, report.format_time, True, True),
    _Metric("speedup", "speedup over {base}", _speedup, lambda v: f"{v:.2f}x", False, False),
    _Metric("roofline", "% of copy-bandwidth roofline", _roofline, _percent, False, True),
)


def title(op: str, meta: dict, rows: list[dict]) -> str:
    """Two lines: what was measured and on what, then when and under what load."""
    dtypes = ", ".join(dict.fromkeys(r["dtype"] for r in rows)) or "-"
    threads = meta.get("cpu_threads")
    thread_text = f"{threads} CPU thread{'s' if threads != 1 else ''}"
    loaded = "; LOADED MACHINE: timings unreliable" if load.load_problem(meta) else ""
    return (
        f"{op} on {meta['device_name']} ({meta['device']}); {dtypes}; {thread_text}\n"
        f"{meta['date_utc']} UTC; torch {meta['torch']}; {load.describe_load(meta)}{loaded}\n"
        "bars: median; whiskers: p20-p80 of the timed calls"
    )


def _labeler(rows: list[dict]) -> Callable[[dict], str]:
    """A row's case label, naming only the fields that differ between rows (the rest is in the title)."""
    varying = [f for f in _LABEL_FIELDS if len({r[f] for r in rows}) > 1] or ["case"]

    def label(r: dict) -> str:
        return " ".join(_LAYOUT_SHORT.get(r[f], r[f]) for f in varying if r[f])

    return label


def _nice_bounds(low: float, high: float) -> tuple[float, float]:
    """The 1-2-5 values just below ``low`` and just above ``high``: log-axis limits that are
    themselves labelled ticks, so even a range narrower than a decade shows two labelled ticks."""
    steps = [m * 10.0**e for e in range(-6, 8) for m in (1, 2, 5)]
    return max((s for s in steps if s <= low), default=steps[0]), min(
        (s for s in steps if s >= high), default=steps[-1]
    )


def _draw(ax, metric: _Metric, rows: list[dict]) -> bool:
    """Grouped bars of ``metric``: one group per case, one bar per backend; value labels upright when
    the bars are wide enough for them. False if there is nothing to draw."""
    import matplotlib.ticker as mticker

    label = _labeler(rows)
    labels = list(dict.fromkeys(label(r) for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    if not metric.include_reference:
        # The suites time the base of every speedup first (the eager reference, or mmaction2).
        backends = backends[1:]
    by_key = {(label(r), r["backend"]): r for r in rows}
    values = {key: metric.value(r) for key, r in by_key.items()}
    measured = [v for key, v in values.items() if v is not None and key[1] in backends]
    if not labels or not backends or not measured:
        return False
    width = 0.8 / len(backends)
    # An upright "1.81x" or "14.5 ms" needs about 0.45 inch per bar; else the labels turn sideways.
    upright = ax.figure.get_figwidth() * 0.75 / (len(labels) * len(backends)) >= 0.45
    for i, backend in enumerate(backends):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(labels))]
        points = [values.get((lab, backend)) for lab in labels]
        heights = [math.nan if p is None else p[0] for p in points]
        errors = [
            [0 if p is None else p[0] - p[1] for p in points],
            [0 if p is None else p[2] - p[0] for p in points],
        ]
        ax.bar(xs, heights, width, yerr=errors, capsize=2, label=backend, error_kw={"linewidth": 0.8})
        for x, point, lab in zip(xs, points, labels, strict=True):
            if point is None:
                row = by_key.get((lab, backend))
                why = "n/a" if row is None or row["status"] == "ok" else f"n/a ({row['status']})"
                ax.text(x, 0.02, why, transform=ax.get_xaxis_transform(), rotation=90, ha="center",
                        va="bottom", fontsize=7, color="dimgray")  # fmt: skip
            else:
                ax.annotate(metric.text(point[0]), (x, point[2]), xytext=(0, 3), textcoords="offset points",
                            rotation=0 if upright else 90, ha="center", va="bottom", fontsize=7)  # fmt: skip
    lows, highs = [p[1] for p in measured], [p[2] for p in measured]
    if metric.log:
        ax.set_yscale("log")
        bottom, top = _nice_bounds(min(lows) / 1.2, max(highs) * 3)
        ax.set_ylim(bottom, top)
        ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: report.format_time(v, trim=True)))
        ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    else:
        # Room above the tallest whisker for its value label.
        ax.set_ylim(0, max(max(highs), 1.0) * 1.25)
        if metric.suffix == "speedup":
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel(metric.ylabel.format(base=rows[0]["backend"]))
    ax.grid(axis="y", which="major", linewidth=0.4, alpha=0.5)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return True


def plot(prefix: Path, rows: list[dict], plot_title: str) -> list[Path]:
    """Write the plots of :data:`METRICS` that ``rows`` have numbers for; return their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return []
    written = []
    n_labels = len({_labeler(rows)(r) for r in rows})
    n_backends = len({r["backend"] for r in rows})
    width = min(max(7.0, 0.45 * n_labels * n_backends + 2), 24.0)
    for metric in METRICS:
        fig, ax = plt.subplots(figsize=(width, 5))
        if _draw(ax, metric, rows):
            ax.set_title(plot_title, fontsize=8)
            path = prefix.with_name(f"{prefix.name}_{metric.suffix}.png")
            fig.savefig(path, dpi=110, bbox_inches="tight")
            written.append(path)
        plt.close(fig)
    return written
