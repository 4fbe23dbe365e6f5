"""Smoke test of the benchmark CLI (``python -m slowfast_fast.bench``) on tiny shapes: it writes
its table, JSON and CSV, and its correctness gate reports a wrong backend as WRONG, untimed."""

import csv
import importlib.util
import json

import pytest

from slowfast_fast import reference
from slowfast_fast.bench import cli, implementations


def _lateral_off_by_one_frame(x_slow, x_fast, weight, stride, padding):
    """A plausible kernel bug: the temporal window starts one fast frame late."""
    return reference.lateral_concat(x_slow, x_fast.roll(-1, dims=2), weight, stride, padding)


def _resample_off_by_one_frame(x, scale_factor):
    return reference.temporal_resample(x.roll(-1, dims=2), scale_factor)


@pytest.fixture
def fake_backends():
    """``same``: the reference under another name (must pass the gate and be timed);
    ``wrong``: off by one frame (must be WRONG and not timed)."""
    implementations.register(
        "same", lateral_concat=reference.lateral_concat, temporal_resample=reference.temporal_resample
    )
    implementations.register(
        "wrong", lateral_concat=_lateral_off_by_one_frame, temporal_resample=_resample_off_by_one_frame
    )
    yield
    implementations.unregister("same")
    implementations.unregister("wrong")


def test_cli_writes_results_and_flags_wrong_backend(tmp_path, capsys, fake_backends):
    ops = "lateral_concat,lateral_concat_backward,resample"
    argv = ["--device", "cpu", "--size", "tiny", "--quick", "--ops", ops, "--backends", "same,wrong",
            "--layouts", "channels_last_3d", "--out", str(tmp_path)]  # fmt: skip
    status = cli.main(argv)
    assert status == 1, "a WRONG backend must make the run fail"

    stdout = capsys.readouterr().out
    assert "median ms" in stdout and "WRONG" in stdout

    for op in ("lateral_concat", "lateral_concat_backward", "resample"):
        data = json.loads((tmp_path / f"cpu_{op}.json").read_text())
        assert data["meta"]["torch"] and data["meta"]["copy_bandwidth_gbps"] > 0
        rows = data["rows"]
        with open(tmp_path / f"cpu_{op}.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == len(rows)
        by_backend = {}
        for row in rows:
            by_backend.setdefault(row["backend"], []).append(row)
        assert set(by_backend) == {"reference", "same", "wrong"}
        # 4x16 only (--quick): 4 fusion points; resampling: 3 scales.
        assert len(by_backend["reference"]) == (3 if op == "resample" else 4)
        for row in by_backend["reference"] + by_backend["same"]:
            assert row["status"] == "ok" and row["median_ms"] > 0 and row["speedup"] > 0, row
        for row in by_backend["wrong"]:
            assert row["status"] == "WRONG" and row["median_ms"] is None, row
        if op != "resample":
            assert all(r["pct_roofline"] > 0 for r in by_backend["reference"])

    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "cpu_lateral_concat_speedup.png").stat().st_size > 0
