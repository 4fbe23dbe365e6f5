"""ResNet3dSlowFast takes its fused lateral path only where that is what calling the lateral module
would compute and nothing observes the call; otherwise it calls the module, as mmaction2 1.2.0 does.

Each case is compared with real mmaction2 (outputs, and gradients where the case trains) after the
same modification of both models: hooks on the laterals or their submodules and global module hooks
fire the same number of times, pruned or weight-normed laterals train like mmaction2's, laterals
whose conv has a bias, a spatial kernel or whose BN was folded away compute mmaction2's values, the
model traces with ``torch.fx.symbolic_trace``, and a float ``resample_rate`` works (integral or not).

Tolerances as in test_models_slowfast.py: fp32 on the ``reference`` backend, 1e-5 relative.
"""

from __future__ import annotations

import collections

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune
from _model_helpers import (
    as_tuple,
    assert_rel_close,
    build_slowfast_pair,
    clip,
    compare_with_reference,
    slowfast_kwargs,
)
from torch.nn.modules import module as module_hooks
from torch.nn.utils import parametrizations
from torch.nn.utils.fusion import fuse_conv_bn_eval

import slowfast_fast
from slowfast_fast import ops
from slowfast_fast.models import ResNet3dSlowFast

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

LATERALS = ("conv1_lateral", "layer1_lateral", "layer2_lateral", "layer3_lateral")
CLIP = (2, 3, 16, 21, 21)
TOL = 1e-5


def _kwargs(lateral_norm: bool) -> dict:
    return slowfast_kwargs(18, 4, 4, 5, lateral_norm=lateral_norm, base_channels=16)


@pytest.fixture
def pair(mmaction_backbones):
    """``get(lateral_norm)``: mmaction2's model and ours with identical random weights."""
    return lambda lateral_norm: build_slowfast_pair(mmaction_backbones, _kwargs(lateral_norm))


@pytest.fixture
def fused_calls(monkeypatch):
    """The calls made to ``ops.lateral_concat`` (which the model calls on its fused path)."""
    calls = []
    op = ops.lateral_concat

    def record(*args, **kwargs):
        calls.append(args)
        return op(*args, **kwargs)

    monkeypatch.setattr(ops, "lateral_concat", record)
    return calls


def _lateral_modules(model) -> dict[str, nn.Module]:
    """Every lateral of ``model``'s slow pathway and its submodules, by qualified name."""
    return {
        f"{name}.{sub}".rstrip("."): m
        for name in LATERALS
        for sub, m in getattr(model.slow_path, name).named_modules()
    }


def _set_mode(mode: str, *models) -> None:
    for m in models:
        m.train(mode == "train")


# --- hooks ---------------------------------------------------------------------------------------

_HOOKS = ("forward", "forward_pre", "forward_kwargs", "full_backward", "full_backward_pre")


def _no_inplace_relu(model: nn.Module) -> None:
    """PyTorch refuses a full backward hook on a module that modifies its input in place (an in-place
    ReLU), in mmaction2's model as in ours: those hooks are tested with out-of-place ReLUs."""
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False


def _register(module: nn.Module, kind: str, record) -> torch.utils.hooks.RemovableHandle:
    if kind == "forward":
        return module.register_forward_hook(lambda m, i, o: record())
    if kind == "forward_pre":
        return module.register_forward_pre_hook(lambda m, i: record())
    if kind == "forward_kwargs":
        return module.register_forward_hook(lambda m, a, k, o: record(), with_kwargs=True)
    if kind == "full_backward":
        return module.register_full_backward_hook(lambda m, gi, go: record())
    return module.register_full_backward_pre_hook(lambda m, go: record())


@pytest.mark.parametrize("where", ["lateral", "submodules"])
@pytest.mark.parametrize("kind", _HOOKS)
@pytest.mark.parametrize("lateral_norm", [False, True])
def test_lateral_hooks_fire_like_mmaction(pair, fused_calls, lateral_norm, kind, where):
    ref, ours = pair(lateral_norm)
    counts = []
    for model in (ref, ours):
        count = collections.Counter()
        counts.append(count)
        if "backward" in kind:
            _no_inplace_relu(model)
        for name, m in _lateral_modules(model).items():
            if (where == "lateral") == (name in LATERALS):
                _register(m, kind, lambda name=name, count=count: count.update([name]))
    _set_mode("eval", ref, ours)  # eval: without the hooks, every lateral would be fused
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, clip(CLIP), tol=TOL)
    assert counts[0], "the hooks never fired in mmaction2"
    assert counts[1] == counts[0]
    assert fused_calls == []


@pytest.mark.parametrize("kind", ["forward", "forward_pre", "forward_always", "full_backward"])
def test_global_module_hooks_fire_like_mmaction(pair, fused_calls, kind):
    ref, ours = pair(True)
    _set_mode("eval", ref, ours)
    names = {id(m): n for model in (ref, ours) for n, m in model.named_modules()}
    seen = collections.Counter()

    def hook(m, *args):
        seen[names.get(id(m))] += 1

    register = {
        "forward": module_hooks.register_module_forward_hook,
        "forward_pre": module_hooks.register_module_forward_pre_hook,
        "forward_always": lambda h: module_hooks.register_module_forward_hook(h, always_call=True),
        "full_backward": module_hooks.register_module_full_backward_hook,
    }[kind]
    if kind == "full_backward":
        _no_inplace_relu(ref)
        _no_inplace_relu(ours)
    x = clip(CLIP)
    counts = []
    with slowfast_fast.use_backend("reference"):
        for model in (ref, ours):
            seen.clear()
            handle = register(hook)
            try:
                outs = as_tuple(model(x.clone().requires_grad_(True)))
                sum(o.sum() for o in outs).backward()
            finally:
                handle.remove()
            counts.append({n: c for n, c in seen.items() if "lateral" in n})
    assert counts[0], "the hook never saw a lateral in mmaction2"
    assert counts[1] == counts[0]
    assert fused_calls == []


def test_hooks_removed_fuses_again(pair, fused_calls):
    """Guarding costs nothing once the hooks are gone: the laterals are fused again."""
    _, ours = pair(True)
    ours.eval()
    handle = ours.slow_path.layer2_lateral.bn.register_forward_hook(lambda m, i, o: None)
    with torch.no_grad():
        ours(clip(CLIP))
        assert len(fused_calls) == 3
        handle.remove()
        ours(clip(CLIP))
    assert len(fused_calls) == 3 + 4


# --- weight reparametrizations ---------------------------------------------------------------------


def _train_steps(model, x: torch.Tensor, steps: int = 2):
    """``steps`` SGD steps on a random projection of the outputs; the outputs of each step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    seen = []
    for _ in range(steps):
        outs = as_tuple(model(x))
        loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
        loss.backward()
        opt.step()
        opt.zero_grad()
        seen.append([o.detach() for o in outs])
    return seen


def _reparametrize(conv: nn.Conv3d, how: str) -> None:
    if how == "prune":
        prune.l1_unstructured(conv, "weight", amount=0.5)
    else:
        getattr(torch.nn.utils, how)(conv)


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm is deprecated")
@pytest.mark.parametrize("how", ["prune", "weight_norm", "spectral_norm"])
@pytest.mark.parametrize("lateral_norm", [False, True])
def test_reparametrized_laterals_train_like_mmaction(pair, fused_calls, lateral_norm, how):
    """``prune`` and the old-style ``weight_norm`` / ``spectral_norm`` recompute ``weight`` in a
    forward pre-hook: reading the weight without calling the module broke the second backward of
    pruning ("backward through the graph a second time") and used a stale weight after a step."""
    ref, ours = pair(lateral_norm)
    for model in (ref, ours):
        torch.manual_seed(0)  # spectral_norm draws its power-iteration vector
        for name in LATERALS:
            _reparametrize(getattr(model.slow_path, name).conv, how)
    _set_mode("train", ref, ours)
    for model in (ref, ours):  # the laterals' BNs (if any) use running statistics: fusable
        for name in LATERALS:
            getattr(model.slow_path, name).eval()
    x = clip(CLIP)
    with slowfast_fast.use_backend("reference"):
        want, got = _train_steps(ref, x), _train_steps(ours, x)
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        for i, (a, b) in enumerate(zip(g, w, strict=True)):
            assert_rel_close(a, b, TOL, f"step {step} output {i}")
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert_rel_close(param, ref_params[name], TOL, name)
    assert fused_calls == []
    if how == "prune":
        for name in LATERALS:
            conv = getattr(ours.slow_path, name).conv
            assert (conv.weight == 0).sum() * 2 == conv.weight.numel(), name  # the mask still applies


def test_parametrized_weight_norm_stays_fused(pair, fused_calls):
    """A parametrization computes ``weight`` on access, so the fused path reads the right weight and
    gradients reach the parametrization's parameters."""
    ref, ours = pair(True)
    for model in (ref, ours):
        for name in LATERALS:
            parametrizations.weight_norm(getattr(model.slow_path, name).conv)
    _set_mode("eval", ref, ours)
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, clip(CLIP), tol=TOL, grads=False)
    assert len(fused_calls) == 4
    # Gradients in fp64 (see test_models_slowfast.py: with a folded BN, fp32 gradients can differ by
    # a flipped ReLU decision, which says nothing about the fusion).
    ref.double()
    ours.double()
    compare_with_reference(ref, ours, clip(CLIP, dtype=torch.float64), tol=1e-9)


# --- laterals that are not what the fused path assumes --------------------------------------------


def _replace_conv(lateral: nn.Module, seed: int, bias: bool, spatial: int = 1) -> None:
    """``lateral.conv`` replaced by a conv with the same temporal geometry, a ``spatial`` x ``spatial``
    kernel and, if ``bias``, a random bias."""
    old = lateral.conv
    k = old.kernel_size[0]
    conv = nn.Conv3d(
        old.in_channels,
        old.out_channels,
        (k, spatial, spatial),
        stride=old.stride,
        padding=(old.padding[0], spatial // 2, spatial // 2),
        bias=bias,
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.2)
        if bias:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
    lateral.conv = conv


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("lateral_norm", [False, True])
def test_lateral_conv_bias_matches(pair, fused_calls, lateral_norm, mode):
    """A lateral conv with a bias (mmaction2's module adds it; the fused path dropped it)."""
    ref, ours = pair(lateral_norm)
    for model in (ref, ours):
        for i, name in enumerate(LATERALS):
            _replace_conv(getattr(model.slow_path, name), seed=i, bias=True)
    _set_mode(mode, ref, ours)
    folded = lateral_norm and mode == "eval"
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, clip(CLIP), tol=TOL, grads=not folded)
    if lateral_norm and mode == "train":
        assert fused_calls == []  # batch statistics
    else:
        assert len(fused_calls) == 4  # the bias is folded into the shift
    if folded:
        ref.double()
        ours.double()
        compare_with_reference(ref, ours, clip(CLIP, dtype=torch.float64), tol=1e-9)


def test_lateral_conv_spatial_kernel_matches(pair, fused_calls):
    ref, ours = pair(True)
    for model in (ref, ours):
        for i, name in enumerate(LATERALS):
            _replace_conv(getattr(model.slow_path, name), seed=i, bias=False, spatial=3)
    _set_mode("eval", ref, ours)
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, clip(CLIP), tol=TOL)
    assert fused_calls == []


@pytest.mark.parametrize("remove_norm", [False, True])
def test_bn_folded_into_lateral_conv_matches(pair, remove_norm):
    """``fuse_conv_bn_eval`` folds each lateral BN into its conv (which gets a bias) and the BN is
    replaced by ``nn.Identity`` (this crashed on ``running_mean``); or, ``remove_norm``, our module
    is also marked norm-free (the fused path then dropped the conv's bias)."""
    ref, ours = pair(True)
    _set_mode("eval", ref, ours)
    x = clip(CLIP)
    with torch.no_grad():
        before = ref(x)
    for model in (ref, ours):
        for name in LATERALS:
            lateral = getattr(model.slow_path, name)
            lateral.conv = fuse_conv_bn_eval(lateral.conv, lateral.bn)
            lateral.bn = nn.Identity()
    if remove_norm:
        for name in LATERALS:
            lateral = getattr(ours.slow_path, name)
            del lateral.bn
            lateral.with_norm = False
    _set_mode("eval", ref, ours)  # the new Identity modules were built in train mode
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, x, tol=TOL)
    with torch.no_grad():
        for got, want in zip(ours(x), before, strict=True):
            assert_rel_close(got, want, TOL, "after the fold")


def test_replaced_activation_matches(pair, fused_calls):
    ref, ours = pair(True)
    for model in (ref, ours):
        for name in LATERALS:
            getattr(model.slow_path, name).activate = nn.LeakyReLU(0.3)
    _set_mode("eval", ref, ours)
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, clip(CLIP), tol=TOL, grads=False)
    assert fused_calls == []


# --- torch.fx ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("lateral_norm", [False, True])
def test_fx_symbolic_trace_matches(pair, lateral_norm, mode):
    ref, ours = pair(lateral_norm)
    _set_mode(mode, ref, ours)
    traced = torch.fx.symbolic_trace(ours)
    # mmaction2's computation: F.interpolate twice, each lateral conv called, torch.cat four times.
    functions = collections.Counter(n.target for n in traced.graph.nodes if n.op == "call_function")
    assert functions[F.interpolate] == 2 and functions[torch.cat] == 4
    modules = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    assert {f"slow_path.{name}.conv" for name in LATERALS} <= modules
    for seed in (0, 1):  # nothing of the first input is baked into the graph
        x = clip(CLIP, seed=seed)
        with slowfast_fast.use_backend("reference"):  # outputs, running statistics, gradients
            compare_with_reference(ref, traced, x, tol=TOL, grads=mode == "train")
    if mode == "eval":  # (in train mode another call would update the running statistics again)
        with torch.no_grad():
            for got, want in zip(traced(x), ours(x), strict=True):
                assert_rel_close(got, want, TOL, "traced vs eager")


def test_fx_tracing_leaves_eager_fused(pair, fused_calls):
    _, ours = pair(False)
    ours.eval()
    torch.fx.symbolic_trace(ours)
    with torch.no_grad():
        ours(clip(CLIP))
    assert len(fused_calls) == 4


# --- resample_rate -------------------------------------------------------------------------------


def test_integral_float_resample_rate_matches(mmaction_backbones):
    kwargs = slowfast_kwargs(18, 8, 8, 5, base_channels=16)
    kwargs["resample_rate"] = 8.0
    ref, ours = build_slowfast_pair(mmaction_backbones, kwargs)
    assert ours.resample_rate == 8 and type(ours.resample_rate) is int
    _set_mode("eval", ref, ours)
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, clip((1, 3, 32, 21, 21)), tol=TOL)
    with torch.no_grad():  # and the default backend
        x = clip((1, 3, 32, 21, 21))
        for got, want in zip(ours(x), ref(x), strict=True):
            assert_rel_close(got, want, TOL, "output")


@pytest.mark.parametrize("rate", [8.5, 10.5, 12.25])
def test_non_integral_float_resample_rate_matches(mmaction_backbones, rate):
    """mmaction2 divides by the rate as given (``1.0 / 10.5``; the fast pathway's ``10.5 // 8`` is
    1.0): the slow pathway reads frames 0, 10, 21, 31, ... (refused at construction before). At
    speed_ratio 8 and 43 frames such a rate gives the slow pathway fewer frames than a lateral conv
    gives it, so there mmaction2 runs it only without laterals, and with them both models refuse the
    clip (with speed_ratio 4, 17 frames at 8.5 work with laterals: the next test)."""
    kwargs = slowfast_kwargs(18, 8, 8, 5, base_channels=16, slow_extra=dict(lateral=False))
    kwargs["resample_rate"] = rate
    ref, ours = build_slowfast_pair(mmaction_backbones, kwargs)
    assert ours.resample_rate == rate
    _set_mode("eval", ref, ours)
    x = clip((1, 3, 43, 21, 21))  # 43 / 10.5 = 4.1 slow frames: a partial last step
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, x, tol=TOL)
    with torch.no_grad():  # and the default backend
        for got, want in zip(ours(x), ref(x), strict=True):
            assert_rel_close(got, want, TOL, "output")
    slow, fast = ours.pathway_inputs(x)
    assert torch.equal(slow, x[:, :, [int(d * rate) for d in range(int(43 / rate))]])
    assert torch.equal(fast, x)

    kwargs = slowfast_kwargs(18, 8, 8, 5, base_channels=16)
    kwargs["resample_rate"] = rate
    ref, ours = build_slowfast_pair(mmaction_backbones, kwargs)
    for model in (ref, ours):
        with pytest.raises(RuntimeError, match="size|frames"):
            model(x)


def test_non_integral_float_resample_rate_with_laterals_matches(mmaction_backbones):
    """8.5 at speed_ratio 4 over 17 frames: 2 slow frames (0, 8), as many as the lateral conv gives."""
    kwargs = slowfast_kwargs(18, 8.5, 4, 5, base_channels=16)
    ref, ours = build_slowfast_pair(mmaction_backbones, kwargs)
    _set_mode("eval", ref, ours)
    x = clip((1, 3, 17, 21, 21))
    with slowfast_fast.use_backend("reference"):
        compare_with_reference(ref, ours, x, tol=TOL)
    with torch.no_grad():
        for got, want in zip(ours(x), ref(x), strict=True):
            assert_rel_close(got, want, TOL, "output")
    assert torch.equal(ours.pathway_inputs(x)[0], x[:, :, [0, 8]])


def test_float_resample_rates_compile_fullgraph(mmaction_backbones):
    """Two models with other float rates in one process: dynamo's automatic dynamic makes the second
    rate a SymFloat, which ``math.isfinite`` in the rate and scale checks could not take."""
    x = clip((1, 3, 43, 21, 21))
    torch._dynamo.reset()
    try:
        for rate in (10.5, 12.25):
            kwargs = slowfast_kwargs(
                18, rate, 8, 5, base_channels=16, stage_blocks=(1, 1, 1, 1), slow_extra=dict(lateral=False)
            )
            ref, ours = build_slowfast_pair(mmaction_backbones, kwargs)
            _set_mode("eval", ref, ours)
            with torch.no_grad():
                got = torch.compile(ours, fullgraph=True, backend="eager")(x)
                for g, want in zip(got, ref(x), strict=True):
                    assert_rel_close(g, want, TOL, f"compiled output at rate {rate}")
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("rate", [float("inf"), float("nan"), 4.5])
def test_unusable_resample_rate_raises_when_a_clip_is_split(rate):
    """inf, nan, or a rate below speed_ratio (mmaction2: a ZeroDivisionError or an empty clip): a
    clear ValueError; [x_slow, x_fast] inputs, which never use the rate, still run."""
    kwargs = slowfast_kwargs(18, 8, 8, 5, base_channels=16)
    kwargs["resample_rate"] = rate
    model = ResNet3dSlowFast(**kwargs).eval()
    with pytest.raises(ValueError, match="resample_rate"):
        model(clip((1, 3, 32, 21, 21)))
    with torch.no_grad():
        slow, fast = model([clip((1, 3, 4, 21, 21)), clip((1, 3, 32, 21, 21))])
    assert slow.shape[2] == 4 and fast.shape[2] == 32


def test_autocast_fused_laterals_keep_the_module_paths_dtype(pair, fused_calls):
    """Under bf16 autocast, mmaction2's lateral (conv in bf16, BN keeping it) concatenated with a bf16
    slow pathway is bf16; the fused op with the folded (float32) BN computes ``conv * scale + shift``
    in float32, so without a cast the slow pathway's later stages ran in float32 (twice the bytes, and
    another dtype than mmaction2's)."""
    ref, ours = pair(True)
    _set_mode("eval", ref, ours)
    x = clip(CLIP)
    dtypes = {}
    for name, model in (("mmaction2", ref), ("ours", ours)):
        seen = dtypes[name] = {}
        hooks = [
            getattr(model.slow_path, layer).register_forward_pre_hook(
                lambda _m, args, layer=layer, seen=seen: seen.__setitem__(layer, args[0].dtype)
            )
            for layer in ("layer2", "layer3", "layer4")
        ]
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            out = as_tuple(model(x))
        for hook in hooks:
            hook.remove()
        dtypes[name + " out"] = [t.dtype for t in out]
    assert len(fused_calls) == 4
    assert dtypes["ours"] == dtypes["mmaction2"], dtypes
    assert set(dtypes["ours"].values()) == {torch.bfloat16}
    assert dtypes["ours out"] == dtypes["mmaction2 out"]
