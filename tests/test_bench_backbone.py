"""The backbone benchmark's rows: every contender is gated on correctness, timed in one run, and
its speedup taken over the base row (mmaction2 eager when installed, else the reference backend)."""

import pytest
import torch

from slowfast_fast.bench import backbone, cases, timing

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

# One timed call per contender: this checks the wiring, not the speed.
_ONE_CALL = timing.Budget(warmup_ms=0, rep_ms=0, min_reps=1, max_reps=1)


def test_inference_rows_are_checked_timed_and_compared_to_the_base():
    size = cases.SIZES["tiny"]
    case = backbone.BackboneCase("4x16", "inference", 1, "fp32", "ncdhw")
    rows = list(backbone.run([case], size, torch.device("cpu"), _ONE_CALL, compile_peers=False))
    base = backbone.base_name()
    assert [r["backend"] for r in rows] == [base, "auto", "optimized"]
    for row in rows:
        assert row["status"] == "ok", row["note"]
        assert row["max_err"] <= row["tol"] and row["median_ms"] > 0
        assert row["speedup"] == pytest.approx(rows[0]["median_ms"] / row["median_ms"])
    assert rows[0]["speedup"] == 1.0
    if base == "mmaction2":
        assert rows[0]["note"].startswith("mmaction2 ")


def test_contenders_per_case():
    """A training case times the base and ours (optimize_for_inference serves inference only); fp32
    inference on CUDA with compile peers adds the CUDA-graph and compiled rows."""
    case = backbone.BackboneCase("4x16", "train", 2, "fp32", "channels_last_3d")
    names = backbone.implementations_for(
        case, cases.SIZES["tiny"], compile_peers=True, device=torch.device("cpu")
    )
    assert names == [backbone.base_name(), "auto"]
    cuda_case = backbone.BackboneCase("4x16", "inference", 8, "fp32", "ncdhw")
    names = backbone.implementations_for(cuda_case, cases.SIZES["gpu"], True, torch.device("cuda"))
    base = backbone.base_name()
    assert names == [base, "auto", "optimized", "optimized_graph", f"compiled_{base}", "compiled_optimized",
                     f"compiled_reduce_overhead_{base}"]  # fmt: skip
