"""Training mmaction2's shipped SlowFast R50 config through mmengine's Runner, with mmaction2's
backbone or with ours (the README's two-line config swap), on a tiny in-memory video dataset.

Used by tests/test_mmengine_training.py in-process (one process) and as a torchrun worker
(``launcher='pytorch'``, gloo): ``_mmengine_run.py OUT_DIR LOAD_FROM`` trains both models one
after the other and writes each rank's losses to ``OUT_DIR/losses_<rank>.json``, the checkpoints to
``OUT_DIR/<model>/epoch_1.pth``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import numpy as np

SHIPPED_CONFIG = "configs/recognition/slowfast/slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb.py"
# The README's two-line swap, applied to the shipped config.
SWAP = """
_base_ = [{base!r}]
custom_imports = dict(imports=['slowfast_fast.models.mmaction'], allow_failed_imports=False)
model = dict(backbone=dict(type='FastResNet3dSlowFast'))
"""
MODELS = ("mmaction", "ours")
BATCH = 2  # clips per GPU (the shipped config has 8)
ITERS = 3
CLIP_LEN = 16  # frames per clip (the shipped config samples 32); the slow pathway sees 2
# The shipped train pipeline with the video decoding replaced by in-memory frames (HxW 40x48) and
# the sizes shrunk (256 -> 40 short side, 224 -> 32 crops); the random crop and flip stay.
TRAIN_PIPELINE = [
    dict(type="Resize", scale=(-1, 40)),
    dict(type="RandomResizedCrop"),
    dict(type="Resize", scale=(32, 32), keep_ratio=False),
    dict(type="Flip", flip_ratio=0.5),
    dict(type="FormatShape", input_format="NCTHW"),
    dict(type="PackActionInputs"),
]


def shipped_config_path() -> Path:
    import mmaction

    return Path(mmaction.__file__).parent / ".mim" / SHIPPED_CONFIG


def register_synthetic_dataset() -> None:
    """Register :class:`SyntheticVideoDataset` in mmaction2's dataset registry (once)."""
    from mmaction.registry import DATASETS
    from mmengine.dataset import BaseDataset

    if DATASETS.get("SyntheticVideoDataset") is not None:
        return

    @DATASETS.register_module()
    class SyntheticVideoDataset(BaseDataset):
        """``num_videos`` random uint8 RGB videos of ``clip_len`` frames of HxW 40x48, held in memory,
        with labels ``i % num_classes``: what decoding a sampled clip of a video file yields."""

        def __init__(self, num_videos: int, num_classes: int, clip_len: int, **kwargs) -> None:
            self.num_videos, self.num_classes, self.clip_len = num_videos, num_classes, clip_len
            super().__init__(**kwargs)

        def load_data_list(self) -> list[dict]:
            gen = np.random.default_rng(0)
            return [
                dict(
                    imgs=list(gen.integers(0, 256, (self.clip_len, 40, 48, 3), dtype=np.uint8)),
                    label=i % self.num_classes,
                    num_clips=1,
                    clip_len=self.clip_len,
                    modality="RGB",
                )
                for i in range(self.num_videos)
            ]


def load_config(model: str, tmp_dir: Path):
    """The shipped config, unchanged (``mmaction``) or with the README's swap (``ours``)."""
    from mmengine.config import Config

    if model == "mmaction":
        return Config.fromfile(str(shipped_config_path()))
    path = tmp_dir / f"slowfast_r50_fast_{os.getpid()}.py"  # one per worker: no two writers
    path.write_text(SWAP.format(base=str(shipped_config_path())))
    return Config.fromfile(str(path))


def shrink(cfg, work_dir: Path, load_from: str, world_size: int, launcher: str, save: bool):
    """The config trained for ``ITERS`` iterations of ``BATCH`` tiny clips on CPU; the model, the
    optimizer wrapper (SGD, grad clipping), the parameter schedulers, the data preprocessor and the
    hooks are the shipped config's. ``save``: write a checkpoint at the end (``epoch_1.pth``)."""
    num_classes = cfg.model.cls_head.num_classes
    cfg.train_dataloader = dict(
        batch_size=BATCH,
        num_workers=0,
        persistent_workers=False,
        sampler=copy.deepcopy(cfg.train_dataloader.sampler),
        dataset=dict(
            type="SyntheticVideoDataset",
            num_videos=BATCH * ITERS * world_size,
            num_classes=num_classes,
            clip_len=CLIP_LEN,
            pipeline=TRAIN_PIPELINE,
        ),
    )
    for key in (
        "val_dataloader",
        "val_cfg",
        "val_evaluator",
        "test_dataloader",
        "test_cfg",
        "test_evaluator",
    ):
        cfg[key] = None
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=1, val_interval=1)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1, save_best=None) if save else None
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.env_cfg.dist_cfg = dict(backend="gloo")
    # Without a GPU, DDP must not be given a device (mmengine passes LOCAL_RANK by default).
    cfg.model_wrapper_cfg = dict(
        type="MMDistributedDataParallel",
        device_ids=None,
        broadcast_buffers=False,
        find_unused_parameters=False,
    )
    cfg.randomness = dict(seed=0)
    cfg.load_from = load_from
    cfg.launcher = launcher
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = work_dir.name
    cfg.log_level = "WARNING"
    return cfg


def train(
    model: str, tmp_dir: Path, load_from: str, world_size: int = 1, launcher: str = "none", save: bool = False
):
    """Train ``model`` (``'mmaction'`` or ``'ours'``) for ``ITERS`` iterations; returns the Runner
    and this rank's loss at each iteration (as mmengine logged it)."""
    from mmengine.runner import Runner

    register_synthetic_dataset()
    work_dir = tmp_dir / model
    cfg = shrink(load_config(model, tmp_dir), work_dir, load_from, world_size, launcher, save)
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses, _ = runner.message_hub.get_scalar("train/loss").data
    return runner, [float(v) for v in losses]


def main(out_dir: Path, load_from: str) -> None:
    import conftest
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    conftest._install_drn_stub()
    # torchrun's environment; initialized here because mmengine's own init for launcher='pytorch'
    # calls torch.cuda.set_device, which fails without a GPU (the Runner uses an existing group).
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    losses = {}
    for model in MODELS:
        runner, losses[model] = train(model, out_dir, load_from, world_size, launcher="pytorch", save=True)
        assert runner.distributed and type(runner.model).__name__ == "MMDistributedDataParallel"
        backbone_module = type(runner.model.module.backbone).__module__
        assert backbone_module.startswith("slowfast_fast" if model == "ours" else "mmaction"), backbone_module
        del runner
    (out_dir / f"losses_{rank}.json").write_text(json.dumps(losses))
    print(f"rank {rank} of {world_size}: trained {', '.join(MODELS)}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
