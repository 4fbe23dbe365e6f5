"""The benchmark's gates and what it claims to time: the backbone's float64 truth is of the very clip
the contenders see (so a contender 1% off is WRONG), every compiled_reference case really compiles,
the backbone's compile peers are checked and timed as one static compilation, the kernel gate
checks the output's memory format, and gpu_check.sh measures the issue's targets."""

import dataclasses
import functools
import json
import subprocess
from pathlib import Path

import pytest
import torch

from slowfast_fast import reference
from slowfast_fast.bench import backbone, cases, cli, correctness, implementations, kernels, timing

ROOT = Path(__file__).resolve().parents[1]
_ONE_CALL = timing.Budget(warmup_ms=0, rep_ms=0, min_reps=1, max_reps=1)


# --- the backbone's correctness gate -------------------------------------------------------------


def test_backbone_truth_is_computed_from_the_contenders_clip():
    size = cases.SIZES["tiny"]
    x32 = backbone._clip(size, 1, "cpu", "channels_last_3d")
    x64 = backbone._clip(size, 1, "cpu", "ncdhw", torch.float64)
    assert x32.dtype == torch.float32 and x32.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(x64, x32.double())


def _run_backbone_with_auto(monkeypatch, distort):
    """One tiny fp32 inference case whose ``auto`` contender's outputs go through ``distort``."""
    original = backbone._Models.forward_for

    def forward_for(self, name, mode):
        module, forward, backend = original(self, name, mode)
        if name == "auto":
            plain = forward
            forward = lambda x: tuple(distort(o) for o in plain(x))  # noqa: E731
        return module, forward, backend

    monkeypatch.setattr(backbone._Models, "forward_for", forward_for)
    case = backbone.BackboneCase("4x16", "inference", 1, "fp32", "ncdhw")
    rows = list(
        backbone.run([case], cases.SIZES["tiny"], torch.device("cpu"), _ONE_CALL, compile_peers=False)
    )
    return {r["backend"]: r for r in rows}


@pytest.mark.usefixtures("one_cpu_thread")
@pytest.mark.parametrize(
    "distort",
    [lambda o: o * 1.01, lambda o: o + 1e-3 * o.abs().max(), lambda o: o.flip(2)],
    ids=["scaled_1.01", "shifted_1e-3", "frames_reversed"],
)
def test_backbone_gate_rejects_a_contender_one_percent_off(monkeypatch, distort):
    rows = _run_backbone_with_auto(monkeypatch, distort)
    assert rows["auto"]["status"] == "WRONG" and rows["auto"]["median_ms"] is None, rows["auto"]
    base = rows[backbone.base_name()]
    assert base["status"] == "ok" and base["max_err"] <= base["tol"]


@pytest.mark.usefixtures("one_cpu_thread")
def test_backbone_gate_tolerance_is_small_next_to_the_outputs(monkeypatch):
    """On a correct run the tolerance is fp32 rounding, not the size of the outputs (it was as large
    as the outputs when the truth came from another clip)."""
    rows = _run_backbone_with_auto(monkeypatch, lambda o: o)
    size = cases.SIZES["tiny"]
    truth = backbone._truth({}, "4x16", size, 1, torch.device("cpu"))
    scale = max(t.abs().max().item() for t in truth)
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["tol"] < 1e-4 * scale, (row["backend"], row["tol"], scale)


# --- compiled peers: every case compiled, checked and timed as one static compilation ------------


def _counting_compile(monkeypatch):
    """torch.compile with an eager backend that records each compiled graph's input sizes (dynamo's
    caching and recompile rules are the same as inductor's, without inductor's build time)."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append([tuple(i.shape) for i in example_inputs if isinstance(i, torch.Tensor)])
        return gm.forward

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    return graphs


def test_compiled_reference_compiles_every_case(monkeypatch):
    """Dynamo's cache and its recompile limit (8) are per code object: without a reset per case the
    ninth shape ran eager under the compiled_reference name."""
    graphs = _counting_compile(monkeypatch)
    impl = implementations.get("compiled_reference")
    for s in range(1, 13):
        fn = impl.make("lateral_concat")  # once per case, as kernels.run_case does
        before = len(graphs)
        fn(torch.randn(1, 4, 2, s, s), torch.randn(1, 2, 8, s, s), torch.randn(4, 2, 5, 1, 1), 4, 2)
        assert len(graphs) > before, f"case {s} was not compiled"


def test_compiled_row_that_did_not_compile_is_an_error(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # "compiles" nothing
    shape = cases.lateral_shapes(cases.SIZES["tiny"], cases.CONFIGS["4x16"])[0]
    built = kernels.build_cases(["lateral_concat"], cases.SIZES["tiny"], ["4x16"], ["fp32"], ["ncdhw"])
    case = next(c for c in built if c.name == shape.point)
    impls = [implementations.get("reference"), implementations.get("compiled_reference")]
    rows = kernels.run_case(case, impls, torch.device("cpu"), 1e10, 1e-3, _ONE_CALL)
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "ERROR" and "compiled no graph" in rows[1]["note"], rows[1]


@pytest.mark.usefixtures("one_cpu_thread")
def test_backbone_compile_peers_are_checked_and_timed_as_one_static_compilation(monkeypatch):
    """They were checked at batch 1 and timed at the largest batch through the same wrapper, so
    dynamo recompiled with a symbolic batch: the timed peer was a dynamic-shape compilation."""
    graphs = _counting_compile(monkeypatch)
    size = dataclasses.replace(cases.SIZES["tiny"], inference_batches=(1, 2))
    case = backbone.BackboneCase("4x16", "inference", 2, "fp32", "ncdhw")
    rows = list(backbone.run([case], size, torch.device("cpu"), _ONE_CALL, compile_peers=True))
    compiled = [r for r in rows if r["backend"].startswith("compiled_")]
    assert len(compiled) == 2 and all(r["status"] == "ok" for r in rows), [
        (r["backend"], r["note"]) for r in rows
    ]
    clip = (3, *size.backbone_clip)
    clip_batches = [s[0] for g in graphs for s in g if s[1:] == clip]
    assert len(graphs) == 2, f"one compilation per peer, got {len(graphs)}"
    assert clip_batches == [2, 2], clip_batches
    assert all(isinstance(d, int) for g in graphs for s in g for d in s), "a symbolic size was compiled"


# --- the kernel gate checks the memory format ------------------------------------------------------


def test_check_rejects_an_output_in_the_wrong_memory_format():
    x = torch.randn(1, 4, 2, 3, 3)
    cl = x.contiguous(memory_format=torch.channels_last_3d)
    assert correctness.check([cl], [x], [x.double()], memory_format=torch.channels_last_3d).ok
    verdict = correctness.check([x], [x], [x.double()], memory_format=torch.channels_last_3d)
    assert not verdict.ok and "not channels_last_3d" in verdict.describe()
    verdict = correctness.check([cl], [x], [x.double()], memory_format=torch.contiguous_format)
    assert not verdict.ok and "not contiguous" in verdict.describe()


def _lateral_contiguous(x_slow, x_fast, weight, stride, padding):
    return reference.lateral_concat(x_slow, x_fast, weight, stride, padding).contiguous()


def _resample_contiguous(x, scale_factor):
    return reference.temporal_resample(x, scale_factor).contiguous()


@pytest.fixture
def contiguous_backend():
    """Right values, but a contiguous output for channels_last_3d inputs: breaks the ops' contract."""
    implementations.register(
        "contig", lateral_concat=_lateral_contiguous, temporal_resample=_resample_contiguous
    )
    yield implementations.get("contig")
    implementations.unregister("contig")


@pytest.mark.parametrize("op", ["lateral_concat", "resample", "lateral_concat_backward"])
def test_kernel_gate_flags_an_output_that_drops_the_input_layout(op, contiguous_backend):
    built = kernels.build_cases([op], cases.SIZES["tiny"], ["4x16"], ["fp32"], ["channels_last_3d"])
    case = next(c for c in built if c.name in ("slow_1/8", "layer1_lateral"))
    impls = [implementations.get("reference"), contiguous_backend]
    rows = {
        r["backend"]: r for r in kernels.run_case(case, impls, torch.device("cpu"), 1e10, 1e-3, _ONE_CALL)
    }
    # The contract is checked, not the reference's output: the reference must keep the layout too.
    assert rows["reference"]["status"] == "ok", rows["reference"]["note"]
    if op == "lateral_concat_backward":  # the contract sets no layout for the gradients
        assert rows["contig"]["status"] == "ok", rows["contig"]["note"]
    else:
        assert rows["contig"]["status"] == "WRONG", rows["contig"]
        assert "not channels_last_3d" in rows["contig"]["note"]


# --- what the runs cover ----------------------------------------------------------------------------


def test_kernel_batch_option_sets_the_kernel_cases_batch(tmp_path):
    argv = ["--device", "cpu", "--size", "tiny", "--quick", "--ops", "resample", "--backends", "reference",
            "--layouts", "ncdhw", "--kernel-batch", "2", "--no-plots", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    data = json.loads((tmp_path / "cpu_resample.json").read_text())
    assert data["meta"]["kernel_batch"] == 2
    assert all(r["shape"].startswith("x 2x3x") for r in data["rows"]), [r["shape"] for r in data["rows"]]
    with pytest.raises(SystemExit):
        cli.parse_args(["--kernel-batch", "0"])


def test_backbone_cases_put_the_headline_rows_first():
    size = cases.SIZES["gpu"]
    got = backbone.build_cases(size, ["4x16"], ["fp32", "bf16"], ["channels_last_3d"])
    assert [(c.dtype, c.mode, c.batch) for c in got] == [
        ("fp32", "inference", 8), ("fp32", "train", 8), ("bf16", "inference", 8), ("bf16", "train", 8),
        ("fp32", "inference", 1), ("bf16", "inference", 1),
    ]  # fmt: skip


def test_gpu_check_measures_the_issue_targets_within_its_slot():
    """Forward, backward, strided resampling at batch 8 and every kernel op at batch 1 on the GPU;
    the backbone at the quick budget; the caps still fit 360 s."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    gpu_branch = script[
        script.index("if ((HAVE_GPU)); then\n    BENCH=") : script.index("\nelse\n    # The plumbing")
    ]
    assert "KERNEL_OPS=resample,lateral_concat,lateral_concat_backward" in script
    assert gpu_branch.count('--ops "$KERNEL_OPS"') == 2 and "--kernel-batch 1" in gpu_branch
    assert "--quick" in gpu_branch and "--ops backbone" in gpu_branch
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--plan"], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    caps = {line.rsplit(None, 2)[0]: int(line.rsplit(None, 2)[1]) for line in done.stdout.splitlines()}
    assert {"bench_kernels", "bench_kernels_b1", "bench_backbone"} <= set(caps)
    assert caps["sum"] == sum(v for k, v in caps.items() if k != "sum") <= 360
