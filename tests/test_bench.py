"""The benchmark CLI (``python -m slowfast_fast.bench``): a smoke run on tiny shapes writes its
table, JSON, CSV and plots, with the load average in each, and its correctness gate reports a wrong
backend as WRONG, untimed; then the pieces a reader sees: time formatting, the loaded-run rule and
the markdown's refusal, the plots' labels, and ``--help``."""

import csv
import importlib.util
import json
import re

import pytest

from slowfast_fast import reference
from slowfast_fast.bench import cli, implementations, load, markdown, plots, report, timing

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


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
    assert "median" in stdout and "WRONG" in stdout and "load" in stdout
    assert "predicted" in stdout and "meas/pred" in stdout and "launch cost" in stdout
    assert re.search(r"\d (µs|ms) ", stdout), "times are printed with their unit"

    for op in ("lateral_concat", "lateral_concat_backward", "resample"):
        data = json.loads((tmp_path / f"cpu_{op}.json").read_text())
        meta = data["meta"]
        assert meta["torch"] and meta["copy_bandwidth_gbps"] > 0 and meta["launch_cost_ms"] > 0
        assert meta["load_1min_start"] >= 0 and meta["load_1min_end"] >= 0
        rows = data["rows"]
        assert all(r["load_1min"] >= 0 for r in rows)
        with open(tmp_path / f"cpu_{op}.csv", newline="") as f:
            csv_rows = list(csv.DictReader(f))
        assert len(csv_rows) == len(rows) and all(float(r["load_1min"]) >= 0 for r in csv_rows)
        by_backend = {}
        for row in rows:
            by_backend.setdefault(row["backend"], []).append(row)
        assert set(by_backend) == {"reference", "same", "wrong"}
        # 4x16 only (--quick): 4 fusion points; resampling: 3 scales.
        assert len(by_backend["reference"]) == (3 if op == "resample" else 4)
        for row in by_backend["reference"] + by_backend["same"]:
            assert row["status"] == "ok" and row["median_ms"] > 0 and row["speedup"] > 0, row
            # The performance model, from the two machine numbers this run measured.
            expected = row["bytes"] / (meta["copy_bandwidth_gbps"] * 1e9) * 1e3 + meta["launch_cost_ms"]
            assert row["predicted_ms"] == pytest.approx(expected, rel=1e-12)
            assert row["measured_over_predicted"] == pytest.approx(row["median_ms"] / expected)
        for row in by_backend["wrong"]:
            assert row["status"] == "WRONG" and row["median_ms"] is None, row
            assert row["predicted_ms"] > 0 and row["measured_over_predicted"] is None, row
        assert all(float(r["predicted_ms"]) > 0 for r in csv_rows)
        assert {r["measured_over_predicted"] for r in csv_rows if r["backend"] == "wrong"} == {""}
        if op != "resample":
            assert all(r["pct_roofline"] > 0 for r in by_backend["reference"])

    if HAS_MATPLOTLIB:
        for plot in ("time", "speedup", "roofline"):
            assert (tmp_path / f"cpu_lateral_concat_{plot}.png").stat().st_size > 0


@pytest.mark.parametrize(
    "ms, text",
    [
        (14380.0, "14.4 s"),
        (1281.0, "1.28 s"),
        (999.7, "1.00 s"),  # rounds up into the next unit, never "1.00e+03 ms"
        (56.0, "56.0 ms"),
        (1.2, "1.20 ms"),
        (0.99996, "1.00 ms"),
        (0.3294, "329 µs"),
        (0.01, "10.0 µs"),
        (0.0005, "0.500 µs"),
        (None, "-"),
    ],
)
def test_times_print_in_a_fitting_unit_with_three_digits(ms, text):
    assert report.format_time(ms) == text


def test_spread_uses_the_unit_of_its_upper_end():
    assert report.format_time_range(12810.0, 14520.0) == "12.8-14.5 s"
    assert report.format_time_range(0.95, 1.02) == "0.950-1.02 ms"
    assert report.format_time_range(None, None) == "-"
    assert report.format_time(50e-3, trim=True) == "50 µs"


def _row(backend, case="layer1_lateral", median=2.0, speedup=None, status="ok", **fields):
    timed = median is not None
    return report.new_row(
        op="lateral_concat", config="4x16", case=case, dtype="fp32", layout="ncdhw", backend=backend,
        status=status, median_ms=median, p20_ms=median * 0.9 if timed else None,
        p80_ms=median * 1.2 if timed else None, min_ms=median * 0.8 if timed else None, speedup=speedup,
        load_1min=0.25, **fields,
    )  # fmt: skip


def test_table_prints_units_and_load():
    text = report.table([_row("reference", median=14380.0), _row("cpu", median=0.3294, speedup=1.5)])
    assert "14.4 s" in text and "12.9-17.3 s" in text and "329 µs" in text and "0.25" in text
    assert "e+" not in text


def _meta(**fields):
    meta = {"device": "cpu", "cpu_threads": 2, "cpu_count": 2, "load_1min_start": 0.2, "load_1min_end": 1.9}
    meta.update(fields)
    return meta


@pytest.mark.parametrize(
    "fields, message",
    [
        ({}, None),
        (
            {"load_1min_start": 0.6},
            r"load average was 0.60 at the start, on 2 CPUs of which the run leaves 0",
        ),
        ({"load_1min_end": 2.6}, r"was 2.60 at the end, on 2 CPUs \(at most 2.5 is quiet\)"),
        ({"load_1min_start": None}, "not recorded"),
        ({"cpu_threads": 1, "load_1min_start": 1.4}, None),  # one core left idle for the others
        ({"cpu_threads": 1, "load_1min_start": 1.6}, r"leaves 1 idle \(at most 1.5 is quiet\)"),
        ({"device": "cuda", "cpu_count": 16, "cpu_threads": 16, "load_1min_start": 8.0}, None),
        ({"device": "cuda", "cpu_count": 16, "load_1min_start": 15.6}, "leaves 15 idle"),
    ],
)
def test_load_rule(fields, message):
    problem = load.load_problem(_meta(**fields))
    if message is None:
        assert problem is None
    else:
        assert problem is not None and re.search(message, problem), problem


def _write_results(directory, **meta_fields):
    meta = _meta(
        device_name="Test CPU", date_utc="2026-11-30 12:00", torch="2.14", size="tiny", **meta_fields
    )
    rows = [
        _row("reference", case="inference_b1", median=56.0),
        _row("auto", case="inference_b1", median=50.0),
    ]
    for r in rows:
        r.update(op="backbone", suite="backbone")
    (directory / "cpu_backbone.json").write_text(json.dumps({"meta": meta, "rows": rows}))


def test_markdown_renders_a_quiet_run_with_its_load(tmp_path, capsys):
    _write_results(tmp_path)
    assert markdown.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "load 0.20 at start, 1.90 at end (1-min avg, 2 CPUs)" in out and "56.0 ms (50.4-67.2 ms)" in out
    assert "LOADED" not in out


def test_markdown_refuses_a_loaded_run_unless_asked(tmp_path, capsys):
    _write_results(tmp_path, load_1min_start=3.0)
    assert markdown.main([str(tmp_path), "--summary"]) == markdown.EXIT_LOADED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "refusing to summarize results measured on a loaded machine" in captured.err
    assert "cpu_backbone.json: the 1-minute load average was 3.00 at the start" in captured.err
    assert "--allow-loaded" in captured.err

    assert markdown.main([str(tmp_path), "--summary", "--allow-loaded"]) == 0
    assert "**LOADED machine, timings unreliable**" in capsys.readouterr().out


def test_markdown_says_when_there_are_no_results(tmp_path, capsys):
    assert markdown.main([str(tmp_path), "--device", "cuda"]) == 2
    assert (
        f"no benchmark results in {tmp_path}: expected any of cuda_lateral_concat.json"
        in capsys.readouterr().err
    )


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="needs matplotlib")
def test_plots_label_every_bar_and_mark_missing_ones():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        _row("reference", case="conv1_lateral", median=0.5, speedup=1.0),
        _row("cpu", case="conv1_lateral", median=0.25, speedup=2.0),
        _row("reference", case="layer1_lateral", median=20.0, speedup=1.0),
        _row("cpu", case="layer1_lateral", median=None, status="WRONG"),
    ]
    by_suffix = {m.suffix: m for m in plots.METRICS}
    fig, ax = plt.subplots()
    assert plots._draw(ax, by_suffix["speedup"], rows)
    texts = [t.get_text() for t in ax.texts]
    assert "2.00x" in texts and "n/a (WRONG)" in texts
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0

    fig, ax = plt.subplots()
    assert plots._draw(ax, by_suffix["time"], rows)
    fig.canvas.draw()
    assert {"500 µs", "250 µs", "20.0 ms"} <= {t.get_text() for t in ax.texts}
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert "1 ms" in ticks and "10 ms" in ticks, ticks
    plt.close("all")

    title = plots.title(
        "lateral_concat", _meta(device_name="Test CPU", date_utc="2026-11-30 12:00", torch="2.14"), rows
    )
    assert "fp32" in title and "2 CPU threads" in title and "2026-11-30 12:00 UTC" in title
    assert "load 0.20 at start, 1.90 at end" in title and "LOADED" not in title
    loaded = _meta(device_name="x", date_utc="d", torch="t", load_1min_start=4.0)
    assert "LOADED MACHINE" in plots.title("op", loaded, rows)


def test_help_says_what_it_does_where_files_go_and_what_the_exit_status_means(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    needed = (
        "Benchmark slowfast_fast against the pure-PyTorch reference", "benchmarks/results",
        "OUT/<dev>_<op>.json", "_time.png", "exit status: 0", "1 some backend was WRONG",
        "compiled_reference", "triton", "usable here: cpu tensors: reference", "load average",
        "performance model", "meas/pred", "measured_over_predicted", "4 KiB tensor copy",
        "256 MiB on cpu sizes", "fit in cache",
    )  # fmt: skip
    missing = [phrase for phrase in needed if phrase not in text]
    assert not missing, missing
    unexplained = [a.option_strings for a in cli.build_parser()._actions if not a.help]
    assert not unexplained, f"flags without help: {unexplained}"
    assert "Command line of" not in text


def test_bad_threads_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


def test_time_cpu_runs_prepare_before_every_call_and_can_shuffle():
    """``prepare`` runs right before each call of its contender (warmup included); with ``shuffle``
    every contender still runs once per round."""
    log: list[str] = []
    fns = {name: (lambda n=name: log.append(n)) for name in ("a", "b", "c")}
    prepare = {"a": lambda: log.append("prep a")}
    budget = timing.Budget(warmup_ms=0, rep_ms=0, min_reps=5)
    out = timing.time_cpu(fns, budget, prepare=prepare, shuffle=True)
    assert all(t.reps == 5 for t in out.values())
    assert [log[i + 1] for i, e in enumerate(log) if e == "prep a"] == ["a"] * 5
    assert log.count("a") == log.count("b") == log.count("c") == 5


def test_time_cpu_shuffles_more_than_two_contenders_by_default():
    """A fixed rotation of three runs each contender after the same one every round; the default
    draws new orders, so over many rounds each follows both others. Two always alternate."""
    for names in (("a", "b", "c"), ("a", "b")):
        log: list[str] = []
        fns = {name: (lambda n=name, log=log: log.append(n)) for name in names}
        timing.time_cpu(fns, timing.Budget(warmup_ms=0, rep_ms=0, min_reps=40, max_reps=40))
        rounds = [tuple(log[i : i + len(names)]) for i in range(0, len(log), len(names))]
        assert len(rounds) == 40 and all(sorted(r) == sorted(names) for r in rounds)
        followers = {(r[i], r[i + 1]) for r in rounds for i in range(len(r) - 1)}
        if len(names) == 3:
            assert len(set(rounds)) > 3  # a fixed rotation has exactly 3 orders
            assert {b for a, b in followers if a == "a"} == {"b", "c"}
        else:
            assert set(rounds) == {("a", "b"), ("b", "a")}
