"""SyncBatchNorm, as multi-GPU SlowFast training uses it: built from ``norm_cfg=dict(type='SyncBN')``
or by ``nn.SyncBatchNorm.convert_sync_batchnorm``, the backbone has mmaction2's SyncBN modules and
state_dict, loads mmaction2 checkpoints (SyncBN- or BN3d-trained) strictly both ways, and at
inference folds its BNs (the laterals' into ``lateral_concat``, the rest in
``optimize_for_inference``) to mmaction2's outputs.

PyTorch's SyncBatchNorm synchronizes only CUDA tensors; on CPU (no process group) it normalizes as
BatchNorm does. The GPU training step is the ``cuda``-marked test at the end."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from _model_helpers import (
    assert_rel_close,
    build_slowfast_pair,
    clip,
    randomized_state,
    slowfast_kwargs,
    state_dicts_equal,
)
from torch.nn.modules.batchnorm import _BatchNorm

from slowfast_fast.models import ResNet3dSlowFast, optimize_for_inference

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SYNC_BN = dict(type="SyncBN", requires_grad=True)
# Laterals with conv -> BN -> ReLU (PySlowFast's form), so the lateral BNs are SyncBN too.
BN3D_KWARGS = slowfast_kwargs(depth=18, lateral_norm=True, base_channels=16)
SYNC_KWARGS = slowfast_kwargs(
    depth=18,
    lateral_norm=True,
    base_channels=16,
    slow_extra=dict(norm_cfg=SYNC_BN),
    fast_extra=dict(norm_cfg=SYNC_BN),
)
CLIP = (2, 3, 16, 24, 24)


def norm_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}


def assert_all_sync_bn(model: nn.Module) -> None:
    """Every norm layer, the laterals' included, is a SyncBatchNorm (mmaction2 builds mmengine's
    subclass of it, which only relaxes an input check for parrots)."""
    layers = norm_layers(model)
    assert any("lateral" in name for name in layers), "the laterals have norm layers"
    others = {name: type(m) for name, m in layers.items() if not isinstance(m, nn.SyncBatchNorm)}
    assert not others, others


def test_syncbn_config_builds_mmaction_modules_and_loads_both_ways(mmaction_backbones):
    ref, ours = build_slowfast_pair(mmaction_backbones, SYNC_KWARGS)  # loads ref's state into ours
    assert_all_sync_bn(ref)
    assert_all_sync_bn(ours)
    assert norm_layers(ours).keys() == norm_layers(ref).keys()
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    # Ours -> mmaction2's, strictly, with values it did not already hold.
    state = randomized_state(ours.state_dict(), seed=1)
    ours.load_state_dict(state, strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert state_dicts_equal(ref.state_dict(), state)
    # A checkpoint trained with BN3d loads into the SyncBN model and back (same keys and shapes).
    bn3d_ref = mmaction_backbones.ResNet3dSlowFast(**copy.deepcopy(BN3D_KWARGS))
    ours.load_state_dict(bn3d_ref.state_dict(), strict=True)
    bn3d_ref.load_state_dict(randomized_state(ref.state_dict(), seed=2), strict=True)
    ours.load_state_dict(bn3d_ref.state_dict(), strict=True)
    assert state_dicts_equal(ours.state_dict(), bn3d_ref.state_dict())


def test_convert_sync_batchnorm_keeps_mmaction_state_dict(mmaction_backbones):
    ref = mmaction_backbones.ResNet3dSlowFast(**copy.deepcopy(BN3D_KWARGS))
    ref.load_state_dict(randomized_state(ref.state_dict(), seed=0))
    ours = nn.SyncBatchNorm.convert_sync_batchnorm(ResNet3dSlowFast(**copy.deepcopy(BN3D_KWARGS)))
    assert_all_sync_bn(ours)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    fresh = mmaction_backbones.ResNet3dSlowFast(**copy.deepcopy(BN3D_KWARGS))
    fresh.load_state_dict(ours.state_dict(), strict=True)
    assert state_dicts_equal(fresh.state_dict(), ref.state_dict())


def sync_bn_models(mmaction_backbones) -> dict[str, nn.Module]:
    """mmaction2's SyncBN backbone and ours built both ways, with the same randomized weights and
    running statistics (no BN is the identity), in eval mode."""
    ref = mmaction_backbones.ResNet3dSlowFast(**copy.deepcopy(SYNC_KWARGS))
    ref.load_state_dict(randomized_state(ref.state_dict(), seed=3))
    models = {
        "mmaction2": ref,
        "norm_cfg": ResNet3dSlowFast(**copy.deepcopy(SYNC_KWARGS)),
        "converted": nn.SyncBatchNorm.convert_sync_batchnorm(ResNet3dSlowFast(**copy.deepcopy(BN3D_KWARGS))),
    }
    for model in models.values():
        model.load_state_dict(ref.state_dict(), strict=True)
        model.eval()
    return models


def calls_to_sync_bn(model: nn.Module, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], list[str]]:
    """``model(x)`` and the names of the SyncBatchNorm modules that ran, recorded from the running means
    they pass to ``F.batch_norm``. Not by module hooks or a wrapped ``forward``: the backbone calls a
    lateral module that has hooks or a replaced forward (they must run), which is not what is tested."""
    import torch.nn.modules.batchnorm as batchnorm

    names = {id(m.running_mean): name for name, m in model.named_modules() if isinstance(m, nn.SyncBatchNorm)}
    ran = []
    batch_norm = batchnorm.F.batch_norm

    def recording(input, running_mean, *args, **kwargs):
        if id(running_mean) in names:
            ran.append(names[id(running_mean)])
        return batch_norm(input, running_mean, *args, **kwargs)

    batchnorm.F.batch_norm = recording
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        batchnorm.F.batch_norm = batch_norm
    return out, ran


@pytest.mark.parametrize("built", ["norm_cfg", "converted"])
def test_syncbn_folds_at_inference(mmaction_backbones, built):
    """Eval mode: the lateral SyncBNs fold into ``lateral_concat`` (they never run as modules) and
    ``optimize_for_inference`` folds every other one into its conv; both match mmaction2's outputs."""
    models = sync_bn_models(mmaction_backbones)
    x = clip(CLIP, seed=4)
    want, ref_ran = calls_to_sync_bn(models["mmaction2"], x)
    assert any("lateral" in name for name in ref_ran)
    ours = models[built]
    got, ran = calls_to_sync_bn(ours, x)
    assert ran and not any("lateral" in name for name in ran), ran
    # As in test_models_slowfast: fp32, folding the lateral BN changes outputs by ~1e-6.
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_rel_close(g, w, 1e-5, f"eval output {i}")
    optimized = optimize_for_inference(ours)
    got, ran = calls_to_sync_bn(optimized, x)
    assert ran == [], f"SyncBatchNorm modules still run after optimize_for_inference: {ran}"
    # optimize_for_inference's documented bound: BN folded into conv weights, oneDNN's fused convs.
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_rel_close(g.contiguous(), w, 1e-4, f"optimized output {i}")


@pytest.mark.cuda
def test_syncbn_training_step_matches_bn3d_on_gpu(tmp_path):
    """One SGD step on a GPU in one process (a 1-rank NCCL group, as a 1-GPU torchrun job has): the
    SyncBN backbone computes the BN3d backbone's outputs, gradients, running statistics and updated
    weights."""
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        bn3d = ResNet3dSlowFast(**copy.deepcopy(BN3D_KWARGS))
        bn3d.load_state_dict(randomized_state(bn3d.state_dict(), seed=5))
        sync = ResNet3dSlowFast(**copy.deepcopy(SYNC_KWARGS))
        sync.load_state_dict(bn3d.state_dict(), strict=True)
        results = []
        for model in (bn3d, sync):
            model.cuda().train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            x = clip(CLIP, seed=6).cuda()
            outs = model(x)
            gen = torch.Generator().manual_seed(7)
            loss = sum((o * torch.randn(o.shape, generator=gen).cuda()).sum() for o in outs)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            optimizer.step()
            results.append((outs, grads, model.state_dict()))
        assert_all_sync_bn(sync)
        (want_outs, want_grads, want_state), (outs, grads, state) = results
        # Both normalize with the same batch statistics through the same cuDNN kernels; 1e-5
        # covers TF32 or reduction-order differences between otherwise identical launches.
        for i, (g, w) in enumerate(zip(outs, want_outs, strict=True)):
            assert_rel_close(g, w, 1e-5, f"output {i}")
        for name, grad in grads.items():
            assert_rel_close(grad, want_grads[name], 1e-5, f"grad of {name}")
        for name, value in state.items():
            if value.is_floating_point():
                assert_rel_close(value, want_state[name], 1e-5, f"after the step: {name}")
            else:
                assert torch.equal(value, want_state[name]), name
    finally:
        dist.destroy_process_group()
