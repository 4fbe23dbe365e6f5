"""ONNX export keeps the frames the eager op picks for the exported dtype on the exporting device.

PyTorch's nearest rule picks the source frame in float32 everywhere except for float64 on the CPU,
where it computes in double (``reference.double_index_rule``); odd rates pick other frames under the
two rules, and the exported Gather/Slice must use the eager op's. The rates here are those a search
over T < 130 and scales p/q (p, q <= 12) finds: only sevenths differ, first at T=64..66 (the output
that reads frame 63 in double and 62 in float)."""

from __future__ import annotations

import contextlib
import types

import pytest
import torch

import slowfast_fast
from slowfast_fast import _extension, ops, reference
from slowfast_fast.ops import _onnx, _triton_ops

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = [
    pytest.mark.usefixtures("one_cpu_thread"),
    # Without the compiled library the default CPU backend is the reference, which exports as
    # plain PyTorch ops: the translations checked here are not used.
    pytest.mark.skipif(not _extension.compiled_available(), reason="slowfast_fast._C is not loaded"),
]

EXPORTERS = [pytest.param(True, id="dynamo"), pytest.param(False, id="torchscript")]
BACKENDS = [
    pytest.param(None, id="default"),
    pytest.param(
        "triton",
        id="triton",
        marks=pytest.mark.skipif(_triton_ops.LOAD_ERROR is not None, reason="Triton is not installed"),
    ),
]


class SixSevenths(torch.nn.Module):
    """The plain case, T=65: output 54 reads frame 63 under the double rule, 62 under the float rule."""

    T = 65
    FIRST_SCALE = 6 / 7  # the first output's

    def forward(self, x):
        return (ops.temporal_resample(x, 6 / 7),)


class Mixed(torch.nn.Module):
    """T=130, each resampling at a rate where the rules differ, on a graph input (a split), on one
    output of a two-output op (the 65-frame slow pathway: Slice with step 2, the same under both
    rules) and on a Mul's output, so each way an exporter reaches the traced value is exercised."""

    T = 130
    FIRST_SCALE = 3 / 7

    def forward(self, x):
        half, three_sevenths = ops.pathway_split(x, 0.5, 3 / 7)
        return (
            three_sevenths,  # 55 frames: 27, 51, 54 differ
            ops.temporal_resample(half, 6 / 7),  # 65 -> 55 frames: 54 differs
            ops.temporal_resample(x * 2, 12 / 7),  # 222 frames: 108, 204, 216 differ
        )


MODELS = [pytest.param(SixSevenths, id="T65-6/7"), pytest.param(Mixed, id="T130-mixed")]


def export_and_run(model, x: torch.Tensor, path, dynamo: bool) -> list[torch.Tensor]:
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, input_names=["clip"])
    graph = onnx.load(str(path)).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    assert "Gather" in {node.op_type for node in graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {"clip": x.numpy()})]


def float_rule_frames(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x.index_select(2, reference.source_frame_indices(x.shape[2], scale))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_cls", MODELS)
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_float64_export_picks_the_eager_frames(dynamo, model_cls, backend, tmp_path):
    model = model_cls().eval()
    x = torch.randn(2, 3, model_cls.T, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with slowfast_fast.use_backend(backend) if backend else contextlib.nullcontext():
        with torch.no_grad():
            want = model(x)
        got = export_and_run(model, x, tmp_path / "f64.onnx", dynamo)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == torch.float64
        assert torch.equal(g, w), f"output {i}: ONNX frames differ from eager float64 frames"
    # The eager float64 op is on the double rule, which picks other frames than the float rule here.
    double_frames = reference.source_frame_indices(model_cls.T, model_cls.FIRST_SCALE, double_rule=True)
    assert torch.equal(got[0], x.index_select(2, double_frames))
    assert not torch.equal(got[0], float_rule_frames(x, model_cls.FIRST_SCALE))
    if model_cls is SixSevenths:
        assert torch.equal(got[0][:, :, 54], x[:, :, 63])


@pytest.mark.parametrize("model_cls", MODELS)
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_float32_export_keeps_the_float_rule(dynamo, model_cls, tmp_path):
    model = model_cls().eval()
    x = torch.randn(2, 3, model_cls.T, 2, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
    got = export_and_run(model, x, tmp_path / "f32.onnx", dynamo)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == torch.float32
        assert torch.equal(g, w), f"output {i}"
    assert torch.equal(got[0], float_rule_frames(x, model_cls.FIRST_SCALE))
    if model_cls is SixSevenths:
        assert torch.equal(got[0][:, :, 54], x[:, :, 62])


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_exporters_read_the_traced_device(dynamo, monkeypatch, tmp_path):
    """Each translation finds the traced value's device (the CPU here), for every resampling in the
    graph, including the output of a two-output op and of a Mul: nothing falls back to the assumed
    CPU (which would also pass the tests above)."""
    seen = []

    def recording_rule(dtype, device):
        seen.append((dtype, device))
        return reference.double_index_rule(dtype, device)

    proxy = types.SimpleNamespace(
        source_frame_indices=reference.source_frame_indices, double_index_rule=recording_rule
    )
    monkeypatch.setattr(_onnx, "reference", proxy)
    x = torch.randn(1, 2, Mixed.T, 2, 2, dtype=torch.float64)
    torch.onnx.export(Mixed().eval(), (x,), str(tmp_path / "device.onnx"), dynamo=dynamo)
    # The split's two outputs, the resampling of its slow output, the resampling of the Mul.
    assert len(seen) == 4, seen
    assert all(dtype == torch.float64 and device == torch.device("cpu") for dtype, device in seen), seen
