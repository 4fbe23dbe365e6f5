"""Benchmarks of slowfast_fast: ``python -m slowfast_fast.bench --help``.

Kernel microbenchmarks (lateral_concat forward and backward, temporal resampling) at the fusion
points of SlowFast R50, and the whole backbone, each backend against the pure-PyTorch reference
(mmaction2's computation) measured in the same run. Every backend is checked against the reference
before it is timed; a wrong one is reported as WRONG and not timed.

Modules: ``cases`` (shapes), ``timing`` (the one timing helper), ``implementations`` (what is
timed, and the hook to add one), ``correctness`` (the gate), ``kernels`` and ``backbone`` (the
suites), ``perf_model`` (each kernel case's predicted time), ``report`` (table, JSON, CSV),
``plots`` (PNGs), ``load`` (the load average and when a run counts as loaded), ``markdown``
(tables for RESULTS.md), ``cli``.
"""
