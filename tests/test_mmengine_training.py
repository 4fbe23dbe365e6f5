"""A real mmaction2 training run through mmengine's Runner with the backbone swapped in by the
README's two-line config change: the shipped SlowFast R50 4x16 config, shrunk to a tiny in-memory
video dataset, trains for 3 iterations (its SGD optimizer wrapper with gradient clipping, its
warm-up and cosine schedulers, its data preprocessor and hooks) with the same losses as mmaction2's
own backbone, in one process and with ``launcher='pytorch'`` on 2 gloo workers; the checkpoints that
run writes load into both models."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from _dist_launch import run_torchrun
from _mmengine_run import ITERS, MODELS, load_config, register_synthetic_dataset, train
from _model_helpers import rel_err, state_dicts_equal

from slowfast_fast import backend
from slowfast_fast.models import ResNet3dSlowFast, load_mmaction_checkpoint

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

WORLD_SIZE = 2
# Both runs start from the same weights and see the same data, dropout masks and learning rates;
# they differ only by fp32 rounding (the fused kernels sum in another order than oneDNN's conv, about
# 1e-6 relative per op), which 3 SGD steps of a freshly initialized R50 carry into the loss (about 6)
# at the 1e-6 level (measured: at most 1e-6). The bound, 1e-4, still catches small real
# differences: scaling the laterals' weights by 1.01 moves the first loss by 3e-3.
LOSS_TOL = 1e-4


@pytest.fixture(scope="module")
def registry(mmaction_backbones):
    from mmaction.registry import MODELS as REGISTRY
    from mmaction.utils import register_all_modules

    register_all_modules()
    register_synthetic_dataset()
    return REGISTRY


@pytest.fixture(scope="module")
def init_checkpoint(registry, tmp_path_factory):
    """The shipped config's recognizer as its ``init_weights`` leaves it (seed 0): both runs load it."""
    tmp = tmp_path_factory.mktemp("init")
    torch.manual_seed(0)
    model = registry.build(load_config("mmaction", tmp).model)
    model.init_weights()
    path = tmp / "init.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    yield path
    shutil.rmtree(tmp)  # R50 weights: do not leave them in pytest's kept temp folders


def assert_losses_match(losses: dict, what: str) -> None:
    ref, ours = losses["mmaction"], losses["ours"]
    assert len(ref) == len(ours) == ITERS, f"{what}: {losses}"
    for i, (a, b) in enumerate(zip(ref, ours, strict=True)):
        assert abs(a - b) <= LOSS_TOL, f"{what}: iteration {i} loss {b} (ours) vs {a} (mmaction2)"


def test_runner_one_process(registry, init_checkpoint, tmp_path):
    assert backend.resolve(torch.device("cpu")) == "cpu"  # the fused ops run on the C++ kernels
    losses, lrs = {}, {}
    for model in MODELS:
        runner, losses[model] = train(model, tmp_path, str(init_checkpoint))
        want = ResNet3dSlowFast if model == "ours" else registry.get("ResNet3dSlowFast")
        assert type(runner.model.backbone) is want
        assert runner.optim_wrapper.clip_grad_kwargs == dict(max_norm=40, norm_type=2)
        lrs[model], _ = runner.message_hub.get_scalar("train/lr").data
        del runner
    assert_losses_match(losses, "one process")
    # The linear warm-up scheduler ran: the learning rate rose at every iteration, in both runs alike.
    assert lrs["ours"].tolist() == lrs["mmaction"].tolist()
    assert all(a < b for a, b in zip(lrs["ours"][:-1], lrs["ours"][1:], strict=True)), lrs["ours"]


@pytest.fixture(scope="module")
def distributed_run(init_checkpoint, tmp_path_factory):
    """Both models trained with launcher='pytorch' by 2 gloo workers under torchrun: the folder with
    each model's work_dir and each rank's losses (removed afterwards: the checkpoints are large)."""
    out = tmp_path_factory.mktemp("mmengine_dist")
    output = run_torchrun("_mmengine_run.py", [str(out), str(init_checkpoint)], nproc=WORLD_SIZE, timeout=400)
    for rank in range(WORLD_SIZE):
        assert f"rank {rank} of {WORLD_SIZE}: trained" in output, output[-2000:]
    yield out
    shutil.rmtree(out)


def test_runner_two_gloo_processes(distributed_run):
    for rank in range(WORLD_SIZE):
        losses = json.loads((distributed_run / f"losses_{rank}.json").read_text())
        assert_losses_match(losses, f"rank {rank} of {WORLD_SIZE}")


def test_distributed_checkpoints_load_into_both_models(registry, distributed_run, init_checkpoint):
    """Each run's checkpoint loads strictly into mmaction2's recognizer and into ours (mmengine's
    loader), and its backbone into our bare backbone; the two runs' trained weights agree.

    mmengine 0.10's ``load_checkpoint`` calls ``torch.load`` without ``weights_only``, which torch >= 2.6
    refuses for mmengine's own training checkpoints (they pickle its log buffers); so the file is
    read with ``weights_only=False`` and handed to mmengine's key matching, ``load_state_dict``."""
    from mmengine.runner import load_state_dict

    cfg = {m: load_config(m, distributed_run).model for m in MODELS}
    initial = torch.load(init_checkpoint)["state_dict"]
    trained = {}
    for run in MODELS:
        path = distributed_run / run / "epoch_1.pth"
        state = torch.load(path, weights_only=False)["state_dict"]
        assert not state_dicts_equal(state, initial), f"{run}: the checkpoint holds untrained weights"
        for model in MODELS:
            recognizer = registry.build(copy.deepcopy(cfg[model]))
            load_state_dict(recognizer, state, strict=True)
            assert state_dicts_equal(recognizer.state_dict(), state), f"{run} checkpoint into {model}"
        backbone = ResNet3dSlowFast(**{k: v for k, v in cfg["ours"].backbone.items() if k != "type"})
        ignored = load_mmaction_checkpoint(backbone, path, weights_only=False)
        assert ignored and all(k.startswith("cls_head.") for k in ignored), ignored
        assert state_dicts_equal(backbone.state_dict(), recognizer.backbone.state_dict())
        trained[run] = torch.cat([v.flatten().double() for v in state.values() if v.is_floating_point()])
    # The runs' updates differ only by fp32 rounding (see LOSS_TOL); 3 steps moved the weights by
    # far more than the 1e-5 relative allowed here.
    assert rel_err(trained["ours"], trained["mmaction"]) <= 1e-5
