"""Issue 11's CPU target, in one run: SlowFast R50 4x16, fp32, inference on a 1x3x32x112x112 clip,
``optimize_for_inference`` against mmaction2 eager (the real one when installed, else our module on
the reference backend), with ours eager alongside, and with ``--compile`` torch.compile of mmaction2
and of the optimized module (each compilation takes minutes on 2 cores).

    python benchmarks/backbone_cpu_target.py [--compile] [--batches 1,2] [--rounds 15]

The contenders are timed in interleaved rounds (:mod:`slowfast_fast.bench.timing`), after the
benchmark's float64 correctness gate; the table's speedup column is over mmaction2 eager. The
1-minute load average is printed before and after: timings taken on a busy machine are not results.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from slowfast_fast.bench import backbone, cases, load, report, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile peers")
    parser.add_argument("--batches", default="1", help="comma-separated inference batches (default: 1)")
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per contender (default: 15)")
    parser.add_argument("--layout", default="ncdhw", choices=list(cases.LAYOUTS), help="input layout")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))
    size = dataclasses.replace(
        cases.SIZES["cpu"], name="cpu_target", backbone_clip=(32, 112, 112), inference_batches=batches
    )
    budget = timing.Budget(warmup_ms=0, rep_ms=0, min_reps=args.rounds, max_reps=args.rounds)
    backbone_cases = [backbone.BackboneCase("4x16", "inference", b, "fp32", args.layout) for b in batches]
    print(f"threads {torch.get_num_threads()}, load average at start {load.load_average()}", flush=True)
    rows = list(backbone.run(backbone_cases, size, torch.device("cpu"), budget, compile_peers=args.compile))
    print(report.table(rows))
    print(f"load average at end {load.load_average()}")


if __name__ == "__main__":
    main()
