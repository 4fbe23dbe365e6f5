"""A design model of lateral_concat's forward on an H200: what a kernel design should cost, predicted
from its bytes and Little's law, without a GPU. Every time it prints is a PREDICTION.

    python benchmarks/gpu_design_model.py [--latency-ns 700] [--layout ncdhw] [--batch 8]

The model, per fusion point of R50 4x16 and 8x8 (shapes and minimum bytes from
slowfast_fast/bench/cases.py, gpu size preset: batch 8, 32-frame 224x224 clip), per dtype:

    achieved bandwidth of a stream = min(copy bandwidth, bytes in flight per SM * SMs / DRAM latency)
    time = sum over the design's streams of bytes / achieved bandwidth + launches * launch overhead

A design moves three streams, one after the other (their times add: within a thread block the
x_slow copy and the GEMM run in turn, so an SM's bytes in flight are those of the phase it is in):

* the x_slow copy (read + write): at copy bandwidth when the design runs it as its own stage or
  kernel, else at the occupancy of the GEMM blocks that run it (CTAs per SM x threads x loads
  outstanding per thread x bytes per load);
* the GEMM's x_fast loads: CTAs per SM x pipeline stages x one K step's tile (K-step channels that
  hold data x pixels that hold data x element size) in flight per SM. x_fast bytes are the fast
  frames each output frame's taps read (frames shared by overlapping windows, as with 8x8's k7 s4,
  are read once per window unless the design reads each frame once), times the output-channel
  tiles that each re-read them;
* the rest (the lateral output's write, the weight, and for the reference the lateral's round trip
  through memory between the conv and the cat): stores and tiny reads, at copy bandwidth.

What it ignores: arithmetic (the lateral GEMM is far below the tensor cores' rate), L2 hits (bytes a
design re-reads are charged like DRAM bytes, which is pessimistic where L2 serves them), partial
waves of blocks, per-step instruction and barrier overheads, and DRAM latency rising under load.
Constants (H200): 132 SMs; copy bandwidth 4.25 TB/s (BASELINE.md's measured device-to-device copy;
the datasheet's HBM3e peak is 4.8 TB/s); DRAM latency 700 ns (an ASSUMPTION, the middle of the
600-800 ns usually quoted for Hopper under load; --latency-ns changes it, and the check against
issue 10 prints 600 and 800 too); launch overhead 3 us per kernel (an ASSUMPTION; the bench measures
the real one each run as a 4 KiB copy: `launch cost` in its output).
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from slowfast_fast.bench import cases


@dataclasses.dataclass(frozen=True)
class Machine:
    sms: int = 132
    copy_bandwidth: float = 4.25e12  # bytes/s read + written, BASELINE.md (measured 2026-11-26)
    latency_s: float = 700e-9  # DRAM latency: an assumption, see the module docstring
    launch_s: float = 3e-6  # per kernel launch: an assumption
    hbm_peak: float = 4.8e12  # datasheet; printed for context, the model uses copy_bandwidth

    def achieved(self, in_flight_per_sm: float | None) -> float:
        """Little's law, capped at the copy bandwidth; None is a stream at copy bandwidth."""
        if in_flight_per_sm is None:
            return self.copy_bandwidth
        return min(self.copy_bandwidth, in_flight_per_sm * self.sms / self.latency_s)


H200 = Machine()

# Designs as data. Keys (every design has all of them):
#   launches               kernels per call
#   lateral_round_trip     the lateral output is written by one kernel and re-read and re-written by
#                          a cat (the reference): 2 x its bytes extra
#   slow_copy              "own_stage": at copy bandwidth; "in_gemm_blocks": at the GEMM's occupancy
#   copy_threads, copy_loads_per_thread, copy_vector_bytes
#                          the x_slow copy inside GEMM blocks: threads per CTA, loads each thread keeps
#                          outstanding, bytes per load
#   copy_scalar_tail       a row that is not a whole number of vectors is copied one element per load
#                          (NCDHW rows are H*W pixels: 14x14 and 7x7 in bf16)
#   gemm_ctas_per_sm       CTAs resident per SM; None: the conv is not modelled and runs at copy
#                          bandwidth (the reference's cuDNN conv: a lower bound on its time)
#   gemm_stages            K steps whose loads are in flight at once (register or shared-memory stages)
#   k_step_channels        reduction rows per K step
#   flat_k_loop            K steps run over (tap, channel) pairs, so a step fills with several taps
#                          where C_fast is small; False: taps outer, channels inner (half-empty steps
#                          where C_fast = 8 and the step is 16)
#   pixel_tile             pixels per tile
#   tiles_span_frames      pixel tiles run across (n, t_out, h, w), so small frames fill them; False:
#                          tiles stop at a frame's end (196 pixels in 4 tiles of 64: 77% used)
#   output_channel_tile    output channels per tile; x_fast is read once per tile. None: all of C_lat
#   x_fast_frames          "per_output_frame": each output frame reads its k taps (overlapping windows
#                          re-read frames); "once": every needed fast frame is read once
# Optional keys (a design without them behaves as if they were absent):
#   launches_channels_last kernels per call in channels_last_3d (default: launches)
#   k_step_bytes           a K step is this many bytes of channels, so k_step_channels is this over the
#                          element size (default: k_step_channels in every dtype)
#   k_step_c_fast_tile     a K step is never wider than C_fast rounded up to a power of two >= 16
#   configs                overrides of the keys above, one per autotune config: the prediction is the
#                          fastest of them (autotuning measures; the model assumes it finds that one)
#   fp32_channels_last_max_tile
#                          output-channel tiles are capped at this in fp32 channels_last_3d
#   gemm_stages_by_itemsize
#                          {element size: gemm_stages} where the stages in flight depend on the dtype

REFERENCE = {
    "name": "reference",
    "summary": "F.conv3d then torch.cat (two kernels; conv modelled at copy bandwidth, a lower bound)",
    "launches": 2,
    "lateral_round_trip": True,
    "slow_copy": "own_stage",
    "copy_threads": None,
    "copy_loads_per_thread": None,
    "copy_vector_bytes": None,
    "copy_scalar_tail": False,
    "gemm_ctas_per_sm": None,
    "gemm_stages": None,
    "k_step_channels": None,
    "flat_k_loop": True,
    "pixel_tile": None,
    "tiles_span_frames": True,
    "output_channel_tile": None,
    "x_fast_frames": "once",
}

# The CUDA kernel as issue 10's review read it (csrc/cuda/lateral_gemm.cuh before the redesign):
# 256 threads, __launch_bounds__(256, 2) and 115-128 registers -> 2 CTAs/SM; a 64-pixel x 64-channel
# tile; K steps of 16 channels, taps outer, one register prefetch stage: a K step's x_fast tile is
# 16 x 64 elements, one 16-byte load per thread in fp32 (8 bytes in bf16), so 2 CTAs x 256 threads x
# 1 load x 16 B = 8 KB in flight per SM in fp32, 4 KB in bf16 (issue 10's "~4 KB"), half that where
# C_fast = 8; x_slow copied by the GEMM blocks before their K loop (copy_rows: 4 loads of 16 B
# outstanding per thread, one element per load when H*W*itemsize % 16 != 0).
OLD = {
    "name": "old",
    "summary": "issue 10's review of the CUDA kernel",
    "launches": 1,
    "lateral_round_trip": False,
    "slow_copy": "in_gemm_blocks",
    "copy_threads": 256,
    "copy_loads_per_thread": 4,
    "copy_vector_bytes": 16,
    "copy_scalar_tail": True,
    "gemm_ctas_per_sm": 2,
    "gemm_stages": 1,
    "k_step_channels": 16,
    "flat_k_loop": False,
    "pixel_tile": 64,
    "tiles_span_frames": False,
    "output_channel_tile": 64,
    "x_fast_frames": "per_output_frame",
}

# The redesigned CUDA forward (csrc/cuda; compiled for sm_90, never run on a GPU; since 2026-12-01 run
# on the CPU emulator in CI): the x_slow copy is its own kernel (concat_copy_kernel: 256 threads,
# <= 64 registers -> 4 CTAs/SM, 4 loads of 16 B outstanding per thread = 64 KB in flight per SM, above
# what copy bandwidth needs), then the GEMM kernel: 256 threads, <= 128 registers -> 2 CTAs/SM
# (tests/test_cuda_sm90_static.py), a 64-pixel x 64-channel tile, one flat K loop over (tap, channel)
# in steps of 16, a cp.async ring of kStages A tiles: 4 in fp32 (3 in flight: 2 CTAs x 3 x 16 x 64 x
# 4 B = 24 KB per SM), 6 in 16-bit types (5 in flight: 20 KB per SM); until 2026-12-01 3 stages in
# both (16 KB / 8 KB). Tiles still stop at a frame's end and x_fast is re-read per 64-channel output
# tile (from L2 in practice; charged like DRAM here, pessimistic).
NEW_CUDA = {
    "name": "new CUDA",
    "summary": "the redesigned CUDA kernels (copy kernel + pipelined GEMM), from source and sm_90 resources",
    "launches": 2,
    "lateral_round_trip": False,
    "slow_copy": "own_stage",
    "copy_threads": None,
    "copy_loads_per_thread": None,
    "copy_vector_bytes": None,
    "copy_scalar_tail": False,
    "gemm_ctas_per_sm": 2,
    "gemm_stages": 2,
    "gemm_stages_by_itemsize": {4: 3, 2: 5},
    "k_step_channels": 16,
    "flat_k_loop": True,
    "pixel_tile": 64,
    "tiles_span_frames": False,
    "output_channel_tile": 64,
    "x_fast_frames": "per_output_frame",
}

# The redesigned Triton forward (slowfast_fast/triton; compiled for sm_90 by
# tests/test_triton_sm90_static.py, never run on a GPU), as of 2026-12-01: one kernel whose GEMM
# programs tile pixels flattened over (n, t_out, hw) with one flat K loop, and whose copy programs move
# x_slow in 16 KiB tiles (16 B loads, 16 KiB in flight per CTA) at the kernel's occupancy, 2 CTAs/SM
# (the static test's budget). NCDHW launches only that kernel (B read straight from the weight in its
# (c, kt) order); channels_last_3d first reorders the weight (one more launch). K steps are 128 bytes
# of channels (32 in fp32, 64 in 16-bit) but never wider than C_fast's tile (>= 16, a power of two).
# Autotuning picks among three configs; the model takes the fastest it predicts (autotuning measures,
# the model assumes it finds the same one): 128 px x 64 ch, 3 stages; 64 x 128, 4 stages; 64 x 256,
# 4 stages, 64-byte K steps, 8 warps (capped at 128 channels in fp32 channels_last_3d, registers).
NEW_TRITON = {
    "name": "new Triton",
    "summary": "the redesigned Triton kernel (GEMM and copy programs), from source and sm_90 resources",
    "launches": 1,
    "launches_channels_last": 2,
    "lateral_round_trip": False,
    "slow_copy": "in_gemm_blocks",
    "copy_threads": 128,
    "copy_loads_per_thread": 8,
    "copy_vector_bytes": 16,
    "copy_scalar_tail": False,
    "gemm_ctas_per_sm": 2,
    "gemm_stages": 2,
    "k_step_channels": 32,
    "k_step_bytes": 128,
    "k_step_c_fast_tile": True,
    "flat_k_loop": True,
    "pixel_tile": 128,
    "tiles_span_frames": True,
    "output_channel_tile": 64,
    "x_fast_frames": "per_output_frame",
    "configs": [
        {},
        {"pixel_tile": 64, "output_channel_tile": 128, "gemm_stages": 3},
        {
            "pixel_tile": 64,
            "output_channel_tile": 256,
            "gemm_stages": 3,
            "k_step_bytes": 64,
            "copy_threads": 256,
            "copy_loads_per_thread": 4,
        },
    ],
    "fp32_channels_last_max_tile": 128,
}

# What issue 10 asks for, as a target to compare the designs with: the x_slow copy at copy
# bandwidth, x_fast read once (one output-channel tile of all C_lat), a flat K loop, pixel tiles
# across frames, and 2 CTAs x 2 stages x 32 channels x 64 pixels = 32 KB in flight per SM in fp32
# (16 KB in bf16).
TARGET = {
    "name": "issue 10 target",
    "summary": "the design issue 10 asks for (not a kernel of the package)",
    "launches": 1,
    "lateral_round_trip": False,
    "slow_copy": "own_stage",
    "copy_threads": None,
    "copy_loads_per_thread": None,
    "copy_vector_bytes": None,
    "copy_scalar_tail": False,
    "gemm_ctas_per_sm": 2,
    "gemm_stages": 2,
    "k_step_channels": 32,
    "flat_k_loop": True,
    "pixel_tile": 64,
    "tiles_span_frames": True,
    "output_channel_tile": None,
    "x_fast_frames": "per_output_frame",
}

DESIGNS = (REFERENCE, OLD, NEW_CUDA, NEW_TRITON, TARGET)

ITEMSIZE = {"fp32": 4, "bf16": 2}

# Issue 10's modelled ratios of the old CUDA kernel's time to the roofline (R50 4x16, batch 8).
ISSUE_10_OLD_RATIOS = {
    "conv1_lateral": (2.5, 3.0),
    "layer1_lateral": (1.2, 1.5),
    "layer2_lateral": (3.0, 3.0),  # "~3x"
    "layer3_lateral": (4.0, 6.0),
}

# The reference measured on an H200 (BASELINE.md, 2026-11-26): sum over the four fusion points at
# batch 8, ms, by (config, dtype, layout). For comparison with the reference's prediction only.
BASELINE_REFERENCE_SUM_MS = {
    ("4x16", "fp32", "ncdhw"): 0.461,
    ("4x16", "fp32", "channels_last_3d"): 0.363,
    ("4x16", "bf16", "ncdhw"): 0.410,
    ("4x16", "bf16", "channels_last_3d"): 0.260,
    ("8x8", "fp32", "ncdhw"): 0.740,
    ("8x8", "fp32", "channels_last_3d"): 0.623,
    ("8x8", "bf16", "ncdhw"): 0.624,
    ("8x8", "bf16", "channels_last_3d"): 0.451,
}


@dataclasses.dataclass(frozen=True)
class Stream:
    """Bytes a design moves at one achieved bandwidth."""

    name: str
    bytes: int
    bandwidth: float  # achieved, bytes/s

    @property
    def seconds(self) -> float:
        return self.bytes / self.bandwidth


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A design's predicted forward: its streams, whose times add, plus its launches."""

    streams: tuple[Stream, ...]
    launch_s: float

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.streams)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.streams) + self.launch_s

    @property
    def largest(self) -> str:
        return max(self.streams, key=lambda s: s.seconds).name


def _taps_read(shape: cases.LateralShape) -> int:
    """Fast frames read summed over output frames: each output frame reads its in-range taps."""
    return sum(
        1
        for t in range(shape.t_slow)
        for kt in range(shape.kernel)
        if 0 <= t * shape.stride - shape.padding + kt < shape.t_fast
    )


def _copy_in_flight(design: dict, shape: cases.LateralShape, itemsize: int, layout: str) -> float:
    """Bytes in flight per SM while GEMM blocks copy x_slow."""
    row_elems = shape.spatial**2 if layout == "ncdhw" else shape.c_slow
    vector = design["copy_vector_bytes"]
    per_load = itemsize if design["copy_scalar_tail"] and row_elems * itemsize % vector else vector
    return design["gemm_ctas_per_sm"] * design["copy_threads"] * design["copy_loads_per_thread"] * per_load


def k_step(design: dict, shape: cases.LateralShape, itemsize: int) -> int:
    """Reduction rows per K step (see k_step_bytes and k_step_c_fast_tile)."""
    step = design["k_step_channels"]
    if design.get("k_step_bytes"):
        step = design["k_step_bytes"] // itemsize
    if design.get("k_step_c_fast_tile"):
        step = min(step, max(16, 1 << (shape.c_fast - 1).bit_length()))
    return step


def gemm_in_flight(design: dict, shape: cases.LateralShape, itemsize: int) -> float | None:
    """Bytes of x_fast in flight per SM during the GEMM: CTAs x stages x one K step's filled tile."""
    if design["gemm_ctas_per_sm"] is None:
        return None
    k_rows = shape.c_fast * shape.kernel if design["flat_k_loop"] else shape.c_fast
    k_used = min(k_step(design, shape, itemsize), k_rows)
    tile = design["pixel_tile"]
    hw = shape.spatial**2
    fill = 1.0 if design["tiles_span_frames"] else hw / (math.ceil(hw / tile) * tile)
    stages = (design.get("gemm_stages_by_itemsize") or {}).get(itemsize, design["gemm_stages"])
    return design["gemm_ctas_per_sm"] * stages * k_used * tile * fill * itemsize


def predict(
    design: dict, shape: cases.LateralShape, dtype: str, machine: Machine = H200, layout: str = "ncdhw"
) -> Prediction:
    """The predicted forward time of ``design`` at ``shape`` (see the module docstring)."""
    if design.get("configs"):
        return min(
            (predict({**design, **config, "configs": None}, shape, dtype, machine, layout)
             for config in design["configs"]),
            key=lambda p: p.seconds,
        )  # fmt: skip
    itemsize = ITEMSIZE[dtype]
    plane = shape.batch * shape.spatial**2
    slow = 2 * plane * shape.c_slow * shape.t_slow * itemsize
    frames = shape.fast_frames_read() if design["x_fast_frames"] == "once" else _taps_read(shape)
    tile = design["output_channel_tile"]
    cap = design.get("fp32_channels_last_max_tile")
    if cap and dtype == "fp32" and layout == "channels_last_3d":
        tile = cap if tile is None else min(tile, cap)
    rereads = 1 if tile is None else math.ceil(shape.c_lateral / tile)
    fast = plane * shape.c_fast * frames * itemsize * rereads
    lateral = plane * shape.c_lateral * shape.t_slow * itemsize
    weight = shape.c_lateral * shape.c_fast * shape.kernel * itemsize
    rest = lateral * (3 if design["lateral_round_trip"] else 1) + weight
    if design["slow_copy"] == "own_stage":
        slow_bw = machine.copy_bandwidth
    else:
        slow_bw = machine.achieved(_copy_in_flight(design, shape, itemsize, layout))
    streams = (
        Stream("x_slow copy", slow, slow_bw),
        Stream("x_fast loads", fast, machine.achieved(gemm_in_flight(design, shape, itemsize))),
        Stream("writes", rest, machine.copy_bandwidth),
    )
    launches = design["launches"]
    if layout == "channels_last_3d":
        launches = design.get("launches_channels_last", launches)
    return Prediction(streams, launches * machine.launch_s)


def roofline_s(shape: cases.LateralShape, dtype: str, machine: Machine = H200) -> float:
    """The fewest bytes (cases.py) at copy bandwidth."""
    return shape.forward_bytes(ITEMSIZE[dtype]) / machine.copy_bandwidth


def gpu_shapes(batch: int) -> dict[str, list[cases.LateralShape]]:
    """The four R50 fusion points of each config at the gpu size preset, at ``batch``."""
    size = dataclasses.replace(cases.SIZES["gpu"], kernel_batch=batch)
    return {name: cases.lateral_shapes(size, config) for name, config in cases.CONFIGS.items()}


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f}"


def _table(headers: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])


def point_tables(shapes: dict[str, list[cases.LateralShape]], machine: Machine, layout: str) -> str:
    sections = []
    headers = ["dtype", "design", "minimum MB", "design moves MB", "roofline µs (prediction)",
               "time µs (prediction)", "time / roofline (prediction)", "largest term"]  # fmt: skip
    for config, points in shapes.items():
        for shape in points:
            lines = []
            for dtype in ITEMSIZE:
                roof = roofline_s(shape, dtype, machine)
                for design in DESIGNS:
                    p = predict(design, shape, dtype, machine, layout)
                    lines.append([
                        dtype, design["name"], _mb(shape.forward_bytes(ITEMSIZE[dtype])), _mb(p.bytes),
                        _us(roof), _us(p.seconds), f"{p.seconds / roof:.2f}", p.largest,
                    ])  # fmt: skip
            sections.append(f"#### {config} {shape.point}: {shape.describe()}\n\n" + _table(headers, lines))
    return "\n\n".join(sections)


def sum_table(shapes: dict[str, list[cases.LateralShape]], machine: Machine, layout: str) -> str:
    headers = ["config", "dtype", "roofline µs (prediction)",
               *(f"{d['name']} µs (prediction)" for d in DESIGNS),
               *(f"{d['name']} / roofline (prediction)" for d in DESIGNS),
               f"reference µs MEASURED (BASELINE.md, {layout})"]  # fmt: skip
    lines = []
    for config, points in shapes.items():
        for dtype in ITEMSIZE:
            roof = sum(roofline_s(s, dtype, machine) for s in points)
            times = [sum(predict(d, s, dtype, machine, layout).seconds for s in points) for d in DESIGNS]
            measured = BASELINE_REFERENCE_SUM_MS.get((config, dtype, layout))
            batch8 = points[0].batch == 8
            lines.append([
                config, dtype, _us(roof), *(_us(t) for t in times), *(f"{t / roof:.2f}" for t in times),
                f"{measured * 1e3:.0f}" if measured is not None and batch8 else "-",
            ])  # fmt: skip
    return _table(headers, lines)


def issue_10_check(shapes: dict[str, list[cases.LateralShape]], machine: Machine, layout: str) -> str:
    """The old design's predicted time / roofline at 4x16 against issue 10's modelled ratios, at the
    chosen latency and at both ends of the 600-800 ns range."""
    latencies = sorted({600e-9, machine.latency_s, 800e-9})
    headers = ["fusion point", "dtype", "issue 10 (modelled)",
               *(f"old @ {lat * 1e9:.0f} ns (prediction)" for lat in latencies),
               f"@ {machine.latency_s * 1e9:.0f} ns vs issue"]  # fmt: skip
    lines = []
    for dtype in ITEMSIZE:
        for shape in shapes["4x16"]:
            low, high = ISSUE_10_OLD_RATIOS[shape.point]
            ratios = []
            for lat in latencies:
                m = dataclasses.replace(machine, latency_s=lat)
                ratios.append(predict(OLD, shape, dtype, m, layout).seconds / roofline_s(shape, dtype, m))
            mine = ratios[latencies.index(machine.latency_s)]
            if mine < low:
                verdict = f"{100 * (1 - mine / low):.0f}% below"
            elif mine > high:
                verdict = f"{100 * (mine / high - 1):.0f}% above"
            else:
                verdict = "inside"
            issue = f"{low:g}x" if low == high else f"{low:g}-{high:g}x"
            lines.append([shape.point, dtype, issue, *(f"{r:.2f}x" for r in ratios), verdict])
    return _table(headers, lines)


def in_flight_summary(shape: cases.LateralShape, layout: str) -> str:
    """One sentence: each design's bytes in flight per SM at ``shape``, fp32 / bf16."""

    def kb(values: list[float]) -> str:
        return " / ".join(f"{v / 1024:.0f} KB" for v in values)

    parts = []
    for d in DESIGNS:
        if d["gemm_ctas_per_sm"] is None:
            gemm = "GEMM loads at copy bandwidth (not modelled)"
        else:
            gemm = "GEMM loads " + kb([gemm_in_flight(d, shape, ITEMSIZE[t]) for t in ITEMSIZE])
        if d["slow_copy"] == "own_stage":
            copy = "x_slow copy at copy bandwidth"
        else:
            copy = "x_slow copy " + kb([_copy_in_flight(d, shape, ITEMSIZE[t], layout) for t in ITEMSIZE])
        parts.append(f"{d['name']}: {gemm}, {copy}")
    return f"Bytes in flight per SM (fp32 / bf16) at {shape.config} {shape.point}: " + "; ".join(parts) + "."


def grad_weight_partial_bytes(shape: cases.LateralShape, atomic: bool, sms: int = H200.sms) -> int:
    """DRAM bytes of the Triton grad_weight's fp32 partials of G and of sum g: with per-split slabs
    (deterministic mode) each split's slab is written and read back; with atomic adds into one
    zero-at-rest slab, one read and the zeros written back (the adds themselves resolve in L2, which
    holds the slab: at most C_lat x (C_fast x KT + 2) x 4 bytes, 0.9 MB at R50). The split count is the
    kernel's own (``weight_splits``, at ``sms`` multiprocessors)."""
    from slowfast_fast.triton.lateral_concat_backward import weight_splits

    # G and sum g per split; the atomic workspace also holds grad_scale's sums.
    slab = shape.c_lateral * (shape.c_fast * shape.kernel + 1 + atomic) * 4
    if atomic:
        return 2 * slab
    splits = weight_splits(
        shape.batch, shape.t_slow, shape.spatial**2, shape.c_lateral, shape.kernel, shape.c_fast, sms
    )[2]
    return 2 * splits * slab


def partials_table(shapes: dict[str, list[cases.LateralShape]]) -> str:
    """Per fusion point: the grad_weight partials' bytes as a share of the backward's fewest bytes."""
    headers = ["config", "fusion point", "dtype", "backward minimum MB", "ordered partials MB (share)",
               "atomic partials MB (share)"]  # fmt: skip
    lines = []
    for config, points in shapes.items():
        for shape in points:
            for dtype, itemsize in ITEMSIZE.items():
                floor = shape.backward_bytes(itemsize)
                cells = []
                for atomic in (False, True):
                    extra = grad_weight_partial_bytes(shape, atomic)
                    cells.append(f"{_mb(extra)} ({100 * extra / floor:.1f}%)")
                lines.append([config, shape.point, dtype, _mb(floor), *cells])
    return _table(headers, lines)


# The backward (lateral_concat_grad_input + lateral_concat_grad_weight, no ReLU and no scale: the
# backbone's lateral conv), PREDICTED the same way: streams of bytes at Little's-law bandwidths, plus
# launches. grad_x_slow is a view of grad_out (no bytes). Designs as data; keys:
#   launches               kernels per backward (both ops)
#   gi_ctas, gi_stages, gi_k_step_bytes, gi_pixel_tile, gi_channel_tile, gi_tiles_span_frames
#                          grad_input's GEMM (N = C_fast, K = (tap, C_lat)): CTAs per SM, K steps in
#                          flight, a K step's bytes of channels (capped at C_lat's tile), pixels and
#                          fast channels per tile (g is re-read per fast-channel tile), whether pixel
#                          tiles run across samples
#   gw_ctas, gw_stages, gw_pixels_per_step, gw_o_tile, gw_c_tile
#                          grad_weight's partial kernel: a step loads a gw_o_tile x pixels tile of g and
#                          a pixels x gw_c_tile tile of x_fast; g is re-read per fast-channel tile and
#                          x_fast per lateral-channel tile
#   gw_stages_channels_last_by_itemsize
#                          (optional) {element size: gw_stages} in channels_last_3d
#   partials               "atomic": one fp32 slab added into (L2), read once and zeroed again (its zeros
#                          written back); "ordered": a slab per split written and read back (the split
#                          count of the Triton kernel)
#   one_pass               grad_input and grad_weight read g once between them (not a kernel of the
#                          package: what issue 10's "one pass over g" would save)
# With `l2_rereads`, re-reads by programs resident at the same time (the channel tiles of one pixel
# tile, which both kernels run back to back) are L2 hits, not DRAM bytes.
BACKWARD_TRITON = {
    "name": "new Triton",
    "summary": "the Triton backward as of 2026-12-01, fifth session (flat pipelined K loops, 2 CTAs/SM, "
    "atomic partials; 1 launch: grad_input's programs, which read the weight as stored and scale g "
    "themselves, and the grad_weight splits side by side; the splits add into a zero-at-rest fp32 "
    "workspace whose last split per tile rounds the tile into the results and writes its zeros back)",
    "launches": 1,
    "gi_ctas": 2, "gi_stages": 2, "gi_k_step_bytes": 128, "gi_pixel_tile": 128, "gi_channel_tile": 64,
    "gi_tiles_span_frames": True,
    "gw_ctas": 2, "gw_stages": 2, "gw_pixels_per_step": 32, "gw_o_tile": 64, "gw_c_tile": 64,
    "partials": "atomic", "one_pass": False,
    # One grad_weight tile (64 x 64): the 64 x 128 one spills in the combined kernel (sm_90 static test).
    # The 64-pixel grad_input tile steps K by 64 bytes (_INPUT_TILES: spills in Triton 3.6 otherwise).
    "configs": [{}, {"gi_pixel_tile": 64, "gi_channel_tile": 128, "gi_k_step_bytes": 64}],
}  # fmt: skip
BACKWARD_TRITON_2_LAUNCHES = {
    **BACKWARD_TRITON,
    "name": "Triton 12-01",
    "summary": "the Triton backward earlier on 2026-12-01 (fourth session): 2 launches, a prep kernel "
    "(grad_input's weight operand with the scale folded in, and the zeros the splits add into) before "
    "the same combined kernel (RESULTS.md's fourth-session section has the 5-launch state before it)",
    "launches": 2,
}
BACKWARD_OLD_TRITON = {
    **BACKWARD_TRITON,
    "name": "old Triton",
    "summary": "issue 10's review of the Triton backward (nested K loop: nothing in flight across taps; "
    "grad_weight at 1 CTA/SM; ordered fp32 partials; 5 launches with the 2-kernel weight padding)",
    "launches": 5,
    "gi_stages": 1,
    "gw_ctas": 1, "gw_stages": 1, "gw_pixels_per_step": 128,
    "partials": "ordered",
    "configs": None,
}  # fmt: skip
BACKWARD_CUDA = {
    "name": "new CUDA",
    "summary": "the CUDA backward (grad_input: the forward's GEMM transposed, cp.async ring; grad_weight: "
    "64x64 tiles of 16 pixels, through registers one step ahead in NCDHW, by a cp.async ring (3 steps "
    "in flight in fp32, 5 in 16-bit types) in channels_last_3d; per-split partials; 3 launches)",
    "launches": 3,
    "gi_ctas": 2, "gi_stages": None, "gi_k_step_bytes": None, "gi_pixel_tile": 64, "gi_channel_tile": 64,
    "gi_tiles_span_frames": False,
    "gw_ctas": 2, "gw_stages": 1, "gw_pixels_per_step": 16, "gw_o_tile": 64, "gw_c_tile": 64,
    "gw_stages_channels_last_by_itemsize": NEW_CUDA["gemm_stages_by_itemsize"],  # the same kStages ring
    "partials": "ordered_cuda", "one_pass": False,
}  # fmt: skip
BACKWARD_ONE_PASS = {
    **BACKWARD_TRITON,
    "name": "one pass over g",
    "summary": "new Triton with g read once by both gradients (issue 10's direction; not built)",
    "one_pass": True,
}
BACKWARD_DESIGNS = (
    BACKWARD_OLD_TRITON,
    BACKWARD_TRITON_2_LAUNCHES,
    BACKWARD_TRITON,
    BACKWARD_CUDA,
    BACKWARD_ONE_PASS,
)


def _cuda_splits(shape: cases.LateralShape, sms: int = H200.sms) -> int:
    """The CUDA grad_weight's split count (grad_weight.cuh: 4 x SMs over its tiles, at most one split
    per 8 pixel tiles of 16)."""
    pixel_tiles = shape.batch * shape.t_slow * math.ceil(shape.spatial**2 / 16)
    base = shape.kernel * math.ceil(shape.c_lateral / 64) * max(1, math.ceil(shape.c_fast / 64))
    return max(1, min(math.ceil(4 * sms / base), math.ceil(pixel_tiles / 8)))


def predict_backward(
    design: dict,
    shape: cases.LateralShape,
    dtype: str,
    machine: Machine = H200,
    l2_rereads: bool = False,
    layout: str = "ncdhw",
) -> Prediction:
    """The predicted backward time of ``design`` at ``shape`` (see BACKWARD_TRITON's comment)."""
    if design.get("configs"):
        return min(
            (predict_backward({**design, **c, "configs": None}, shape, dtype, machine, l2_rereads, layout)
             for c in design["configs"]),
            key=lambda p: p.seconds,
        )  # fmt: skip
    itemsize = ITEMSIZE[dtype]
    plane = shape.batch * shape.spatial**2
    hw = shape.spatial**2
    taps = _taps_read(shape)  # (output frame, tap) pairs that read a fast frame
    c_fast_tiles = math.ceil(shape.c_fast / design["gi_channel_tile"])
    # grad_input: each fast frame's programs read g at its taps (a g frame k-fold where stride >= k),
    # once per fast-channel tile; with L2 re-reads once in all (the fast frames that read one g frame
    # run one after another, and one g frame is at most 6.4 MB at R50 batch 8: L2 holds it).
    gi_g = plane * shape.c_lateral * itemsize * (shape.t_slow if l2_rereads else taps * c_fast_tiles)
    gi_write = plane * shape.c_fast * shape.t_fast * itemsize
    if design["gi_stages"] is None:  # the CUDA GEMM: its cp.async ring, K steps of 16 rows
        stages = NEW_CUDA["gemm_stages_by_itemsize"][itemsize]
        k_rows = 16
    else:
        stages = design["gi_stages"]
        k_rows = min(design["gi_k_step_bytes"] // itemsize, max(16, 1 << (shape.c_lateral - 1).bit_length()))
    tile = design["gi_pixel_tile"]
    fill = 1.0 if design["gi_tiles_span_frames"] else hw / (math.ceil(hw / tile) * tile)
    gi_flight = design["gi_ctas"] * stages * k_rows * tile * fill * itemsize
    # grad_weight: g (per fast-channel tile) and x_fast (per lateral-channel tile) at the taps.
    if l2_rereads:
        gw_g = plane * shape.c_lateral * shape.t_slow * itemsize
    else:
        gw_g = plane * shape.c_lateral * taps * itemsize * math.ceil(shape.c_fast / design["gw_c_tile"])
    gw_x = (
        plane
        * shape.c_fast
        * itemsize
        * (
            shape.fast_frames_read()
            if l2_rereads
            else taps * math.ceil(shape.c_lateral / design["gw_o_tile"])
        )
    )
    if design["one_pass"]:
        gw_g = 0
    gw_stages = design["gw_stages"]
    if layout == "channels_last_3d":
        gw_stages = (design.get("gw_stages_channels_last_by_itemsize") or {}).get(itemsize, gw_stages)
    gw_flight = (
        design["gw_ctas"]
        * gw_stages
        * (design["gw_o_tile"] + design["gw_c_tile"])
        * (design["gw_pixels_per_step"] * itemsize)
    )
    slab = shape.c_lateral * (shape.c_fast * shape.kernel + 1) * 4  # the CUDA kernel's per-split partial
    if design["partials"] == "atomic":
        partials = grad_weight_partial_bytes(shape, atomic=True, sms=machine.sms)
    elif design["partials"] == "ordered":
        partials = grad_weight_partial_bytes(shape, atomic=False, sms=machine.sms)
    else:
        partials = 2 * _cuda_splits(shape, machine.sms) * slab
    weight = shape.c_lateral * shape.c_fast * shape.kernel * itemsize
    streams = (
        Stream("g loads (grad_input)", gi_g, machine.achieved(gi_flight)),
        Stream("grad_x_fast writes", gi_write, machine.copy_bandwidth),
        Stream("g loads (grad_weight)", gw_g, machine.achieved(gw_flight)),
        Stream("x_fast loads (grad_weight)", gw_x, machine.achieved(gw_flight)),
        # The weight: read by grad_input and by grad_weight's epilogue (the Triton kernels gather it
        # straight from the tensor; the older designs wrote and read a prepared copy: the same order).
        Stream("partials and weights", partials + 4 * weight, machine.copy_bandwidth),
    )
    return Prediction(streams, design["launches"] * machine.launch_s)


def backward_roofline_s(shape: cases.LateralShape, dtype: str, machine: Machine = H200) -> float:
    return shape.backward_bytes(ITEMSIZE[dtype]) / machine.copy_bandwidth


def backward_tables(
    shapes: dict[str, list[cases.LateralShape]], machine: Machine, layout: str = "ncdhw"
) -> str:
    """Per fusion point and summed: each backward design's predicted time / roofline, with re-reads
    charged as DRAM bytes and as L2 hits."""
    names = [d["name"] for d in BACKWARD_DESIGNS]
    headers = ["config", "fusion point", "dtype", "roofline µs (prediction)",
               *(f"{n} / roofline, DRAM re-reads (prediction)" for n in names),
               *(f"{n} / roofline, L2 re-reads (prediction)" for n in names),
               "largest term (new Triton, L2)"]  # fmt: skip
    lines = []
    for config, points in shapes.items():
        for dtype in ITEMSIZE:
            sums = {False: [0.0] * len(names), True: [0.0] * len(names)}
            roof_sum = 0.0
            for shape in points:
                roof = backward_roofline_s(shape, dtype, machine)
                roof_sum += roof
                cells = []
                for l2 in (False, True):
                    for i, d in enumerate(BACKWARD_DESIGNS):
                        p = predict_backward(d, shape, dtype, machine, l2, layout)
                        sums[l2][i] += p.seconds
                        cells.append(f"{p.seconds / roof:.2f}")
                largest = predict_backward(BACKWARD_TRITON, shape, dtype, machine, True, layout).largest
                lines.append([config, shape.point, dtype, _us(roof), *cells, largest])
            total = [f"**{t / roof_sum:.2f}**" for l2 in (False, True) for t in sums[l2]]
            lines.append([config, "**sum**", dtype, _us(roof_sum), *total, ""])
    return _table(headers, lines)


def resample_table(batch: int, machine: Machine) -> str:
    """The strided resampling kernels (16-byte copies, 8 CTAs x 8 KB in flight per SM: copy
    bandwidth) predicted as their bytes at copy bandwidth plus one launch, against issue 10's 1.2x."""
    size = dataclasses.replace(cases.SIZES["gpu"], kernel_batch=batch)
    headers = ["case", "dtype", "MB", "roofline µs (prediction)", "time µs (prediction)",
               "time / roofline (prediction)"]  # fmt: skip
    lines = []
    for shape in cases.resample_shapes(size):
        for dtype, itemsize in ITEMSIZE.items():
            nbytes = shape.bytes(itemsize)
            if nbytes == 0:  # the identity returns its input: no kernel
                continue
            roof = nbytes / machine.copy_bandwidth
            time = roof + machine.launch_s
            lines.append([shape.name, dtype, _mb(nbytes), _us(roof), _us(time), f"{time / roof:.2f}"])
    return _table(headers, lines)


def render(batch: int = 8, machine: Machine = H200, layout: str = "ncdhw") -> str:
    shapes = gpu_shapes(batch)
    header = (
        f"## lateral_concat forward on an H200: design model PREDICTIONS (no GPU was used)\n\n"
        f"R50 fusion points at batch {batch}, 32-frame 224x224 clip, {layout}. Model: time = sum over "
        "streams of bytes / min(copy bandwidth, bytes in flight per SM x SMs / DRAM latency) + launches "
        f"x launch overhead, with {machine.sms} SMs, copy bandwidth {machine.copy_bandwidth / 1e12:.2f} "
        f"TB/s (measured, BASELINE.md; HBM3e peak {machine.hbm_peak / 1e12:.1f} TB/s), DRAM latency "
        f"{machine.latency_s * 1e9:.0f} ns (assumed), launch overhead {machine.launch_s * 1e6:.1f} µs "
        "(assumed). Roofline = the fewest bytes (cases.py) / copy bandwidth. Designs: "
        + "; ".join(f"`{d['name']}`: {d['summary']}" for d in DESIGNS)
        + ". "
        + in_flight_summary(shapes["4x16"][1], layout)
    )
    return "\n\n".join([
        header,
        "### Sum over the four fusion points\n\n" + sum_table(shapes, machine, layout)
        + "\n\nThe MEASURED column is BASELINE.md's H200 run of the reference (batch 8 only). The model's "
        "reference runs its cuDNN conv at copy bandwidth, a lower bound: the gap between the two is the "
        "conv's own inefficiency, which this model does not describe.",
        "### The old design against issue 10's modelled ratios (R50 4x16)\n\n"
        + issue_10_check(shapes, machine, layout)
        + "\n\nNo constant is fitted to these ratios: the latency is the assumed middle of 600-800 ns "
        "and the columns at 600 and 800 ns show the spread that assumption allows. The issue does not "
        "say which dtype its ratios are for; this model predicts bf16 worse than fp32 for the old "
        "design (half the bytes in flight per K step, and scalar x_slow copies at 14x14).",
        "### Per fusion point\n\n" + point_tables(shapes, machine, layout),
        "### Strided resampling (Triton and CUDA)\n\n" + resample_table(batch, machine)
        + "\n\nThe launch is the whole gap: within 1.2x of the roofline needs a copy of at least 5 "
        "launches' time at copy bandwidth (64 MB at 3 µs per launch and 4.25 TB/s).",
        f"### Backward ({layout}): predicted time / roofline\n\n" + backward_tables(shapes, machine, layout)
        + "\n\nDesigns: " + "; ".join(f"`{d['name']}`: {d['summary']}" for d in BACKWARD_DESIGNS)
        + ". Roofline: the backward's fewest bytes (cases.py: read g's lateral channels, the read fast "
        "frames and the weight; write grad_x_fast and grad_weight) at copy bandwidth. DRAM re-reads: "
        "every tile's re-read of g or x_fast costs DRAM bytes (pessimistic); L2 re-reads: programs "
        "resident together share them through L2 (optimistic).",
        "### Backward: grad_weight partials (Triton)\n\n" + partials_table(shapes)
        + "\n\nBytes, not times: the split count is the kernel's own at 132 SMs. Ordered partials are "
        "what torch.use_deterministic_algorithms(True) runs; atomic adds into one slab are the default.",
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latency-ns", type=float, default=H200.latency_s * 1e9, help="DRAM latency (ns)")
    p.add_argument("--launch-us", type=float, default=H200.launch_s * 1e6, help="launch overhead (µs)")
    p.add_argument("--layout", choices=tuple(cases.LAYOUTS), default="ncdhw")
    p.add_argument(
        "--batch",
        type=int,
        default=8,
        help="batch of the clips (default 8). The model ignores partial waves of thread blocks, so at "
        "small batches, where a grid may not fill the 132 SMs, it is optimistic",
    )
    args = p.parse_args(argv)
    machine = dataclasses.replace(H200, latency_s=args.latency_ns * 1e-9, launch_s=args.launch_us * 1e-6)
    print(render(args.batch, machine, args.layout), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
