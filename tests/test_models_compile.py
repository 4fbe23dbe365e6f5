"""``torch.compile(fullgraph=True)`` of the backbone: no graph breaks (the fused ops are traceable
custom ops) and the same results as eager.

``aot_eager`` traces with dynamo and AOTAutograd (the fake kernels and autograd registrations of the
ops) and runs the traced graph eagerly, so it checks everything but code generation, in seconds.
Inductor on CPU compiles for minutes on a busy machine: one small eval case, marked slow.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _model_helpers import (
    assert_rel_close,
    clip,
    randomized_state,
    run_forward_backward,
    slowfast_kwargs,
)

from slowfast_fast.models import ResNet3dSlowFast

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


TINY_CLIP = (1, 3, 16, 17, 17)


def _tiny_model(**slow_extra) -> ResNet3dSlowFast:
    kwargs = slowfast_kwargs(
        18, 8, 8, 5, lateral_norm=True, base_channels=16, stage_blocks=(1, 1, 1, 1), slow_extra=slow_extra
    )
    model = ResNet3dSlowFast(**kwargs)
    model.load_state_dict(randomized_state(model.state_dict(), seed=0))
    return model


def test_compile_fullgraph_aot_eager_training_step_matches_eager():
    """Train mode with norm_eval: the laterals run as the fused op with the BN folded into
    scale/shift, so its fake kernel and autograd are traced, as are the pathway split's."""
    torch._dynamo.reset()
    model = _tiny_model(norm_eval=True).train()
    state = copy.deepcopy(model.state_dict())
    want, want_grad = run_forward_backward(model, clip(TINY_CLIP))
    want_params = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)  # train mode updated the running statistics
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got, got_grad = run_forward_backward(compiled, clip(TINY_CLIP))
    for g, w in zip(got, want, strict=True):
        assert_rel_close(g, w, 1e-5, "output")
    assert_rel_close(got_grad, want_grad, 1e-5, "input grad")
    for name, param in model.named_parameters():
        assert_rel_close(param.grad, want_params[name], 1e-5, f"grad of {name}")


@pytest.mark.slow
def test_compile_fullgraph_inductor_matches_eager():
    torch._dynamo.reset()
    model = _tiny_model().eval()
    x = clip(TINY_CLIP)
    with torch.no_grad():
        want = model(x)
        got = torch.compile(model, fullgraph=True)(x)
    for g, w in zip(got, want, strict=True):
        assert_rel_close(g, w, 1e-5, "output")
