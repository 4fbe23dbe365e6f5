"""The shapes benchmarked: SlowFast R50 fusion points and the clip sizes per size preset.

Channel counts follow mmaction2's ``resnet3d_slowfast.py`` for R50 (slow base 64 channels,
``channel_ratio=8``, ``lateral_infl=2``, bottleneck expansion 4): a lateral maps the fast pathway's
``C_fast`` channels to ``2 * C_fast`` and concatenates them after the slow pathway's ``C_slow``.
Spatial sizes follow the stem (conv1 stride 2, max-pool stride 2) and the stride-2 layers 2 and 3:
a 224x224 clip gives 56/56/28/14 at conv1/layer1/layer2/layer3, a 56x56 clip 14/14/7/4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# (name, C_slow, C_fast) at each fusion point of R50; the lateral writes 2 * C_fast channels.
FUSION_POINTS = (
    ("conv1_lateral", 64, 8),
    ("layer1_lateral", 256, 32),
    ("layer2_lateral", 512, 64),
    ("layer3_lateral", 1024, 128),
)


@dataclass(frozen=True)
class SlowFastConfig:
    """A SlowFast sampling config: ``resample_rate`` (slow stride over the clip), ``speed_ratio``
    (alpha: fast frames per slow frame) and the lateral conv's temporal kernel."""

    name: str
    resample_rate: int
    speed_ratio: int
    fusion_kernel: int

    @property
    def padding(self) -> int:
        return (self.fusion_kernel - 1) // 2


CONFIGS = {
    "4x16": SlowFastConfig("4x16", resample_rate=8, speed_ratio=8, fusion_kernel=5),
    "8x8": SlowFastConfig("8x8", resample_rate=4, speed_ratio=4, fusion_kernel=7),
}


@dataclass(frozen=True)
class SizePreset:
    """Problem sizes. Kernel cases use a ``kernel_batch`` x 3 x ``clip_frames`` x ``input_size``^2
    clip; the backbone uses ``backbone_clip`` (T, H, W) at each of ``inference_batches`` and a
    training step at ``train_batch``."""

    name: str
    kernel_batch: int
    clip_frames: int
    input_size: int
    backbone_clip: tuple[int, int, int]
    inference_batches: tuple[int, ...]
    train_batch: int
    copy_bytes: int  # size of the tensor copied to measure memory bandwidth


SIZES = {
    # The sizes of BASELINE.md: what the GPU numbers are compared on.
    "gpu": SizePreset("gpu", 8, 32, 224, (32, 224, 224), (1, 8), 8, copy_bytes=1 << 30),
    # Small enough that the whole default run takes a few minutes on a 2-core CPU (a backbone
    # training step at 16x40x40 takes seconds there).
    "cpu": SizePreset("cpu", 2, 32, 56, (16, 40, 40), (1, 2), 2, copy_bytes=1 << 28),
    # Seconds in total: for the smoke test. Training needs batch 2: BatchNorm in training mode
    # needs more than one value per channel, and the last stage is 1x1x1 here.
    "tiny": SizePreset("tiny", 1, 16, 16, (8, 32, 32), (1,), 2, copy_bytes=1 << 22),
}


def _halve(size: int) -> int:
    """Output size of a stride-2 conv or pool with 'same' padding (conv1 k7 p3, pool k3 p1, 3x3 p1)."""
    return math.ceil(size / 2)


def fusion_spatial(input_size: int) -> dict[str, int]:
    """Spatial size at each fusion point for a square input of ``input_size``."""
    stem = _halve(_halve(input_size))
    layer2 = _halve(stem)
    return {
        "conv1_lateral": stem,
        "layer1_lateral": stem,
        "layer2_lateral": layer2,
        "layer3_lateral": _halve(layer2),
    }


@dataclass(frozen=True)
class LateralShape:
    """One lateral connection: ``x_slow (N, C_slow, T_slow, S, S)``, ``x_fast (N, C_fast, T_fast, S, S)``,
    weight ``(2 * C_fast, C_fast, k, 1, 1)``, temporal stride and padding."""

    config: str
    point: str
    batch: int
    c_slow: int
    c_fast: int
    t_slow: int
    t_fast: int
    spatial: int
    kernel: int
    stride: int
    padding: int

    @property
    def c_lateral(self) -> int:
        return 2 * self.c_fast

    def describe(self) -> str:
        n, s = self.batch, self.spatial
        return (
            f"slow {n}x{self.c_slow}x{self.t_slow}x{s}x{s}, fast {n}x{self.c_fast}x{self.t_fast}x{s}x{s}, "
            f"k{self.kernel} s{self.stride}"
        )

    def fast_frames_read(self) -> int:
        """Fast frames the conv reads: with stride > kernel some frames are never needed."""
        frames = {
            t * self.stride - self.padding + kt for t in range(self.t_slow) for kt in range(self.kernel)
        }
        return sum(1 for f in frames if 0 <= f < self.t_fast)

    def forward_bytes(self, itemsize: int) -> int:
        """Fewest bytes lateral_concat must move: read x_slow, the read fast frames and the weight,
        write the concatenated output."""
        plane = self.batch * self.spatial * self.spatial
        x_slow = plane * self.c_slow * self.t_slow
        x_fast = plane * self.c_fast * self.fast_frames_read()
        weight = self.c_lateral * self.c_fast * self.kernel
        out = plane * (self.c_slow + self.c_lateral) * self.t_slow
        return itemsize * (x_slow + x_fast + weight + out)

    def backward_bytes(self, itemsize: int) -> int:
        """Fewest bytes the backward must move: grad_x_slow is a view of grad_out (nothing moves);
        read the lateral part of grad_out, the read fast frames and the weight; write all of
        grad_x_fast (unread frames get zeros) and grad_weight."""
        plane = self.batch * self.spatial * self.spatial
        grad_lateral = plane * self.c_lateral * self.t_slow
        x_fast_read = plane * self.c_fast * self.fast_frames_read()
        weight = self.c_lateral * self.c_fast * self.kernel
        grad_x_fast = plane * self.c_fast * self.t_fast
        return itemsize * (grad_lateral + x_fast_read + 2 * weight + grad_x_fast)


def lateral_shapes(size: SizePreset, config: SlowFastConfig) -> list[LateralShape]:
    """The four fusion points of R50 for ``config`` at ``size``."""
    t_slow = size.clip_frames // config.resample_rate
    t_fast = size.clip_frames // (config.resample_rate // config.speed_ratio)
    spatial = fusion_spatial(size.input_size)
    return [
        LateralShape(
            config.name,
            point,
            size.kernel_batch,
            c_slow,
            c_fast,
            t_slow,
            t_fast,
            spatial[point],
            config.fusion_kernel,
            config.speed_ratio,
            config.padding,
        )
        for point, c_slow, c_fast in FUSION_POINTS
    ]


@dataclass(frozen=True)
class ResampleShape:
    """Nearest temporal resampling of a ``(N, 3, T, S, S)`` clip by ``scale_factor``."""

    name: str
    batch: int
    frames: int
    spatial: int
    scale_factor: float

    def describe(self) -> str:
        return f"x {self.batch}x3x{self.frames}x{self.spatial}x{self.spatial}, scale {self.scale_factor:g}"

    def bytes(self, itemsize: int) -> int:
        """Read and write the kept frames; the identity needs no copy at all."""
        t_out = math.floor(self.frames * self.scale_factor)
        if t_out == self.frames:
            return 0
        return itemsize * 2 * self.batch * 3 * t_out * self.spatial * self.spatial


def resample_shapes(size: SizePreset) -> list[ResampleShape]:
    """Slow pathway inputs of 4x16 (1/8) and 8x8 (1/4), and the fast pathway's identity of both."""
    args = (size.kernel_batch, size.clip_frames, size.input_size)
    return [
        ResampleShape("slow_1/8", *args, 1 / 8),
        ResampleShape("slow_1/4", *args, 1 / 4),
        ResampleShape("fast_identity", *args, 1.0),
    ]


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LAYOUTS = {"ncdhw": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
