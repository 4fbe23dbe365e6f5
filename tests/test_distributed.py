"""The drop-in backbone under DistributedDataParallel: two gloo workers started by torchrun train it
with the fused ops (compiled CPU kernels) and their averaged gradients equal one process replaying
the same per-rank batches, for DDP with unused-parameter search and with ``static_graph=True``."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from _ddp_worker import STEPS, VARIANTS, batch, build_model, loss_of, make_optimizer
from _dist_launch import run_torchrun
from _model_helpers import assert_rel_close

pytestmark = [
    pytest.mark.usefixtures("one_cpu_thread"),
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"),
]

WORLD_SIZE = 2


@pytest.fixture(scope="module")
def ddp_grads(tmp_path_factory):
    """Rank 0's gradients of each DDP step, per variant, from one torchrun launch of 2 workers."""
    out = tmp_path_factory.mktemp("ddp")
    output = run_torchrun("_ddp_worker.py", [str(out)], nproc=WORLD_SIZE, timeout=300)
    for rank in range(WORLD_SIZE):
        for variant in VARIANTS:
            assert f"rank {rank} world {WORLD_SIZE} {variant}: {STEPS} steps" in output, output[-2000:]
    return {variant: torch.load(out / f"{variant}.pt") for variant in VARIANTS}


def replay_in_one_process() -> list[dict[str, torch.Tensor]]:
    """The same training in one process: each step runs every rank's batch and loss through the
    model separately (so batch norm sees each rank's own batch, as under DDP) and averages the
    gradients, which is what DDP's all-reduce computes."""
    model = build_model()
    optimizer = make_optimizer(model.parameters())
    grads = []
    for step in range(STEPS):
        summed = {}
        for rank in range(WORLD_SIZE):
            model.zero_grad(set_to_none=True)
            loss_of(model(batch(rank, step)), rank, step).backward()
            for name, param in model.named_parameters():
                summed[name] = summed.get(name, 0) + param.grad
        for name, param in model.named_parameters():
            param.grad = summed[name] / WORLD_SIZE
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        optimizer.step()
    return grads


@pytest.fixture(scope="module")
def replayed_grads():
    return replay_in_one_process()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ddp_gradients_match_one_process(ddp_grads, replayed_grads, variant):
    # Both sides run the same fp32 kernels on the same data in one thread; they differ only in how
    # the two ranks' gradients are summed (all-reduce of g/2 terms vs (g0 + g1) / 2), exact for two
    # terms (measured here: bitwise equal). 1e-6 relative leaves room for a reduction order that
    # rounds differently, accumulated over 3 SGD steps; a missed or doubled rank's gradient, or
    # ranks starting from different weights, is an O(1) difference.
    got = ddp_grads[variant]
    assert len(got) == len(replayed_grads) == STEPS
    for step, (grads, want) in enumerate(zip(got, replayed_grads, strict=True)):
        assert grads.keys() == want.keys()
        lateral = [n for n in grads if "lateral" in n]
        assert lateral, "the model has lateral connections"
        for name in grads:
            assert_rel_close(grads[name], want[name], 1e-6, f"{variant} step {step}: grad of {name}")
