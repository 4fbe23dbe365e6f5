"""A torchrun worker (see tests/test_distributed.py): trains the drop-in SlowFast backbone under
DistributedDataParallel on gloo and saves rank 0's gradients of every step.

Each rank trains on its own batch (``batch(rank, step)``) with its own loss (``loss_of``); the test
replays the same per-rank batches in one process and compares. The model, the batches and the loss
live here so that both sides build exactly the same things.

Usage (under torchrun): ``_ddp_worker.py OUT_DIR``; writes ``OUT_DIR/<variant>.pt`` for each variant
of :data:`VARIANTS`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _model_helpers import clip, randomized_state, slowfast_kwargs
from torch.nn.parallel import DistributedDataParallel

from slowfast_fast import backend
from slowfast_fast.models import ResNet3dSlowFast

# DDP's default; with unused-parameter search, which mmaction2 users switch on for partly frozen
# models; and DDP's fastest setting, which replays the first iteration's autograd graph.
VARIANTS = {
    "default": dict(),
    "find_unused": dict(find_unused_parameters=True),
    "static_graph": dict(find_unused_parameters=False, static_graph=True),
}
STEPS = 3
CLIP = (2, 3, 16, 32, 32)  # per rank: (N, C, T, H, W); 4x16 SlowFast gives the slow pathway T=2
LR = 0.05


def build_model() -> ResNet3dSlowFast:
    """A small SlowFast 4x16 (depth 18, 16 slow channels) with bare-conv laterals, so every lateral
    runs as the fused ``lateral_concat`` also in training; the same weights on every call."""
    torch.manual_seed(0)  # conv weights come from the constructor's kaiming init
    model = ResNet3dSlowFast(**slowfast_kwargs(depth=18, base_channels=16))
    model.load_state_dict(randomized_state(model.state_dict(), seed=0))
    return model


def make_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)


def batch(rank: int, step: int) -> torch.Tensor:
    return clip(CLIP, seed=1000 * step + rank)


def loss_of(outs: tuple[torch.Tensor, ...], rank: int, step: int) -> torch.Tensor:
    """A random projection of both pathways' outputs (every output element gets a gradient)."""
    gen = torch.Generator().manual_seed(7 + 1000 * step + rank)
    return sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)


def train(variant: str, rank: int) -> list[dict[str, torch.Tensor]]:
    """``STEPS`` DDP steps; the averaged gradients of each step, by parameter name."""
    model = DistributedDataParallel(build_model(), **VARIANTS[variant])
    optimizer = make_optimizer(model.parameters())
    grads = []
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss_of(model(batch(rank, step)), rank, step).backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.module.named_parameters()})
        optimizer.step()
    return grads


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from torchrun
    rank = dist.get_rank()
    # The fused ops run on the compiled CPU kernels, the default for CPU tensors.
    assert backend.resolve(torch.device("cpu")) == "cpu", backend.resolve(torch.device("cpu"))
    for variant in VARIANTS:
        grads = train(variant, rank)
        if rank == 0:
            torch.save(grads, out_dir / f"{variant}.pt")
        print(f"rank {rank} world {dist.get_world_size()} {variant}: {STEPS} steps", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
