"""Export on the default backend: ``torch.onnx.export`` with both exporters (checked with onnxruntime,
with a dynamic batch axis) and ``torch.export`` saved and loaded back, for the ops, the backbone and the
recognizer. Only the Triton-namespace test selects a backend: the point is that the default one
exports."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from _model_helpers import assert_rel_close, clip, randomized_state, slowfast_kwargs

import slowfast_fast
from slowfast_fast import _extension, ops
from slowfast_fast.models import ResNet3dSlowFast, SlowFastRecognizer
from slowfast_fast.ops import _triton_ops

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

# onnxruntime's conv and oneDNN's (or our fused kernel's) sum in different orders: fp32 rounding,
# ~1e-6 relative at these sizes; 1e-4 is the bound and leaves margin.
TOL = 1e-4
EXPORTERS = [pytest.param(True, id="dynamo"), pytest.param(False, id="torchscript")]
# Without the compiled library the default CPU backend is the reference, which exports as plain
# PyTorch ops (the resampling as an ONNX Resize): the tests of our translations need the library.
COMPILED = _extension.compiled_available()
needs_compiled_ops = pytest.mark.skipif(not COMPILED, reason="slowfast_fast._C is not loaded")


def onnx_export(model, example, path, dynamo: bool, n_outputs: int) -> None:
    """Export with batch as a dynamic axis, the way each exporter spells it."""
    names = dict(input_names=["clip"], output_names=[f"out{i}" for i in range(n_outputs)])
    if dynamo:
        dynamic = dict(dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        dynamic = dict(
            dynamic_axes={"clip": {0: "batch"}, **{f"out{i}": {0: "batch"} for i in range(n_outputs)}}
        )
    torch.onnx.export(model, (example,), str(path), dynamo=dynamo, **names, **dynamic)


def run_onnx(path, x: torch.Tensor) -> list[torch.Tensor]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {session.get_inputs()[0].name: x.numpy()})]


def onnx_op_types(path) -> set[str]:
    """Op types of the graph; every node must be standard ONNX (default domain), none a custom op."""
    graph = onnx.load(str(path)).graph
    domains = {node.domain for node in graph.node}
    assert domains <= {"", "ai.onnx"}, f"non-standard ONNX domains {domains}"
    return {node.op_type for node in graph.node}


class OpsModule(torch.nn.Module):
    """Every public op once: lateral_concat with and without a folded BN + ReLU, a resampling whose
    frames are unevenly spaced (a Gather), and a pathway split (two Slices)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(6, 4, 5, 1, 1, generator=gen) * 0.3)
        self.scale = torch.nn.Parameter(torch.rand(6, generator=gen) + 0.5)
        self.shift = torch.nn.Parameter(torch.randn(6, generator=gen) * 0.1)

    def forward(self, x):
        x_slow, x_fast = ops.pathway_split(x, 0.25, 0.5)  # T=20: 5 slow frames, 10 fast
        x_fast = x_fast[:, :4]
        fused = ops.lateral_concat(x_slow, x_fast, self.weight, 2, 2, self.scale, self.shift, relu=True)
        plain = ops.lateral_concat(x_slow, x_fast, self.weight, 2, 2)
        uneven = ops.temporal_resample(x, 0.4)  # frames 0, 2, 5, 7, 10, 12, 15, 17
        return fused, plain, uneven


@needs_compiled_ops
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_ops_export_to_standard_onnx(dynamo, tmp_path):
    model = OpsModule().eval()
    path = tmp_path / "ops.onnx"
    onnx_export(model, clip((2, 5, 20, 3, 5)), path, dynamo, n_outputs=3)
    types = onnx_op_types(path)
    assert {"Conv", "Concat", "Relu", "Gather", "Slice"} <= types, types
    x = clip((3, 5, 20, 3, 5), seed=1)  # another batch size than exported
    with torch.no_grad():
        want = model(x)
    got = run_onnx(path, x)
    assert_rel_close(got[0], want[0], TOL, "lateral_concat + BN + ReLU")
    assert_rel_close(got[1], want[1], TOL, "lateral_concat")
    assert torch.equal(got[2], want[2]), "resampling copies frames: exact"


@pytest.mark.skipif(_triton_ops.LOAD_ERROR is not None, reason="Triton is not installed")
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_triton_ops_export_to_standard_onnx(dynamo, tmp_path):
    """The Triton backend (the default for CUDA tensors; here under Triton's CPU interpreter) has its
    own op namespace, translated the same way."""
    model = OpsModule().eval()
    example = clip((2, 5, 20, 3, 5))
    path = tmp_path / "ops_triton.onnx"
    with slowfast_fast.use_backend("triton"):
        traced = torch.export.export(model, (example,))
        onnx_export(model, example, path, dynamo, n_outputs=3)
        x = clip((3, 5, 20, 3, 5), seed=1)
        with torch.no_grad():
            want = model(x)
    targets = {str(node.target) for node in traced.graph.nodes}
    assert "slowfast_fast_triton.lateral_concat.default" in targets, targets
    assert {"Conv", "Concat", "Gather", "Slice"} <= onnx_op_types(path)
    got = run_onnx(path, x)
    assert_rel_close(got[0], want[0], TOL, "lateral_concat + BN + ReLU")
    assert_rel_close(got[1], want[1], TOL, "lateral_concat")
    assert torch.equal(got[2], want[2]), "resampling copies frames: exact"


@pytest.fixture(scope="module")
def backbone():
    # 8/4: neither pathway's resampling is the identity, so the split op itself is exported.
    model = ResNet3dSlowFast(**slowfast_kwargs(18, 8, 4, 5, lateral_norm=True, base_channels=16))
    model.load_state_dict(randomized_state(model.state_dict(), seed=0))
    return model.eval()


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_backbone_onnx_matches_eager(backbone, dynamo, tmp_path):
    path = tmp_path / "backbone.onnx"
    onnx_export(backbone, clip((2, 3, 16, 32, 32)), path, dynamo, n_outputs=2)
    types = onnx_op_types(path)
    if COMPILED:
        assert {"Conv", "Concat", "Slice"} <= types, types
    x = clip((3, 3, 16, 32, 32), seed=2)
    with torch.no_grad():
        want = backbone(x)
    for name, got, w in zip(("slow", "fast"), run_onnx(path, x), want, strict=True):
        assert_rel_close(got, w, TOL, f"{name} features")


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_recognizer_onnx_matches_eager(backbone, dynamo, tmp_path):
    model = SlowFastRecognizer(9, backbone=copy.deepcopy(backbone)).eval()
    path = tmp_path / "recognizer.onnx"
    onnx_export(model, clip((2, 3, 16, 32, 32)), path, dynamo, n_outputs=1)
    x = clip((3, 3, 16, 32, 32), seed=3)
    with torch.no_grad():
        want = model(x)
    (got,) = run_onnx(path, x)
    assert_rel_close(got, want, TOL, "class scores")


@needs_compiled_ops
def test_onnx_export_needs_a_static_time_axis(tmp_path):
    model = OpsModule().eval()
    with pytest.raises(Exception, match="static time axis"):
        torch.onnx.export(
            model,
            (clip((2, 5, 20, 3, 5)),),
            str(tmp_path / "dyn_t.onnx"),
            dynamo=False,
            input_names=["clip"],
            dynamic_axes={"clip": {0: "batch", 2: "time"}},
        )


@needs_compiled_ops
def test_dynamo_translations_register_lazily():
    """``import slowfast_fast`` does not import onnxscript (over a second); the translations join the
    exporter's table when the exporter loads it (a fresh interpreter, so nothing loaded it before)."""
    code = (
        "import sys, slowfast_fast\n"
        "assert 'onnxscript' not in sys.modules, 'slowfast_fast imported onnxscript'\n"
        "from torch.onnx._internal.exporter._torchlib._torchlib_registry import get_torchlib_ops\n"
        "print(sorted(str(m.fx_target) for m in get_torchlib_ops() if 'slowfast_fast' in str(m.fx_target)))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    registered = result.stdout.strip().splitlines()[-1]
    for name in ("lateral_concat", "temporal_resample", "pathway_split"):
        assert f"slowfast_fast.{name}.default" in registered, registered


@pytest.mark.parametrize("what", ["backbone", "recognizer"])
def test_torch_export_save_load_matches(backbone, what, tmp_path):
    model = backbone if what == "backbone" else SlowFastRecognizer(9, backbone=copy.deepcopy(backbone)).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (clip((2, 3, 16, 32, 32)),), dynamic_shapes=({0: batch},))
    if COMPILED:
        targets = {str(node.target) for node in program.graph.nodes}
        assert {"slowfast_fast.lateral_concat.default", "slowfast_fast.pathway_split.default"} <= targets
    path = tmp_path / f"{what}.pt2"
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    x = clip((3, 3, 16, 32, 32), seed=4)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    for w, g in zip(want, got, strict=True):
        # The same kernels run in the same order: equal up to oneDNN's batch-dependent blocking.
        assert_rel_close(g, w, 1e-6, what)


@needs_compiled_ops
@pytest.mark.slow  # compiles C++: ~30 s on a loaded 2-core CPU
def test_aot_inductor_package_runs_the_ops(tmp_path):
    """AOTInductor on CPU with every op: the package calls them through the dispatcher (this process
    imported slowfast_fast), with a dynamic batch; the resampling is exact, the laterals are the same
    kernels as eager."""
    import torch._inductor.config as inductor_config

    model = OpsModule().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (clip((2, 5, 20, 3, 5)),), dynamic_shapes=({0: batch},))
    # The wrapper's optimization level only changes how long g++ takes on the generated host code.
    options = {}
    if hasattr(inductor_config.aot_inductor, "compile_wrapper_opt_level"):
        options["aot_inductor.compile_wrapper_opt_level"] = "O0"
    path = torch._inductor.aoti_compile_and_package(
        program, package_path=str(tmp_path / "ops_aoti.pt2"), inductor_configs=options
    )
    runner = torch._inductor.aoti_load_package(path)
    x = clip((3, 5, 20, 3, 5), seed=5)
    with torch.no_grad():
        want, got = model(x), runner(x)
    for name, g, w in zip(
        ("lateral_concat + BN + ReLU", "lateral_concat", "resample"), got, want, strict=True
    ):
        assert_rel_close(g, w, 1e-6, name)
