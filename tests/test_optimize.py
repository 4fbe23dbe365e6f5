"""``optimize_for_inference``: the optimized copy computes what the eval-mode original computes.

Every model gets random BN statistics and affine parameters (``randomized_state``), so folding a BN
that was the identity, or a zeroed residual branch, cannot hide a mistake. Tolerances: fp32 1e-4
relative, the issue's contract (folding reorders one multiply per weight, and oneDNN accumulates
in another order than the reference conv; both are ~1e-6 relative per conv, a few hundred convs
deep); fp64 1e-10 (the same reorderings at 2**-52).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn
from _model_helpers import (
    assert_rel_close,
    clip,
    randomized_state,
    rel_err,
    slowfast_kwargs,
    state_dicts_equal,
)

from slowfast_fast.models import ResNet3d, ResNet3dSlowFast, SlowFastRecognizer, optimize_for_inference
from slowfast_fast.models.blocks import _ResidualBlock
from slowfast_fast.models.layers import ConvModule
from slowfast_fast.models.optimize import FoldedConv3d, OptimizedForInference

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
CL = torch.channels_last_3d


def _slowfast(seed: int = 0, dtype=torch.float32, train: bool = False, **kwargs) -> ResNet3dSlowFast:
    model = ResNet3dSlowFast(**slowfast_kwargs(**kwargs))
    model.load_state_dict(randomized_state(model.state_dict(), seed))
    return model.to(dtype).train(train)


def _check_matches_original(model: nn.Module, x: torch.Tensor, **options) -> OptimizedForInference:
    """Optimize ``model`` and compare with its eval-mode self; check the original is left as it was."""
    state, training = copy.deepcopy(model.state_dict()), model.training
    optimized = optimize_for_inference(model, **options)
    assert state_dicts_equal(model.state_dict(), state) and model.training == training
    assert not any(isinstance(m, FoldedConv3d) for m in model.modules())
    with torch.no_grad():
        got = optimized(x)
        want = copy.deepcopy(model).eval()(x)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_rel_close(g, w, TOL[w.dtype], f"output {i}")
    return optimized


def _counts(optimized: OptimizedForInference) -> tuple[int, int, int]:
    """(folded convs, blocks with the fused add+ReLU tail, ConvModules left unfolded)."""
    modules = list(optimized.module.modules())
    return (
        sum(isinstance(m, FoldedConv3d) for m in modules),
        sum(isinstance(m, _ResidualBlock) and m.fused_tail for m in modules),
        sum(isinstance(m, ConvModule) for m in modules),
    )


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(depth=50), (1, 3, 16, 33, 35)),  # 4x16
        (dict(depth=50, resample_rate=4, speed_ratio=4, fusion_kernel=7), (2, 3, 16, 32, 32)),  # 8x8
        (dict(depth=18), (1, 3, 16, 31, 33)),
        (dict(depth=101), (1, 3, 8, 32, 32)),
        (dict(depth=18, lateral_norm=True), (2, 3, 16, 32, 32)),
    ],
    ids=["r50_4x16", "r50_8x8", "r18", "r101", "r18_lateral_norm"],
)
def test_slowfast_matches_original_fp32(kwargs, shape):
    model = _slowfast(**kwargs)
    optimized = _check_matches_original(model, clip(shape))
    folded, fused_tails, left = _counts(optimized)
    blocks = sum(isinstance(m, _ResidualBlock) for m in model.modules())
    # Only the four laterals stay ConvModules: the fused lateral_concat op reads them itself.
    assert fused_tails == blocks and left == 4 and folded > blocks
    if torch.backends.mkldnn.is_available():
        # Every conv ran oneDNN's fused op, with a packed weight, except a block's last conv whose output
        # is one pixel and one frame (r101's 32x32 clip of 8 frames, in the slow pathway's last stage),
        # which takes F.conv3d (FoldedConv3d.forward).
        convs = [m for m in optimized.modules() if isinstance(m, FoldedConv3d)]
        one_pixel = set()

        def note(module, args, out):
            if len(args) > 1 and args[1] is not None and out.shape[2:].numel() == 1:
                one_pixel.add(module)

        hooks = [m.register_forward_hook(note) for m in convs]
        with torch.no_grad():
            optimized(clip(shape))
        for hook in hooks:
            hook.remove()
        assert all(bool(m._packed) != (m in one_pixel) for m in convs)
        assert bool(one_pixel) == (kwargs.get("depth") == 101)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("input_layout", [torch.contiguous_format, CL])
def test_layouts(channels_last, input_layout):
    model = _slowfast(depth=18, seed=1)
    x = clip((1, 3, 16, 32, 32), seed=2).contiguous(memory_format=input_layout)
    optimized = _check_matches_original(model, x, channels_last=channels_last)
    if channels_last:
        out = optimized(x)
        assert all(o.is_contiguous(memory_format=CL) for o in out)


def test_fp64_folds_exactly():
    """fp64 runs the ``F.conv3d`` path (oneDNN has no fp64) and shows the folding itself exact."""
    _check_matches_original(
        _slowfast(depth=18, dtype=torch.float64), clip((1, 3, 16, 32, 32), dtype=torch.float64)
    )


def test_bf16_as_accurate_as_the_bf16_original():
    """A model converted to bf16 before optimizing runs the oneDNN bf16 convs (autocast does not reach
    them): against a float64 truth, its error is at most twice the bf16 original's (flash-attention's
    criterion; a fixed bound would not mean much at bf16's 8 bits), plus one bf16 unit."""
    model = _slowfast(depth=18, seed=19)
    x = clip((1, 3, 16, 32, 32), seed=20)
    with torch.no_grad():
        truth = copy.deepcopy(model).double().eval()(x.double())
        low = copy.deepcopy(model).to(torch.bfloat16).eval()
        want = low(x.bfloat16())
        got = optimize_for_inference(low)(x.bfloat16())
    for g, w, t in zip(got, want, truth, strict=True):
        assert g.dtype == torch.bfloat16
        assert rel_err(g, t) <= 2 * rel_err(w, t) + 2**-8


def test_autocast_applies_as_to_the_original():
    """Under CPU autocast the folded convs take the autocast ``F.conv3d`` path: the outputs have the
    original's dtype, and against a float64 truth at most twice its error plus one bf16 unit."""
    model = _slowfast(depth=18, seed=21)
    optimized = optimize_for_inference(model)
    x = clip((1, 3, 16, 32, 32), seed=22)
    with torch.no_grad():
        truth = copy.deepcopy(model).double().eval()(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = copy.deepcopy(model).eval()(x)
            got = optimized(x)
    for g, w, t in zip(got, want, truth, strict=True):
        assert g.dtype == w.dtype == torch.bfloat16
        assert rel_err(g, t) <= 2 * rel_err(w, t) + 2**-8


def test_plain_conv_path_fp32():
    """With oneDNN disabled the folded convs take the ``F.conv3d`` path (what runs on CUDA)."""
    with torch.backends.mkldnn.flags(enabled=False):
        _check_matches_original(_slowfast(depth=18, seed=3, lateral_norm=True), clip((2, 3, 16, 32, 32)))


def test_train_mode_frozen_stages_and_norm_eval():
    """A training-mode model with frozen stages and norm_eval is optimized as its eval-mode self,
    and stays in training mode with its frozen parameters frozen."""
    model = _slowfast(
        depth=18,
        train=True,
        slow_extra=dict(frozen_stages=2, norm_eval=True),
        fast_extra=dict(frozen_stages=1),
    )
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    _check_matches_original(model, clip((1, 3, 16, 32, 32)))
    assert model.training and {n: p.requires_grad for n, p in model.named_parameters()} == requires_grad


def test_sync_batch_norm_and_non_local_are_folded():
    model = _slowfast(
        depth=18,
        seed=4,
        # The concatenation mode's Conv2d (a 4-D weight) must survive the channels_last_3d conversion.
        slow_extra=dict(
            norm_cfg=dict(type="SyncBN"), non_local=(0, 1, 0, 0), non_local_cfg=dict(mode="concatenation")
        ),
        fast_extra=dict(norm_cfg=dict(type="SyncBN")),
    )
    optimized = _check_matches_original(model, clip((1, 3, 16, 32, 32)))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in optimized.module.modules())


def test_other_activation_folds_without_fused_tails():
    """With LeakyReLU the convs fold, the activation runs after them, and no block fuses its tail
    (the fused epilogue is ReLU's)."""
    act = dict(act_cfg=dict(type="LeakyReLU", negative_slope=0.1))
    model = _slowfast(depth=18, seed=23, lateral_norm=True, slow_extra=act, fast_extra=act)
    optimized = _check_matches_original(model, clip((1, 3, 16, 32, 32)))
    folded, fused_tails, _ = _counts(optimized)
    assert folded > 0 and fused_tails == 0


def test_resnet3d_in_a_container():
    """Any module holding a backbone: a ResNet3d followed by a head."""
    backbone = ResNet3d(depth=18, pretrained2d=False, out_indices=(2, 3))
    backbone.load_state_dict(randomized_state(backbone.state_dict(), 5))
    model = nn.Sequential(backbone)
    _check_matches_original(model, clip((2, 3, 6, 33, 31)))


@pytest.mark.parametrize("two_pathway_input", [False, True])
def test_recognizer(two_pathway_input):
    """The whole recognizer (backbone + head), fed a clip or the two pathways' inputs."""
    backbone = _slowfast(depth=18, seed=15)
    model = SlowFastRecognizer(7, backbone=backbone, dropout_ratio=0.5)
    x = clip((2, 3, 16, 32, 32), seed=16)
    if two_pathway_input:
        x = [x[:, :, ::8].contiguous(), x]
    _check_matches_original(model, x)


def test_new_shapes_repack_and_weights_changes_repack():
    model = _slowfast(depth=18, seed=6)
    optimized = optimize_for_inference(model, clip((1, 3, 16, 32, 32)))
    reference = copy.deepcopy(model).eval()
    for shape in [(2, 3, 16, 36, 36), (1, 3, 24, 32, 40), (1, 3, 16, 32, 32)]:
        x = clip(shape, seed=7)
        with torch.no_grad():
            for g, w in zip(optimized(x), reference(x), strict=True):
                assert_rel_close(g, w, TOL[torch.float32], str(shape))
    conv = optimized.module.slow_path.layer1[0].conv1
    assert len(conv._packed) == 3, "one packed weight per input shape"
    z = clip((1, conv.weight.shape[1], 2, 8, 8), seed=8)
    with torch.no_grad():
        conv.weight.mul_(2)  # a changed weight must be repacked, not served from the cache
        got = conv(z)
        want = nn.functional.conv3d(z, conv.weight, conv.bias, conv.stride, conv.padding).relu()
    assert_rel_close(got, want, 1e-5, "after a weight change")


def test_deepcopy_and_save_after_packing():
    """Packed oneDNN weights cannot be copied or saved; copies and loaded modules repack."""
    optimized = optimize_for_inference(_slowfast(depth=18, seed=17), clip((1, 3, 16, 32, 32)))
    buffer = io.BytesIO()
    torch.save(optimized, buffer)
    buffer.seek(0)
    x = clip((1, 3, 16, 32, 32), seed=18)
    with torch.no_grad():
        want = optimized(x)
        for other in (copy.deepcopy(optimized), torch.load(buffer, weights_only=False)):
            for g, w in zip(other(x), want, strict=True):
                assert torch.equal(g, w)


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
@pytest.mark.parametrize("act", ["relu", "leaky", None])
def test_folded_conv_matches_conv_module(layout, act):
    """One conv -> BN -> act with odd shapes, stride, dilation, and the shortcut add."""
    act_cfg = {"relu": dict(type="ReLU"), "leaky": dict(type="LeakyReLU", negative_slope=0.2), None: None}[
        act
    ]
    module = ConvModule(
        6, 10, (3, 3, 3), stride=(1, 2, 2), padding=(1, 2, 2), dilation=(1, 2, 2), bias=False,
        conv_cfg=dict(type="Conv3d"), norm_cfg=dict(type="BN3d"), act_cfg=act_cfg,
    )  # fmt: skip
    module.load_state_dict(randomized_state(module.state_dict(), 9))
    module.eval()
    folded = FoldedConv3d.from_conv_module(module)
    x = clip((2, 6, 5, 9, 11), seed=10).contiguous(memory_format=layout)
    with torch.no_grad():
        assert_rel_close(folded(x), module(x), 1e-5, "conv")
        residual = clip((2, 10, 5, 5, 6), seed=11)
        with_tail = FoldedConv3d.from_conv_module(module, activation=act and module.activate)
        want = module.conv(x)
        want = module.bn(want) + residual
        want = module.activate(want) if act else want
        assert_rel_close(with_tail(x, residual), want, 1e-5, "conv with residual")


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
@pytest.mark.parametrize(
    ("size", "stride"), [((1, 1, 1), (1, 1, 1)), ((1, 2, 2), (1, 2, 2)), ((2, 1, 1), (1, 1, 1))]
)
def test_folded_conv_with_residual_at_one_output_pixel(layout, size, stride):
    """A block's last conv whose output is a single pixel and frame (the first two cases: torch 2.11's
    oneDNN conv with the add raised "could not create a memory" there), and one with two frames."""
    module = ConvModule(
        8, 12, (1, 1, 1), stride=stride, bias=False, conv_cfg=dict(type="Conv3d"), norm_cfg=dict(type="BN3d"),
        act_cfg=dict(type="ReLU"),
    )  # fmt: skip
    module.load_state_dict(randomized_state(module.state_dict(), 5))
    module.eval()
    x = clip((2, 8, *size), seed=6).contiguous(memory_format=layout)
    folded = FoldedConv3d.from_conv_module(module)
    with torch.no_grad():
        out = module.bn(module.conv(x))
        residual = clip(tuple(out.shape), seed=7)
        assert_rel_close(folded(x, residual), torch.relu(out + residual), 1e-5, "conv with residual")


def _folded(seed: int, c_in: int = 8, c_out: int = 12, kernel=(1, 3, 3), padding=(0, 1, 1), stride=1):
    module = ConvModule(
        c_in, c_out, kernel, stride=stride, padding=padding, bias=False, conv_cfg=dict(type="Conv3d"),
        norm_cfg=dict(type="BN3d"), act_cfg=None,
    )  # fmt: skip
    module.load_state_dict(randomized_state(module.state_dict(), seed))
    return module.eval(), FoldedConv3d.from_conv_module(module.eval())


def _conv_of(folded: FoldedConv3d, x: torch.Tensor) -> torch.Tensor:
    """What ``folded`` must compute, from its current parameters, by PyTorch's conv."""
    return nn.functional.conv3d(x, folded.weight, folded.bias, folded.stride, folded.padding)


def test_replaced_weights_are_repacked_even_at_a_reused_address():
    """The packed-weight cache must not serve a replaced weight whose memory has the old one's address,
    version and dtype. Seen: two ``load_state_dict(assign=True)`` in a row had glibc put the new weight
    in the packed one's freed block, and ``.to(bf16).to(fp32)`` kept serving the unrounded weights. An
    allocator's reuse cannot be forced, so the two ways it happens are checked one by one:

    * another Parameter at the same address with the same version (made here deterministically by
      building both over one storage): the cache must see that the Parameter changed;
    * other memory under the same Parameter (``.data`` swapped, as ``.to()`` does, which bumps no
      version): the packed weight's memory must stay allocated while the cache names its address, so
      that a new allocation cannot land there.
    """
    _, folded = _folded(20)
    x = clip((1, 8, 2, 8, 8), seed=21)
    shape, strides = folded.weight.shape, folded.weight.stride()
    memory = folded.weight.detach().clone().untyped_storage()

    def over_memory() -> nn.Parameter:
        return nn.Parameter(torch.empty(0).set_(memory, 0, shape, strides), requires_grad=False)

    def key(weight: torch.Tensor) -> tuple:
        return weight.data_ptr(), weight._version, weight.dtype

    folded.weight = over_memory()
    with torch.no_grad():
        assert_rel_close(folded(x), _conv_of(folded, x), 1e-5, "first weight")  # packs it
        packed = key(folded.weight)
        torch.empty(0).set_(memory, 0, shape, strides).mul_(-3)  # new values: the old one's version stays
        folded.weight = over_memory()
        assert key(folded.weight) == packed
        assert_rel_close(folded(x), _conv_of(folded, x), 1e-5, "another Parameter, same address and version")

        address = folded.weight.data_ptr()
        folded.weight.data = torch.randn(shape)
        assert all(torch.empty(shape).data_ptr() != address for _ in range(8))
        assert_rel_close(folded(x), _conv_of(folded, x), 1e-5, "other memory under the same Parameter")

    model = _slowfast(depth=18, seed=25, stage_blocks=(1, 1, 1, 1))
    x = clip((1, 3, 8, 32, 32), seed=26)
    optimized = optimize_for_inference(model, x)
    optimized.to(torch.bfloat16).to(torch.float32)  # rounds every weight
    with torch.no_grad():
        got = optimized(x)
        with torch.backends.mkldnn.flags(enabled=False):  # the F.conv3d path: the current weights
            want = optimized(x)
    for g, w in zip(got, want, strict=True):
        assert_rel_close(g, w, 1e-5, "after .to(bf16).to(fp32)")


def test_optimized_inside_inference_mode():
    """Optimizing inside ``torch.inference_mode()`` (a serving script's usual context) made the folded
    weights inference tensors, which have no version counter for the packed-weight cache: the first
    call raised."""
    model = _slowfast(depth=18, seed=40, stage_blocks=(1, 1, 1, 1))
    x = clip((1, 3, 8, 32, 32), seed=41)
    with torch.inference_mode():
        optimized = optimize_for_inference(model, x)
        got = optimized(x)
    with torch.no_grad():
        want = copy.deepcopy(model).eval()(x)
        again = optimized(x)
    for g, a, w in zip(got, again, want, strict=True):
        assert_rel_close(g, w, TOL[torch.float32], "optimized inside inference mode")
        assert torch.equal(g, a)


def test_train_mode_keeps_the_copy_frozen():
    """A parent's ``.train()`` (any training loop's) must not switch the copy's unfolded BatchNorms (the
    laterals', with lateral_norm) to batch statistics: same outputs, no buffer changed."""
    model = _slowfast(depth=18, seed=27, stage_blocks=(1, 1, 1, 1), lateral_norm=True)
    x = clip((2, 3, 8, 32, 32), seed=28)
    optimized = optimize_for_inference(model)
    nn.Sequential(optimized).train()
    assert optimized.training and not any(m.training for m in optimized.module.modules())
    before = copy.deepcopy(optimized.state_dict())
    with torch.no_grad():
        got, want = optimized(x), copy.deepcopy(model).eval()(x)
    for g, w in zip(got, want, strict=True):
        assert_rel_close(g, w, TOL[torch.float32], "after .train()")
    assert state_dicts_equal(optimized.state_dict(), before)


@pytest.mark.parametrize("needs_grad", ["residual", "bias"])
def test_folded_conv_gradients_reach_the_residual_and_the_bias(needs_grad):
    """oneDNN's fused op has no autograd formula: a call in which only the residual or only the bias
    needs a gradient must take the differentiable path."""
    _, folded = _folded(29)
    x = clip((1, 8, 2, 6, 6), seed=30)
    residual = clip((1, 12, 2, 6, 6), seed=31).requires_grad_(needs_grad == "residual")
    folded.bias.requires_grad_(needs_grad == "bias")
    grad = clip((1, 12, 2, 6, 6), seed=32)
    (got,) = torch.autograd.grad(
        folded(x, residual), residual if needs_grad == "residual" else folded.bias, grad
    )
    want = grad if needs_grad == "residual" else grad.sum((0, 2, 3, 4))
    assert_rel_close(got, want, 1e-6, needs_grad)


@pytest.mark.parametrize(
    "residual_shape",
    [(1, 12, 3, 6, 6), (2, 12, 2, 6, 6), (1, 12, 1, 6, 6), (1, 12, 2, 1, 1), (1, 12, 2, 6, 6)],
    ids=["more_frames", "larger_batch", "one_frame", "one_pixel", "same"],
)
def test_folded_conv_residual_of_another_shape_broadcasts_like_the_original(residual_shape):
    """oneDNN's fused add takes only a residual of the output's shape (it truncated a larger batch and
    read frames out of place): any other shape broadcasts, or raises, as ``conv + residual`` does."""
    module, folded = _folded(33)
    x = clip((1, 8, 2, 6, 6), seed=34)
    residual = clip(residual_shape, seed=35)
    with torch.no_grad():
        try:
            want = module(x) + residual
        except RuntimeError:
            with pytest.raises(RuntimeError):
                folded(x, residual)
            return
        got = folded(x, residual)
    assert got.shape == want.shape
    assert_rel_close(got, want, 1e-5, str(residual_shape))


def test_temporal_stride_without_a_shortcut_conv_broadcasts_as_the_original():
    """mmaction2's rule adds no shortcut conv for a temporal stride alone: at T = 2 the block's identity
    (2 frames) broadcasts against the strided conv's one frame, in the original and in the copy."""
    model = ResNet3d(
        depth=18,
        base_channels=8,
        pretrained2d=False,
        temporal_strides=(2, 1, 1, 1),
        with_pool2=False,
        out_indices=(0,),
    )
    model.load_state_dict(randomized_state(model.state_dict(), 36))
    x = clip((1, 3, 2, 16, 16), seed=37)
    optimized = _check_matches_original(model.eval(), x)
    with torch.no_grad():
        assert optimized(x).shape == model(x).shape == (1, 8, 2, 4, 4)


def test_conv_module_with_batch_statistics_is_not_folded():
    module = ConvModule(4, 4, 1, conv_cfg=dict(type="Conv3d"), norm_cfg=dict(type="BN3d"))
    assert FoldedConv3d.from_conv_module(module.train()) is None
    module.bn.track_running_stats, module.bn.running_mean, module.bn.running_var = False, None, None
    assert FoldedConv3d.from_conv_module(module.eval()) is None


def test_errors():
    model = _slowfast(depth=18)
    optimized = optimize_for_inference(model)
    with pytest.raises(TypeError, match="nn.Module"):
        optimize_for_inference(lambda x: x)
    with pytest.raises(RuntimeError, match="no gradients"):
        optimized(clip((1, 3, 16, 32, 32)).requires_grad_())
    with pytest.raises(ValueError, match="float64"):
        optimized(clip((1, 3, 16, 32, 32), dtype=torch.float64))
    with pytest.raises(ValueError, match="5-D"):
        optimized(clip((3, 16, 32, 32)))
    with pytest.raises(TypeError, match="tensor"):
        optimized({"clip": clip((1, 3, 16, 32, 32))})
    with pytest.raises(ValueError, match="3 channels"):
        optimized(clip((1, 4, 16, 32, 32)))
    with pytest.raises(ValueError, match="5-D"):
        optimized([clip((1, 3, 2, 32, 32)), clip((1, 3, 16, 32))])
    with torch.no_grad():  # gradients disabled: an input that requires grad is served
        optimized(clip((1, 3, 16, 32, 32)).requires_grad_())


def test_compile_fullgraph_aot_eager():
    """torch.compile(fullgraph=True) of the optimized module traces without graph breaks (the oneDNN
    path steps aside while compiling, leaving plain convs for the compiler) and matches eager."""
    torch._dynamo.reset()
    model = _slowfast(depth=18, seed=12, lateral_norm=True, stage_blocks=(1, 1, 1, 1))
    optimized = optimize_for_inference(model)
    x = clip((1, 3, 16, 32, 32))
    with torch.no_grad():
        want = optimized(x)
        got = torch.compile(optimized, fullgraph=True, backend="aot_eager")(x)
    for g, w in zip(got, want, strict=True):
        assert_rel_close(g, w, 1e-5, "compiled output")


@pytest.mark.slow
def test_compile_option_inductor_with_freezing():
    torch._dynamo.reset()
    model = _slowfast(depth=18, seed=13, stage_blocks=(1, 1, 1, 1))
    _check_matches_original(model, clip((1, 3, 16, 32, 32)), compile=True)


@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [True, False])
def test_cuda_graph_replay_matches_and_recaptures(no_tf32, channels_last):
    """Graph replay equals the eval original; a new shape captures a new graph, a seen one replays
    its graph; returned outputs survive later replays (they are copies)."""
    model = _slowfast(depth=50, seed=14).cuda()
    reference = copy.deepcopy(model).eval()
    optimized = optimize_for_inference(model, channels_last=channels_last)
    outs = []
    for i, shape in enumerate([(2, 3, 32, 64, 64), (1, 3, 32, 56, 72), (2, 3, 32, 64, 64)]):
        x = clip(shape, seed=i).cuda()
        with torch.no_grad():
            outs.append((optimized(x), reference(x)))
    assert len(optimized._graphs) == 2
    for got, want in outs:
        for g, w in zip(got, want, strict=True):
            assert_rel_close(g, w, 1e-4, "graph replay")


@pytest.mark.cuda
def test_cuda_graphs_per_autocast_and_inference_mode():
    """A graph replays the kernels it captured: a call under autocast must not replay an fp32 graph (nor
    an fp32 call a bf16 one), and a graph first captured under inference mode must serve later calls
    outside it."""
    model = _slowfast(depth=18, seed=15, stage_blocks=(1, 1, 1, 1)).cuda()
    reference = copy.deepcopy(model).eval()
    optimized = optimize_for_inference(model)
    x = clip((1, 3, 16, 32, 32), seed=16).cuda()
    with torch.inference_mode():
        first = optimized(x)
    with torch.no_grad():
        again = optimized(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low, want_low = optimized(x), reference(x)
        plain = optimized(x)
    assert len(optimized._graphs) == 2
    for a, b, c in zip(first, again, plain, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c) and a.dtype == torch.float32
    for g, w in zip(low, want_low, strict=True):
        assert g.dtype == w.dtype == torch.bfloat16


def test_graph_captured_under_inference_mode_serves_later_calls(monkeypatch):
    """The CUDA-graph cache's own logic, on the CPU with the CUDA stream and graph objects stubbed out
    (a stub graph's replay runs nothing, so the static output keeps the capture's values; the input
    here is the same clip): the static input made during a capture under inference mode must accept
    the copy of a later call outside it (an inference tensor may not be written in place there)."""
    import contextlib

    class Stub:
        def __init__(self, *args, **kwargs):
            pass

        def wait_stream(self, *args):
            pass

        def replay(self):
            pass

    monkeypatch.setattr(torch.cuda, "Stream", Stub)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Stub)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *args, **kwargs: Stub())
    monkeypatch.setattr(torch.cuda, "stream", lambda *args, **kwargs: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", lambda *args, **kwargs: contextlib.nullcontext())
    model = _slowfast(depth=18, seed=17, stage_blocks=(1, 1, 1, 1))
    optimized = optimize_for_inference(model)
    x = clip((1, 3, 8, 32, 32), seed=18)
    with torch.inference_mode():
        first = optimized._replay(x)
    with torch.no_grad():
        second = optimized._replay(x)
        want = copy.deepcopy(model).eval()(x)
    assert len(optimized._graphs) == 1
    for a, b, w in zip(first, second, want, strict=True):
        assert torch.equal(a, b)
        assert_rel_close(b, w, TOL[torch.float32], "stubbed replay")
