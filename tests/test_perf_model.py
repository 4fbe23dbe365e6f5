"""The performance models: the bench's prediction per case (bytes / measured copy bandwidth + one
launch) and where it shows (rows, text table, markdown), and benchmarks/gpu_design_model.py's
Little's-law design model of the H200 (its monotonicity, its byte counts, and its output)."""

import copy
import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slowfast_fast.bench import cases, implementations, kernels, markdown, perf_model, report, timing

ROOT = Path(__file__).resolve().parents[1]
DESIGN_SCRIPT = ROOT / "benchmarks" / "gpu_design_model.py"


def _load_design_model():
    spec = importlib.util.spec_from_file_location("gpu_design_model", DESIGN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


dm = _load_design_model()


# --- the bench's model -------------------------------------------------------------------------


def test_predicted_time_of_a_known_case_is_bytes_over_bandwidth_plus_one_launch():
    """4x16 conv1_lateral at the gpu sizes, fp32: x_slow 8x64x4x56x56 read and written with 16
    lateral channels, 18 of the 32 fast frames read (k5 s8 p2), weight 16x8x5: 72,256,000 bytes."""
    shape = cases.lateral_shapes(cases.SIZES["gpu"], cases.CONFIGS["4x16"])[0]
    plane = 8 * 56 * 56
    by_hand = 4 * (plane * 64 * 4 + plane * 8 * 18 + 16 * 8 * 5 + plane * 80 * 4)
    assert shape.forward_bytes(4) == by_hand == 72_256_000
    assert perf_model.predicted_ms(by_hand, 1e12, 0.0) == pytest.approx(0.072256)
    assert perf_model.predicted_ms(by_hand, 1e12, 0.003) == pytest.approx(0.075256)
    assert perf_model.predicted_ms(0, 1e12, 0.003) == pytest.approx(0.003)  # identity: one call


def test_run_case_rows_carry_the_prediction_and_the_ratio():
    case = kernels.build_cases(["lateral_concat"], cases.SIZES["tiny"], ["4x16"], ["fp32"], ["ncdhw"])[1]
    impls = [implementations.get("reference")]
    one_call = timing.Budget(warmup_ms=0, rep_ms=0, min_reps=1, max_reps=1)
    (row,) = kernels.run_case(case, impls, torch.device("cpu"), 2e9, 0.01, one_call)
    expected = case.bytes / 2e9 * 1e3 + 0.01
    assert row["status"] == "ok" and row["predicted_ms"] == pytest.approx(expected)
    assert row["roofline_ms"] == pytest.approx(case.bytes / 2e9 * 1e3)
    assert row["measured_over_predicted"] == pytest.approx(row["median_ms"] / expected)


def test_launch_cost_is_measured_and_small():
    budget = timing.Budget(warmup_ms=1, rep_ms=5, min_reps=5, max_reps=200)
    ms = timing.launch_cost(torch.device("cpu"), budget)
    assert 0 < ms < 5  # a 4 KiB copy: microseconds, even on a busy machine


def _lateral_row(backend, case, median, predicted):
    return report.new_row(
        suite="kernels", op="lateral_concat", config="4x16", case=case, dtype="fp32", layout="ncdhw",
        backend=backend, median_ms=median, p20_ms=median, p80_ms=median, min_ms=median, roofline_ms=0.5,
        pct_roofline=50.0, gbps=1.0, predicted_ms=predicted, measured_over_predicted=median / predicted,
        speedup=1.0, load_1min=0.1,
    )  # fmt: skip


def _write_lateral(directory: Path, with_model: bool = True):
    meta = {"device": "cpu", "device_name": "Test CPU", "cpu_threads": 2, "cpu_count": 2,
            "date_utc": "2026-11-30 12:00", "torch": "2.14", "size": "cpu", "copy_bandwidth_gbps": 20.0,
            "load_1min_start": 0.1, "load_1min_end": 0.2}  # fmt: skip
    if with_model:
        meta.update(launch_cost_ms=0.002, launch_cost_probe="4 KiB tensor copy", copy_bandwidth_bytes=1 << 28)
    rows = [
        _lateral_row("reference", point, median, 0.8)
        for point, median in zip([p for p, _, _ in cases.FUSION_POINTS], (2.0, 1.0, 1.0, 0.8), strict=True)
    ]
    if not with_model:
        for r in rows:
            del r["predicted_ms"], r["measured_over_predicted"]
    (directory / "cpu_lateral_concat.json").write_text(json.dumps({"meta": meta, "rows": rows}))


def test_markdown_shows_predicted_and_measured_over_predicted(tmp_path):
    _write_lateral(tmp_path)
    text = markdown.render(tmp_path, "cpu", summary=False)
    assert "| predicted | measured / predicted (median) |" in text  # the sum table
    assert "| predicted | measured / predicted | speedup |" in text  # the per-point table
    # Sum: 2.0 + 1.0 + 1.0 + 0.8 = 4.8 ms measured over 4 x 0.8 = 3.2 ms predicted.
    assert "| 3.20 ms | 1.50 |" in text
    assert "| 800 µs | 2.50 |" in text and "| 800 µs | 1.00 |" in text
    assert "launch cost 2.00 µs" in text and "the median of a 4 KiB tensor copy" in text
    assert "fit in cache" in text and "256 MiB copy" in text and "can be below 1" in text


def test_gpu_check_final_table_shows_measured_over_predicted(tmp_path):
    """benchmarks/gpu_check.sh ends with the markdown summary of its results: the fusion-point sums,
    which carry the prediction (its end-to-end run without a GPU is tests/test_gpu_defects.py's)."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert 'MARKDOWN_ARGS=(--device "$DEVICE" --summary)' in script
    assert 'python -m slowfast_fast.bench.markdown "$BENCH_OUT" "${MARKDOWN_ARGS[@]}"' in script
    _write_lateral(tmp_path)
    summary = markdown.render(tmp_path, "cpu", summary=True)
    assert "measured / predicted (median)" in summary and "| 3.20 ms | 1.50 |" in summary
    assert "Per fusion point" not in summary


def test_markdown_renders_results_from_before_the_model(tmp_path):
    _write_lateral(tmp_path, with_model=False)
    text = markdown.render(tmp_path, "cpu", summary=False)
    assert "predates the performance model" in text
    assert "| - | - | 1.00x |" in text  # per point: no prediction, no ratio


def test_text_table_shows_the_prediction():
    text = report.table([_lateral_row("cpu", "layer1_lateral", 1.0, 0.4)])
    header, _, line = text.splitlines()
    assert "predicted" in header and "meas/pred" in header
    assert "400 µs" in line and "2.50" in line


# --- the GPU design model -----------------------------------------------------------------------

SHAPES = dm.gpu_shapes(8)
ALL_POINTS = [s for points in SHAPES.values() for s in points]


def _design(base, **changes):
    design = copy.deepcopy(base)
    design.update(changes)
    return design


def test_a_design_with_no_extra_bytes_moves_exactly_the_minimum():
    minimal = _design(dm.TARGET, x_fast_frames="once", output_channel_tile=None)
    for shape in ALL_POINTS:
        for dtype, itemsize in dm.ITEMSIZE.items():
            assert dm.predict(minimal, shape, dtype).bytes == shape.forward_bytes(itemsize)


def test_streams_at_copy_bandwidth_predict_the_roofline_plus_launches():
    at_copy = _design(dm.REFERENCE, lateral_round_trip=False, launches=1)
    for shape in ALL_POINTS:
        p = dm.predict(at_copy, shape, "fp32")
        assert p.seconds == pytest.approx(dm.roofline_s(shape, "fp32") + dm.H200.launch_s)


def test_reference_pays_the_lateral_round_trip():
    shape = SHAPES["4x16"][1]  # layer1: the lateral output is 8x64x4x56x56
    no_trip = _design(dm.REFERENCE, lateral_round_trip=False)
    extra = dm.predict(dm.REFERENCE, shape, "fp32").bytes - dm.predict(no_trip, shape, "fp32").bytes
    assert extra == 2 * 4 * 8 * 64 * 4 * 56 * 56


def test_old_design_reads_x_fast_once_per_64_channel_tile():
    """layer3 (C_lat 256) reads x_fast four times, conv1 (C_lat 16) once; 4x16 taps do not overlap."""
    conv1, _, _, layer3 = SHAPES["4x16"]
    once = _design(dm.OLD, output_channel_tile=None)
    for shape, tiles in ((conv1, 1), (layer3, 4)):
        fast_old = dm.predict(dm.OLD, shape, "fp32").streams[1].bytes
        fast_once = dm.predict(once, shape, "fp32").streams[1].bytes
        assert fast_old == tiles * fast_once == tiles * 4 * 8 * shape.spatial**2 * shape.c_fast * 18


def test_old_gemm_has_8_kb_in_flight_in_fp32_and_half_where_c_fast_is_8():
    conv1, layer1 = SHAPES["4x16"][:2]
    assert dm.gemm_in_flight(dm.OLD, layer1, 4) == 2 * 16 * 64 * 4 == 8192
    assert dm.gemm_in_flight(dm.OLD, layer1, 2) == 4096
    assert dm.gemm_in_flight(dm.OLD, conv1, 4) == 4096  # K steps of 16 where C_fast is 8


IN_FLIGHT_KNOBS = (
    "gemm_ctas_per_sm",
    "gemm_stages",
    "k_step_channels",
    "pixel_tile",
    "copy_loads_per_thread",
)


@pytest.mark.parametrize("knob", IN_FLIGHT_KNOBS)
def test_more_bytes_in_flight_never_predicts_slower(knob):
    for shape in ALL_POINTS:
        for dtype in dm.ITEMSIZE:
            for latency in (400e-9, 700e-9, 1000e-9):
                machine = dataclasses.replace(dm.H200, latency_s=latency)
                times = [
                    dm.predict(_design(dm.OLD, **{knob: dm.OLD[knob] * f}), shape, dtype, machine).seconds
                    for f in (1, 2, 4, 8)
                ]
                assert times == sorted(times, reverse=True), (knob, shape.point, dtype, times)
    # Not vacuous: somewhere more in flight is strictly faster.
    layer3 = SHAPES["4x16"][3]
    assert (
        dm.predict(_design(dm.OLD, **{knob: dm.OLD[knob] * 2}), layer3, "bf16").seconds
        < dm.predict(dm.OLD, layer3, "bf16").seconds
    )


def test_flags_that_fill_tiles_or_copy_at_copy_bandwidth_never_predict_slower():
    for shape in ALL_POINTS:
        for dtype in dm.ITEMSIZE:
            base = dm.predict(dm.OLD, shape, dtype).seconds
            for change in (
                {"flat_k_loop": True},
                {"tiles_span_frames": True},
                {"copy_scalar_tail": False},
                {"slow_copy": "own_stage"},
            ):
                assert dm.predict(_design(dm.OLD, **change), shape, dtype).seconds <= base, change


@pytest.mark.parametrize(
    "change",
    [
        {"lateral_round_trip": True},
        {"output_channel_tile": 32},
        {"output_channel_tile": 16},
        {"x_fast_frames": "per_output_frame"},
    ],
)
def test_extra_bytes_never_predict_faster(change):
    base_design = _design(dm.TARGET, x_fast_frames="once")
    grew = 0
    for shape in ALL_POINTS:
        for dtype in dm.ITEMSIZE:
            base = dm.predict(base_design, shape, dtype)
            more = dm.predict(_design(base_design, **change), shape, dtype)
            assert more.bytes >= base.bytes and more.seconds >= base.seconds, (change, shape.point)
            grew += more.bytes > base.bytes
    assert grew > 0, "the change adds bytes somewhere"


def test_no_design_is_predicted_faster_than_the_roofline_plus_its_launches():
    for design in dm.DESIGNS:
        for shape in ALL_POINTS:
            for dtype in dm.ITEMSIZE:
                floor = dm.roofline_s(shape, dtype) + design["launches"] * dm.H200.launch_s
                assert dm.predict(design, shape, dtype).seconds >= floor * (1 - 1e-12)


def test_script_prints_every_fusion_point_labelled_as_predictions():
    done = subprocess.run(
        [sys.executable, str(DESIGN_SCRIPT), "--latency-ns", "650"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for config in cases.CONFIGS:
        for point, _, _ in cases.FUSION_POINTS:
            assert f"#### {config} {point}:" in out
    assert "PREDICTIONS (no GPU was used)" in out and "DRAM latency 650 ns (assumed)" in out
    assert "old @ 650 ns (prediction)" in out and "@ 600 ns" in out and "@ 800 ns" in out
    # Every table's time columns say they are predictions; the one measured column says so.
    for line in out.splitlines():
        if "partials MB" in line:  # the backward partials table: bytes, no times
            assert "µs" not in line and "roofline" not in line, line
        elif line.startswith("| dtype") or line.startswith("| config"):
            times = [h for h in line.split("|") if "µs" in h or "roofline" in h]
            assert times and all("prediction" in h or "MEASURED" in h for h in times), line
    for design in dm.DESIGNS:
        assert f"| {design['name']} |" in out
    # 8 point tables x 6 rows (2 dtypes x 3 designs), plus the sums and the issue-10 check.
    assert out.count("| fp32 | old |") == 8 and out.count("| bf16 | new CUDA |") == 8
    assert "### Backward: grad_weight partials (Triton)" in out
    # Each config's layer3 row: twice in the partials table (fp32, bf16), twice in the backward table.
    assert out.count("| 4x16 | layer3_lateral |") == out.count("| 8x8 | layer3_lateral |") == 4
    assert "### Backward (ncdhw): predicted time / roofline" in out


def test_an_autotuned_design_is_predicted_at_its_fastest_config():
    """``configs`` stand for autotuning: the prediction is the fastest single config's, and at R50
    layer3 (C_lat 256) that is the 256-channel tile, which reads x_fast once."""
    design = dm.NEW_TRITON
    singles = [_design(design, **config, configs=None) for config in design["configs"]]
    for shape in ALL_POINTS:
        for dtype in dm.ITEMSIZE:
            for layout in cases.LAYOUTS:
                best = min(dm.predict(d, shape, dtype, layout=layout).seconds for d in singles)
                assert dm.predict(design, shape, dtype, layout=layout).seconds == best
    layer3 = SHAPES["4x16"][3]
    once = dm.predict(_design(singles[0], output_channel_tile=None), layer3, "bf16").streams[1].bytes
    assert dm.predict(design, layer3, "bf16").streams[1].bytes == once
    assert dm.predict(singles[0], layer3, "bf16").streams[1].bytes == 4 * once


def test_k_steps_in_bytes_are_twice_the_channels_in_16_bit_and_capped_by_c_fast():
    conv1, layer1 = SHAPES["4x16"][:2]  # C_fast 8 and 32
    assert dm.k_step(dm.NEW_TRITON, layer1, 4) == 32 and dm.k_step(dm.NEW_TRITON, layer1, 2) == 32
    layer2 = SHAPES["4x16"][2]  # C_fast 64
    assert dm.k_step(dm.NEW_TRITON, layer2, 2) == 64
    assert dm.k_step(dm.NEW_TRITON, conv1, 4) == dm.k_step(dm.NEW_TRITON, conv1, 2) == 16
    assert dm.k_step(dm.OLD, layer2, 2) == 16  # designs without k_step_bytes keep their channels


def test_channels_last_launches_and_fp32_tile_cap():
    layer3 = SHAPES["4x16"][3]
    for dtype in dm.ITEMSIZE:
        ncdhw = dm.predict(dm.NEW_TRITON, layer3, dtype, layout="ncdhw")
        cl = dm.predict(dm.NEW_TRITON, layer3, dtype, layout="channels_last_3d")
        assert ncdhw.launch_s == dm.H200.launch_s and cl.launch_s == 2 * dm.H200.launch_s
        factor = 2 if dtype == "fp32" else 1  # 128-wide tiles in fp32 channels_last_3d
        assert cl.streams[1].bytes == factor * ncdhw.streams[1].bytes


def test_atomic_grad_weight_partials_cost_a_few_percent_of_the_backward():
    """The default (atomic) grad_weight moves its workspace twice (read, zeros written back: G, sum g
    and grad_scale's sums); ordered per-split slabs (deterministic mode; G and sum g each) cost many
    times that at R50's layers 2 and 3."""
    pytest.importorskip("triton")
    worst = {"fp32": 0.0, "bf16": 0.0}
    for shape in ALL_POINTS:
        slab = shape.c_lateral * (shape.c_fast * shape.kernel + 1) * 4
        assert dm.grad_weight_partial_bytes(shape, atomic=True) == 2 * (slab + shape.c_lateral * 4)
        assert dm.grad_weight_partial_bytes(shape, atomic=False) >= 2 * slab
        for dtype, itemsize in dm.ITEMSIZE.items():
            share = dm.grad_weight_partial_bytes(shape, atomic=True) / shape.backward_bytes(itemsize)
            worst[dtype] = max(worst[dtype], share)
    assert worst["fp32"] < 0.03 and worst["bf16"] < 0.06
    layer3 = SHAPES["4x16"][3]
    assert dm.grad_weight_partial_bytes(layer3, False) >= 10 * dm.grad_weight_partial_bytes(layer3, True)


def test_resampling_is_predicted_at_its_bytes_plus_one_launch():
    out = dm.resample_table(8, dm.H200)
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| slow_")]
    assert len(rows) == 4  # 1/8 and 1/4, fp32 and bf16; the identity moves nothing and is left out
    for row in rows:
        roof, time = float(row[3]), float(row[4])
        assert time == pytest.approx(roof + 3.0, abs=0.11)
    slow_8_fp32 = next(r for r in rows if r[0] == "| slow_1/8" and r[1] == "fp32")
    assert float(slow_8_fp32[2]) == pytest.approx(2 * 8 * 3 * 4 * 224 * 224 * 4 / 1e6, abs=0.05)


def test_cuda_design_stages_follow_the_kernel_source():
    """The model's CUDA stages in flight are the kernel's cp.async ring (kStages in cuda_common.cuh)
    less the tile being multiplied, per element size; fp32 NCDHW layer1: 2 CTAs x 3 x 16 x 64 x 4 B."""
    source = (ROOT / "csrc" / "cuda" / "cuda_common.cuh").read_text()
    found = re.search(
        r"constexpr int kStages = sizeof\(T\) == 8 \? (\d+) : sizeof\(T\) == 4 \? (\d+) : (\d+);", source
    )
    assert found, "kStages not found in cuda_common.cuh"
    fp64, fp32, half = (int(g) for g in found.groups())
    assert dm.NEW_CUDA["gemm_stages_by_itemsize"] == {4: fp32 - 1, 2: half - 1}
    layer1 = dm.gpu_shapes(8)["4x16"][1]
    assert dm.gemm_in_flight(dm.NEW_CUDA, layer1, 4) == 2 * (fp32 - 1) * 16 * 64 * 4
    assert dm.gemm_in_flight(dm.NEW_CUDA, layer1, 2) == 2 * (half - 1) * 16 * 64 * 2


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_backward_model_bounds(dtype):
    """L2 re-reads never cost more than DRAM re-reads; one pass over g never more than the Triton
    backward it changes; every design at least its roofline plus its launches."""
    machine = dm.H200
    for points in dm.gpu_shapes(8).values():
        for shape in points:
            roof = dm.backward_roofline_s(shape, dtype, machine)
            for design in dm.BACKWARD_DESIGNS:
                for layout in ("ncdhw", "channels_last_3d"):
                    dram = dm.predict_backward(design, shape, dtype, machine, False, layout)
                    l2 = dm.predict_backward(design, shape, dtype, machine, True, layout)
                    assert l2.seconds <= dram.seconds
                    assert l2.seconds >= roof * 0.99 + design["launches"] * machine.launch_s
            cuda_nc = dm.predict_backward(dm.BACKWARD_CUDA, shape, dtype, machine, True, "ncdhw")
            cuda_cl = dm.predict_backward(dm.BACKWARD_CUDA, shape, dtype, machine, True, "channels_last_3d")
            assert cuda_cl.seconds <= cuda_nc.seconds  # the cp.async ring keeps more in flight
            for l2 in (False, True):
                one = dm.predict_backward(dm.BACKWARD_ONE_PASS, shape, dtype, machine, l2)
                assert (
                    one.seconds <= dm.predict_backward(dm.BACKWARD_TRITON, shape, dtype, machine, l2).seconds
                )


def test_backward_model_l2_reads_g_once_per_kernel():
    """With L2 re-reads grad_input and grad_weight each read g's lateral channels once: at R50 4x16
    layer1 in fp32, 8 x 56 x 56 x 64 x 4 frames x 4 bytes each."""
    shape = dm.gpu_shapes(8)["4x16"][1]
    p = dm.predict_backward(dm.BACKWARD_TRITON, shape, "fp32", dm.H200, l2_rereads=True)
    g = {s.name: s.bytes for s in p.streams}
    assert g["g loads (grad_input)"] == g["g loads (grad_weight)"] == 8 * 56 * 56 * 64 * 4 * 4
    one = dm.predict_backward(dm.BACKWARD_ONE_PASS, shape, "fp32", dm.H200, l2_rereads=True)
    assert {s.name: s.bytes for s in one.streams}["g loads (grad_weight)"] == 0
