"""Shared builders and comparisons for the backbone tests (tests/test_models_*.py)."""

from __future__ import annotations

import copy

import torch

from slowfast_fast.models import ResNet3dSlowFast


def slowfast_kwargs(
    depth: int = 50,
    resample_rate: int = 8,
    speed_ratio: int = 8,
    fusion_kernel: int = 5,
    lateral_norm: bool = False,
    base_channels: int = 64,
    stage_blocks=None,
    slow_extra: dict | None = None,
    fast_extra: dict | None = None,
) -> dict:
    """ResNet3dSlowFast arguments as mmaction2's SlowFast configs write them."""
    slow = dict(
        type="resnet3d",
        depth=depth,
        pretrained=None,
        lateral=True,
        conv1_kernel=(1, 7, 7),
        dilations=(1, 1, 1, 1),
        conv1_stride_t=1,
        pool1_stride_t=1,
        inflate=(0, 0, 1, 1),
        norm_eval=False,
        fusion_kernel=fusion_kernel,
        lateral_norm=lateral_norm,
        base_channels=base_channels,
        stage_blocks=stage_blocks,
    )
    fast = dict(
        type="resnet3d",
        depth=depth,
        pretrained=None,
        lateral=False,
        base_channels=base_channels // 8,
        conv1_kernel=(5, 7, 7),
        conv1_stride_t=1,
        pool1_stride_t=1,
        norm_eval=False,
        stage_blocks=stage_blocks,
    )
    slow.update(slow_extra or {})
    fast.update(fast_extra or {})
    return dict(
        pretrained=None,
        resample_rate=resample_rate,
        speed_ratio=speed_ratio,
        channel_ratio=8,
        slow_pathway=slow,
        fast_pathway=fast,
    )


def build_pair(ref_cls, ours_cls, kwargs: dict, seed: int = 0):
    """mmaction2's model and ours from the same arguments, with identical randomized weights."""
    ref = ref_cls(**copy.deepcopy(kwargs))
    ours = ours_cls(**copy.deepcopy(kwargs))
    state = randomized_state(ref.state_dict(), seed)
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    return ref, ours


def build_slowfast_pair(backbones, kwargs: dict, seed: int = 0):
    return build_pair(backbones.ResNet3dSlowFast, ResNet3dSlowFast, kwargs, seed)


def randomized_state(state: dict, seed: int) -> dict:
    """``state`` with every norm layer's affine parameters and running statistics randomized (so no
    BN is the identity and no residual branch is zeroed); conv weights are kept."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if key.endswith(("bn.weight", "running_var")):
            value = torch.rand(value.shape, generator=gen) * 1.0 + 0.5
        elif key.endswith(("bn.bias", "running_mean")):
            value = torch.randn(value.shape, generator=gen) * 0.1
        out[key] = value.clone()
    return out


def clip(shape, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``||actual - expected|| / ||expected||`` in float64 (0 when both are zero)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    diff = (actual - expected).norm().item()
    scale = expected.norm().item()
    return diff / scale if scale > 0 else diff


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    err = rel_err(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def run_forward_backward(model, x: torch.Tensor, seed: int = 1):
    """Outputs and the input gradient of a random projection of all outputs."""
    x = x.clone().requires_grad_(True)
    outs = as_tuple(model(x))
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen).to(o.dtype)).sum() for o in outs)
    loss.backward()
    return outs, x.grad


def compare_with_reference(ref, ours, x, tol: float, grads: bool = True) -> None:
    """Outputs, buffers (running statistics) and, if ``grads``, the input gradient and every
    parameter gradient of ``ours`` equal ``ref``'s within relative error ``tol``."""
    ref.zero_grad(set_to_none=True)
    ours.zero_grad(set_to_none=True)
    if grads:
        ref_outs, ref_grad = run_forward_backward(ref, x)
        outs, grad = run_forward_backward(ours, x)
    else:
        with torch.no_grad():
            ref_outs, outs = as_tuple(ref(x)), as_tuple(ours(x))
    assert len(outs) == len(ref_outs)
    for i, (o, r) in enumerate(zip(outs, ref_outs, strict=True)):
        assert_rel_close(o, r, tol, f"output {i}")
    ref_buffers = dict(ref.named_buffers())
    for name, buf in ours.named_buffers():
        if buf.is_floating_point():
            assert_rel_close(buf, ref_buffers[name], tol, f"buffer {name}")
        else:
            assert torch.equal(buf, ref_buffers[name]), name
    if not grads:
        return
    assert_rel_close(grad, ref_grad, tol, "input grad")
    ref_params = dict(ref.named_parameters())
    assert ref_params.keys() == dict(ours.named_parameters()).keys()
    for name, param in ours.named_parameters():
        ref_param = ref_params[name]
        assert (param.grad is None) == (ref_param.grad is None), name
        if param.grad is not None:
            assert_rel_close(param.grad, ref_param.grad, tol, f"grad of {name}")


def state_dicts_equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
