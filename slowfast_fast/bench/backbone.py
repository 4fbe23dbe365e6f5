"""Whole-backbone benchmark: slowfast_fast's ResNet3dSlowFast on the ``auto`` backend against the
same module (same weights, same input) on the ``reference`` backend, which is mmaction2's
computation.

Cases per config, dtype (fp32, or bf16 autocast) and layout: inference at each batch of the size
preset and one training step (forward + backward, no optimizer) at the training batch. Before
timing, the inference output of each backend is checked against a float64 reference run.
Peak memory is ``torch.cuda.max_memory_allocated`` over one call minus what was allocated before
it (so: activations, gradients, workspaces); on CPU there is no allocator statistic to read, so it
is reported as n/a.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from slowfast_fast import backend as _backend
from slowfast_fast.bench import cases, correctness, report, timing
from slowfast_fast.models import ResNet3dSlowFast
from slowfast_fast.models.resnet3d_slowfast import DEFAULT_FAST_PATHWAY, DEFAULT_SLOW_PATHWAY

BACKBONE_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_model(config: cases.SlowFastConfig) -> torch.nn.Module:
    """SlowFast R50 with mmaction2's arguments for ``config`` (its 4x16 / 8x8 Kinetics configs),
    randomly initialized with a fixed seed."""
    torch.manual_seed(0)
    return ResNet3dSlowFast(
        pretrained=None,
        resample_rate=config.resample_rate,
        speed_ratio=config.speed_ratio,
        channel_ratio=8,
        slow_pathway=dict(DEFAULT_SLOW_PATHWAY, fusion_kernel=config.fusion_kernel),
        fast_pathway=DEFAULT_FAST_PATHWAY,
    )


@dataclass(frozen=True)
class BackboneCase:
    config: str
    mode: str  # "inference" or "train"
    batch: int
    dtype: str
    layout: str


def build_cases(
    size: cases.SizePreset, configs: list[str], dtypes: list[str], layouts: list[str]
) -> list[BackboneCase]:
    out = []
    for config in configs:
        for dtype in dtypes:
            for layout in layouts:
                out += [BackboneCase(config, "inference", b, dtype, layout) for b in size.inference_batches]
                out.append(BackboneCase(config, "train", size.train_batch, dtype, layout))
    return out


def _autocast(device: torch.device, dtype: str):
    low = BACKBONE_DTYPES[dtype]
    return torch.autocast(device.type, dtype=low) if low is not None else contextlib.nullcontext()


def _clip(size: cases.SizePreset, batch: int, device, layout: str, dtype=torch.float32) -> torch.Tensor:
    torch.manual_seed(1)
    t, h, w = size.backbone_clip
    x = torch.randn(batch, 3, t, h, w, device=device, dtype=dtype)
    return x.contiguous(memory_format=cases.LAYOUTS[layout])


def _step(model, x, device, case: BackboneCase, backend: str, compiled=None) -> Callable[[], tuple]:
    """The timed call: one inference forward, or forward + backward (the gradients then freed)."""
    forward = compiled if compiled is not None else model

    if case.mode == "inference":

        def infer():
            with torch.no_grad(), _autocast(device, case.dtype), _backend.use_backend(backend):
                return tuple(forward(x))

        return infer

    def train():
        with _autocast(device, case.dtype), _backend.use_backend(backend):
            x_slow, x_fast = forward(x)
            loss = x_slow.float().mean() + x_fast.float().mean()
        loss.backward()
        # Free the gradients inside the call, so no call starts with the last one's allocated.
        model.zero_grad(set_to_none=True)
        return ()

    return train


def _peak_mib(fn, device: torch.device) -> float | None:
    """Memory one call needs beyond what was allocated before it (activations, gradients,
    workspaces; not the weights and input, nor the other models this benchmark keeps resident)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def implementations_for(case: BackboneCase, size: cases.SizePreset, compile_peers: bool) -> list[str]:
    """Eager reference and auto always; torch.compile of both only for fp32 inference at the largest
    batch, since each compilation costs tens of seconds."""
    names = ["reference", "auto"]
    if (
        compile_peers
        and case.mode == "inference"
        and case.dtype == "fp32"
        and case.batch == max(size.inference_batches)
    ):
        names += ["compiled_reference", "compiled_auto"]
    return names


def run(
    backbone_cases: list[BackboneCase],
    size: cases.SizePreset,
    device: torch.device,
    budget: timing.Budget,
    compile_peers: bool,
) -> Iterator[dict]:
    """Yield one row per (case, implementation), a case's rows once all its contenders are timed."""
    auto_resolves_to = _backend.resolve(device, "auto")
    truths: dict[str, tuple[torch.Tensor, ...]] = {}
    models: dict[tuple[str, str], torch.nn.Module] = {}
    verdicts: dict[tuple[str, str, str, str], correctness.Verdict] = {}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as BASELINE.md measured the reference backbone
    for case in backbone_cases:
        config = cases.CONFIGS[case.config]
        key = (case.config, case.layout)
        if key not in models:
            base = build_model(config)
            if case.config not in truths:
                truth_model = copy.deepcopy(base).double().to(device).eval()
                with torch.no_grad(), _backend.use_backend("reference"):
                    x64 = _clip(size, min(size.inference_batches), device, "ncdhw", torch.float64)
                    truths[case.config] = tuple(truth_model(x64))
                del truth_model
            models[key] = base.to(device=device, memory_format=cases.LAYOUTS[case.layout])
        # A training step updates BatchNorm's running statistics; it gets its own copy so that the
        # shared module keeps the weights and statistics its float64 truth was computed with.
        model = copy.deepcopy(models[key]).train() if case.mode == "train" else models[key].eval()
        x = _clip(size, case.batch, device, case.layout)
        rows, fns = {}, {}
        for name in implementations_for(case, size, compile_peers):
            backend = name.removeprefix("compiled_")
            row = rows[name] = report.new_row(
                suite="backbone", op="backbone", config=case.config, case=f"{case.mode}_b{case.batch}",
                shape="x " + "x".join(map(str, x.shape)), layout=case.layout, device=str(device),
                backend=name, dtype=case.dtype if case.dtype == "fp32" else f"{case.dtype}-autocast",
                note=f"auto -> {auto_resolves_to}" if backend == "auto" else "",
            )  # fmt: skip
            try:
                # Compiled peers run inference only, so they compile the shared eval-mode module.
                compiled = torch.compile(model) if name.startswith("compiled_") else None
                forward = compiled if compiled is not None else models[key]
                verdict = _verdict(verdicts, name, forward, truths[case.config], size, device, case)
                row["max_err"], row["tol"] = verdict.max_err, verdict.tol
                if not verdict.ok:
                    row["status"] = "WRONG"
                    row["note"] = f"max error {verdict.max_err:.3g} > tolerance {verdict.tol:.3g}; not timed"
                    continue
                fn = _step(model, x, device, case, backend, compiled)
                fn()  # compiles, autotunes cuDNN, allocates
                fns[name] = fn
            except Exception as exc:  # report, keep benchmarking the rest
                row["status"], row["note"] = "ERROR", report.error_note(exc)
        try:
            timings = timing.measure_all(fns, device, budget)
            peaks = {name: _peak_mib(fn, device) for name, fn in fns.items()}
        except Exception as exc:
            for name in fns:
                rows[name]["status"], rows[name]["note"] = "ERROR", report.error_note(exc)
            timings, peaks = {}, {}
        reference_ms = timings["reference"].median_ms if "reference" in timings else None
        for name, result in timings.items():
            row = rows[name]
            row["median_ms"], row["p20_ms"], row["p80_ms"] = result.median_ms, result.p20_ms, result.p80_ms
            row["min_ms"] = result.min_ms
            row["peak_mem_mib"] = peaks[name]
            if reference_ms is not None:
                row["speedup"] = reference_ms / result.median_ms
        yield from rows.values()


def _verdict(verdicts, name: str, forward, truth, size, device, case: BackboneCase) -> correctness.Verdict:
    """Inference output of implementation ``name`` (running ``forward``, in eval mode) vs the
    float64 truth, allowing 2x the reference's error; once per (config, dtype, layout, name)."""
    key = (case.config, case.dtype, case.layout, name)
    if key not in verdicts:
        x = _clip(size, min(size.inference_batches), device, case.layout)
        with torch.no_grad(), _autocast(device, case.dtype):
            with _backend.use_backend("reference"):
                ref = tuple(forward(x))
            with _backend.use_backend(name.removeprefix("compiled_")):
                out = tuple(forward(x))
        verdicts[key] = correctness.check(out, ref, truth, correctness.tf32_allowed(device))
    return verdicts[key]
