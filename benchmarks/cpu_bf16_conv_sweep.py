"""Where PyTorch's own bf16 conv3d goes wrong on this CPU, at lateral-conv shapes.

Each case is ``F.conv3d`` of a bf16 ``(1, C, T, S, S)`` clip with a ``(2C, C, k, 1, 1)`` weight, temporal
stride ``s`` and padding ``(k - 1) // 2``, in NCDHW and channels_last_3d, run a few times and compared
with the float64 conv of the same (bf16-valued) inputs. A case is BAD when the result is non-finite, more
than 5% off relative to the largest output (one bf16 rounding is 0.4%), or the process dies (heap
corruption aborts, segfaults): every case runs in a worker process, restarted after a crash.

This is the evidence behind ``slowfast_fast.backend.reference_bf16_conv_unsafe`` (``auto`` never sends
those bf16 laterals to the reference). Results are machine-specific (oneDNN picks its kernels by CPU
features); see ``benchmarks/RESULTS.md``. Usage::

    python benchmarks/cpu_bf16_conv_sweep.py [--threads 1] [--grid all|main|strided|stride4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

# (k, stride, T) geometries per grid; each is crossed with channels, frame sizes and both layouts.
GRIDS = {
    "main": (
        [(5, 8, 32), (7, 4, 32), (5, 4, 16), (3, 2, 16), (3, 1, 8), (1, 1, 8), (5, 1, 8)],
        (8, 16, 32, 64, 128, 256),
        (4, 7, 8, 14, 16, 28),
    ),
    "strided": (
        [(1, 8, 32), (3, 8, 32), (7, 8, 32), (5, 8, 16), (5, 8, 64), (5, 6, 32), (5, 5, 32)]
        + [(3, 4, 32), (1, 4, 32), (5, 16, 64), (1, 2, 16)],
        (4, 8, 16, 64),
        (7, 8, 10, 12, 14, 20),
    ),
    "stride4": (
        [(7, 4, 64), (5, 4, 32), (3, 4, 16), (9, 4, 32), (7, 4, 16), (3, 3, 24), (5, 2, 32)],
        (4, 8, 16, 32, 64, 128, 256),
        (7, 8, 10, 12, 14, 16, 20, 28),
    ),
}
REPEATS = 3
BAD_ERROR = 0.05


def cases(names: list[str]) -> list[tuple]:
    return [
        (c, hw, k, s, t, cl)
        for name in names
        for (k, s, t) in GRIDS[name][0]
        for c in GRIDS[name][1]
        for hw in GRIDS[name][2]
        for cl in (False, True)
    ]


def worker(path: str, start: int, threads: int) -> None:
    """Runs the cases from ``start`` on, printing START i before and DONE i <error> after each."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    with open(path) as f:
        todo = json.load(f)
    for i in range(start, len(todo)):
        c, hw, k, s, t, cl = todo[i]
        print(f"START {i}", flush=True)
        g = torch.Generator().manual_seed(i)
        x = torch.randn(1, c, t, hw, hw, generator=g).bfloat16()
        w = (torch.randn(2 * c, c, k, 1, 1, generator=g) * 0.1).bfloat16()
        args = ((s, 1, 1), ((k - 1) // 2, 0, 0))
        truth = F.conv3d(x.double(), w.double(), None, *args)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last_3d)
            w = w.contiguous(memory_format=torch.channels_last_3d)
        worst = 0.0
        for _ in range(REPEATS):
            y = F.conv3d(x, w, None, *args).double()
            err = ((y - truth).abs().max() / truth.abs().max()).item()
            worst = err if err != err else max(worst, err)  # NaN sticks
        print(f"DONE {i} {worst}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", default="all", choices=("all", *GRIDS))
    parser.add_argument("--worker", nargs=2, metavar=("CASES", "START"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.threads)
        return
    todo = cases(list(GRIDS) if args.grid == "all" else [args.grid])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(todo, f)
    results: dict[int, str] = {}
    start = 0
    while start < len(todo):
        cmd = [sys.executable, __file__, "--threads", str(args.threads), "--worker", f.name, str(start)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        running = None
        for line in proc.stdout.splitlines():
            word, *rest = line.split()
            if word == "START":
                running = int(rest[0])
            elif word == "DONE":
                results[int(rest[0])] = rest[1]
                running = None
        if running is None:
            break
        results[running] = f"CRASH(rc={proc.returncode})"
        start = running + 1
    bad = 0
    for i, result in sorted(results.items()):
        c, hw, k, s, t, cl = todo[i]
        is_bad = result.startswith("CRASH") or not float(result) <= BAD_ERROR
        bad += is_bad
        layout = "channels_last_3d" if cl else "ncdhw"
        print(f"k={k} stride={s} T={t} C={c:4d} S={hw:3d} {layout:16s} {result}{'  BAD' if is_bad else ''}")
    print(f"bad: {bad} of {len(results)} (threads {args.threads})")


if __name__ == "__main__":
    main()
