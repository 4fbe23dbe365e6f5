"""How busy the machine was while a benchmark ran, and whether that makes its numbers untrustworthy.

Other processes distort timings, multi-threaded CPU ops most: a thread of an op that is descheduled
holds up all the others: a run on a busy 2-core machine reported lateral speedups of 4-6x instead of
1-1.8x, and 3.3 s instead of 56 ms per backbone call. So every output records the 1-minute load average (the
number of processes running or waiting for a core, averaged over the last minute) at the start and
the end of the run, and RESULTS-style summaries refuse a run this module calls loaded.

The rule (:func:`load_problem`): a run is *loaded* when

* at the start, the load exceeds the cores the run leaves idle by more than :data:`LOAD_MARGIN`
  (a CPU run occupies ``cpu_threads`` cores; a GPU run one host thread). On a 2-core machine running
  2 threads that is any start load above 0.5;
* at the end, the load (which now counts the run's own threads) exceeds the core count by more than
  :data:`LOAD_MARGIN`: something else competed for the cores during the run; or
* the load was not recorded (no ``os.getloadavg`` on this system, or a result file from an older
  version): nothing shows the run was quiet.
"""

from __future__ import annotations

import os

# Half a core of other work on average: below it the interleaved timing absorbs the disturbance.
LOAD_MARGIN = 0.5


def load_average() -> float | None:
    """The 1-minute load average now, or None where the system does not report one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _cores_used(meta: dict) -> int:
    return (meta.get("cpu_threads") or 1) if meta.get("device", "cpu") == "cpu" else 1


def load_problem(meta: dict) -> str | None:
    """Why the run that ``meta`` (a result file's metadata) describes counts as loaded, or None when
    it ran on a quiet machine (see the module docstring for the rule)."""
    start, end = meta.get("load_1min_start"), meta.get("load_1min_end")
    cpus = meta.get("cpu_count") or 1
    if start is None:
        return "the load average was not recorded, so nothing shows the machine was quiet"
    idle = max(cpus - _cores_used(meta), 0)
    if start > idle + LOAD_MARGIN:
        return (
            f"the 1-minute load average was {start:.2f} at the start, on {cpus} CPUs of which the run "
            f"leaves {idle} idle (at most {idle + LOAD_MARGIN:.1f} is quiet)"
        )
    if end is not None and end > cpus + LOAD_MARGIN:
        return (
            f"the 1-minute load average was {end:.2f} at the end, on {cpus} CPUs (at most "
            f"{cpus + LOAD_MARGIN:.1f} is quiet): other processes competed with the run"
        )
    return None


def describe_load(meta: dict) -> str:
    """``load 0.40 at start, 1.17 at end (1-min avg, 2 CPUs)``, for titles and headers."""

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    end = meta.get("load_1min_end")
    end_text = f", {fmt(end)} at end" if end is not None else ""
    start_text = fmt(meta.get("load_1min_start"))
    return f"load {start_text} at start{end_text} (1-min avg, {meta.get('cpu_count')} CPUs)"
