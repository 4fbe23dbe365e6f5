"""Whole-backbone benchmark: SlowFast R50 as users run it, every contender on the same weights and
the same input, measured in one run. Speedups are over the base row: mmaction2's own
ResNet3dSlowFast in eager mode when mmaction2 is installed (``mmaction2``), else our module on the
``reference`` backend, which computes what mmaction2 computes (``reference``).

Contenders (see :func:`implementations_for`): the base; ours eager on the ``auto`` backend;
``optimized`` (:func:`slowfast_fast.models.optimize_for_inference`: BN folded, fused conv epilogues,
channels_last_3d, the input converted inside the timed call); on CUDA ``optimized_graph`` (plus
CUDA-graph replay); with ``--compile``, torch.compile of the base (and its ``reduce-overhead`` mode on
CUDA) and of the optimized module.

Cases per config, dtype (fp32, or bf16 autocast) and layout (of the input, and of the models'
weights): inference at each batch of the size preset and one training step (forward + backward, no
optimizer) at the training batch. Before timing, each contender's inference output is checked
against a float64 run of the reference on the same clip (at the smallest batch; the torch.compile
peers, compiled with ``dynamic=False``, at the batch they are timed at, so the compilation checked is
the one timed). Peak memory is ``torch.cuda.max_memory_allocated`` over one
call minus what was allocated before it (so: activations, gradients, workspaces); on CPU there is
no allocator statistic to read, so it is reported as n/a.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from slowfast_fast import backend as _backend
from slowfast_fast.bench import cases, correctness, report, timing
from slowfast_fast.models import ResNet3dSlowFast, optimize_for_inference
from slowfast_fast.models.resnet3d_slowfast import DEFAULT_FAST_PATHWAY, DEFAULT_SLOW_PATHWAY

BACKBONE_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_kwargs(config: cases.SlowFastConfig) -> dict:
    """mmaction2's ResNet3dSlowFast arguments for ``config`` (its 4x16 / 8x8 Kinetics configs, R50)."""
    return dict(
        pretrained=None,
        resample_rate=config.resample_rate,
        speed_ratio=config.speed_ratio,
        channel_ratio=8,
        slow_pathway=dict(DEFAULT_SLOW_PATHWAY, fusion_kernel=config.fusion_kernel),
        fast_pathway=dict(DEFAULT_FAST_PATHWAY),
    )


def build_model(config: cases.SlowFastConfig) -> torch.nn.Module:
    """Our SlowFast R50 for ``config``, randomly initialized with a fixed seed."""
    torch.manual_seed(0)
    return ResNet3dSlowFast(**model_kwargs(config))


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
    """The cases, the headline ones first: inference at the largest batch and the training step of
    every (config, dtype, layout), then the smaller inference batches. A case's rows are written
    when it finishes, so a run cut short by a time limit keeps the rows that matter most."""
    first, rest = [], []
    largest, *smaller = sorted(size.inference_batches, reverse=True)
    for config in configs:
        for dtype in dtypes:
            for layout in layouts:
                first.append(BackboneCase(config, "inference", largest, dtype, layout))
                first.append(BackboneCase(config, "train", size.train_batch, dtype, layout))
                rest += [BackboneCase(config, "inference", b, dtype, layout) for b in sorted(smaller)]
    return first + rest


def _autocast(device: torch.device, dtype: str):
    low = BACKBONE_DTYPES[dtype]
    return torch.autocast(device.type, dtype=low) if low is not None else contextlib.nullcontext()


def _clip(size: cases.SizePreset, batch: int, device, layout: str, dtype=torch.float32) -> torch.Tensor:
    """The seeded input clip. Always drawn in float32 and then converted: ``randn`` in another dtype
    draws other numbers under the same seed, and the float64 truth must see the very clip the
    contenders see."""
    torch.manual_seed(1)
    t, h, w = size.backbone_clip
    x = torch.randn(batch, 3, t, h, w, device=device, dtype=torch.float32).to(dtype)
    return x.contiguous(memory_format=cases.LAYOUTS[layout])


def _truth(
    truths: dict, config: str, size: cases.SizePreset, batch: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """The float64 reference output of ``config`` for the clip of ``batch`` (computed once)."""
    key = (config, batch)
    if key not in truths:
        truth_model = build_model(cases.CONFIGS[config]).double().to(device).eval()
        with torch.no_grad(), _backend.use_backend("reference"):
            truths[key] = tuple(truth_model(_clip(size, batch, device, "ncdhw", torch.float64)))
        del truth_model
    return truths[key]


def _step(module, forward, x, device, case: BackboneCase, backend: str) -> Callable[[], tuple]:
    """The timed call: one inference forward, or forward + backward (``module``'s gradients then freed)."""

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
        module.zero_grad(set_to_none=True)
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


def implementations_for(
    case: BackboneCase, size: cases.SizePreset, compile_peers: bool, device: torch.device | None = None
) -> list[str]:
    """The contenders of a case. Always the base (mmaction2 eager, or the reference backend without
    mmaction2) and ours eager (``auto``); for fp32 inference also ``optimized``
    (:func:`~slowfast_fast.models.optimize_for_inference`; not under autocast, where its convs step
    back to autocast's plain ones) and, on CUDA, ``optimized_graph`` (with CUDA-graph replay). With
    ``compile_peers``, for fp32 inference at the largest batch (each compilation costs tens of
    seconds to minutes): torch.compile of the base and of the optimized module, and on CUDA
    ``mode="reduce-overhead"`` of the base."""
    cuda = (device.type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    base = base_name()
    names = [base, "auto"]
    if case.mode == "inference" and case.dtype == "fp32":
        names.append("optimized")
        if cuda:
            names.append("optimized_graph")
        if compile_peers and case.batch == max(size.inference_batches):
            names += [f"compiled_{base}", "compiled_optimized"]
            if cuda:
                names.append(f"compiled_reduce_overhead_{base}")
    return names


@functools.cache
def mmaction2_slowfast() -> type | None:
    """mmaction2's ResNet3dSlowFast class, or None when mmaction2 (or mmcv/mmengine) is missing."""
    try:
        # First: it puts a placeholder where the mmaction2 1.2.0 wheel lacks a folder mmaction.models imports.
        importlib.import_module("slowfast_fast.models.mmaction")
        from mmaction.models.backbones import ResNet3dSlowFast as MMResNet3dSlowFast
    except ImportError:
        return None
    return MMResNet3dSlowFast


def base_name() -> str:
    """The row every speedup is over: real mmaction2 when installed, else our reference backend."""
    return "mmaction2" if mmaction2_slowfast() is not None else "reference"


class _Models:
    """The modules of one (config, layout), built once: ours (eval, shared by inference rows), the
    mmaction2 peer with the same weights, and the optimized copies, each on ``device`` in the layout."""

    def __init__(self, config: cases.SlowFastConfig, layout: str, device: torch.device) -> None:
        self.fmt = cases.LAYOUTS[layout]
        self.ours = build_model(config).to(device=device, memory_format=self.fmt).eval()
        self.peer = None
        peer_cls = mmaction2_slowfast()
        if peer_cls is not None:
            self.peer = peer_cls(**model_kwargs(config))
            self.peer.load_state_dict(self.ours.state_dict())
            self.peer = self.peer.to(device=device, memory_format=self.fmt).eval()
        self._optimized: dict[bool, torch.nn.Module] = {}

    def optimized(self, cuda_graph: bool) -> torch.nn.Module:
        if cuda_graph not in self._optimized:
            self._optimized[cuda_graph] = optimize_for_inference(self.ours, cuda_graph=cuda_graph)
        return self._optimized[cuda_graph]

    def forward_for(self, name: str, mode: str) -> tuple[torch.nn.Module, Callable, str]:
        """(the module whose gradients a training step frees, the callable timed, its ops backend)."""
        compiled = name.startswith("compiled_")
        mode_kw = {"mode": "reduce-overhead"} if name.startswith("compiled_reduce_overhead_") else {}
        plain = name.removeprefix("compiled_reduce_overhead_").removeprefix("compiled_")
        if plain == "mmaction2":
            module, backend = self.peer, "reference"
        elif plain in ("optimized", "optimized_graph"):
            module, backend = self.optimized(plain == "optimized_graph"), "auto"
        else:
            module, backend = self.ours, plain
        if mode == "train":
            # A training step updates BatchNorm's running statistics: it gets its own copy, so the
            # shared modules keep the weights and statistics the float64 truth was computed with.
            module = copy.deepcopy(module).train()
        # dynamic=False: the static compilation a user compiling for this batch gets (the default would
        # recompile with symbolic sizes once a second shape or config reaches the same code).
        forward = torch.compile(module, dynamic=False, **mode_kw) if compiled else module
        return module, forward, backend


def run(
    backbone_cases: list[BackboneCase],
    size: cases.SizePreset,
    device: torch.device,
    budget: timing.Budget,
    compile_peers: bool,
) -> Iterator[dict]:
    """Yield one row per (case, contender), a case's rows once all its contenders are timed."""
    auto_resolves_to = _backend.resolve(device, "auto")
    truths: dict[tuple[str, int], tuple[torch.Tensor, ...]] = {}
    models: dict[tuple[str, str], _Models] = {}
    verdicts: dict[tuple, correctness.Verdict] = {}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as BASELINE.md measured the reference backbone
    for case in backbone_cases:
        config = cases.CONFIGS[case.config]
        key = (case.config, case.layout)
        if key not in models:
            models[key] = _Models(config, case.layout, device)
        x = _clip(size, case.batch, device, case.layout)
        rows, fns = {}, {}
        names = implementations_for(case, size, compile_peers, device)
        for name in names:
            row = rows[name] = report.new_row(
                suite="backbone", op="backbone", config=case.config, case=f"{case.mode}_b{case.batch}",
                shape="x " + "x".join(map(str, x.shape)), layout=case.layout, device=str(device),
                backend=name, dtype=case.dtype if case.dtype == "fp32" else f"{case.dtype}-autocast",
                note=_note(name, auto_resolves_to),
            )  # fmt: skip
            try:
                # The correctness gate runs each contender's inference form (its eval-mode module).
                _, check_forward, backend = models[key].forward_for(name, "inference")
                verdict = _verdict(
                    verdicts, truths, name, check_forward, backend, models[key].ours, size, device, case
                )
                row["max_err"], row["tol"] = verdict.max_err, verdict.tol
                if not verdict.ok:
                    row["status"] = "WRONG"
                    row["note"] = f"{verdict.describe()}; not timed"
                    continue
                module, forward = (
                    models[key].forward_for(name, case.mode)[:2]
                    if case.mode == "train"
                    else (None, check_forward)
                )
                fn = _step(module, forward, x, device, case, backend)
                fn()  # compiles, autotunes cuDNN, packs weights, captures graphs, allocates
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
        base_ms = timings[names[0]].median_ms if names[0] in timings else None
        for name, result in timings.items():
            row = rows[name]
            row["median_ms"], row["p20_ms"], row["p80_ms"] = result.median_ms, result.p20_ms, result.p80_ms
            row["min_ms"] = result.min_ms
            row["peak_mem_mib"] = peaks[name]
            if base_ms is not None:
                row["speedup"] = base_ms / result.median_ms
        yield from rows.values()


def _note(name: str, auto_resolves_to: str) -> str:
    if name.endswith("mmaction2"):
        import mmaction

        return f"mmaction2 {mmaction.__version__}"
    if name.endswith("reference"):
        return "mmaction2 not installed: our module on the reference backend"
    if name == "optimized_graph":
        # The graph's memory pool is allocated at capture, before the peak is measured.
        return f"auto -> {auto_resolves_to}; peak excludes the graph's pool"
    return f"auto -> {auto_resolves_to}"


def gate_batch(name: str, case: BackboneCase, size: cases.SizePreset) -> int:
    """The batch contender ``name`` is checked at: the smallest inference batch, except for the
    torch.compile peers, checked at the batch they are timed at, so that the compilation checked is
    the one timed (one static compilation, no recompile for a second batch)."""
    return case.batch if name.startswith("compiled_") else min(size.inference_batches)


def _verdict(
    verdicts, truths, name: str, forward, backend: str, ours, size, device, case: BackboneCase
) -> correctness.Verdict:
    """Inference output of contender ``name`` (``forward`` on ``backend``) vs the float64 truth of
    the same clip, allowing 2x the error of ``ours`` (our eval-mode module) on the reference
    backend; once per (config, dtype, layout, name, batch checked)."""
    batch = gate_batch(name, case, size)
    key = (case.config, case.dtype, case.layout, name, batch)
    if key not in verdicts:
        truth = _truth(truths, case.config, size, batch, device)
        x = _clip(size, batch, device, case.layout)
        with torch.no_grad(), _autocast(device, case.dtype):
            with _backend.use_backend("reference"):
                ref = tuple(ours(x))
            with _backend.use_backend(backend):
                out = tuple(forward(x))
        verdicts[key] = correctness.check(out, ref, truth, correctness.tf32_allowed(device))
    return verdicts[key]
