"""from_pytorchvideo against the real pytorchvideo ``create_slowfast``, and from_pyslowfast on that model's
weights renamed to PySlowFast's names (facebookresearch/SlowFast ``SlowFast``: ``s1.pathway0_stem``,
``s{i}_fuse.conv_f2s``, ``s{i}.pathway{p}_res{b}.branch2.a_bn``, ``head.projection``)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
from _model_helpers import assert_rel_close

from slowfast_fast.models import SlowFastRecognizer, from_pyslowfast, from_pytorchvideo

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
slowfast = pytest.importorskip("pytorchvideo.models.slowfast")

# Converted and original compute the same network in fp32 but not in the same order (our laterals fold
# their BN into the fused op; our head pools before the classifier, theirs after): ~1e-6 relative.
TOL = 1e-4


def _randomize_batch_norms(model: nn.Module, seed: int) -> None:
    """No BN is the identity: random affine and running statistics, so a BN mapped to the wrong place
    changes the output."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.1
            m.running_mean.data = torch.randn(m.running_mean.shape, generator=gen) * 0.1
            m.running_var.data = torch.rand(m.running_var.shape, generator=gen) + 0.5


def pathway_clips(alpha: int, t_fast: int, seed: int, n: int = 2, size: int = 32):
    """``[x_slow, x_fast]`` sampled as PySlowFast's PackPathway does (slow frames by linspace)."""
    frames = torch.randn(n, 3, t_fast, size, size, generator=torch.Generator().manual_seed(seed))
    slow = torch.linspace(0, t_fast - 1, t_fast // alpha).long()
    return [frames[:, :, slow], frames]


# (alpha, fusion kernel, fast frames): pytorchvideo's default SlowFast R50 8x8, and another alpha/kernel.
CONFIGS = {"r50_8x8": (4, 7, 16), "r50_alpha2_k5": (2, 5, 8)}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pytorchvideo_model(request):
    alpha, kernel, t_fast = CONFIGS[request.param]
    torch.manual_seed(0)
    model = slowfast.create_slowfast(
        model_num_class=11,
        slowfast_fusion_conv_kernel_size=(kernel, 1, 1),
        slowfast_fusion_conv_stride=(alpha, 1, 1),
        # the head pool covers the whole final feature map, as at the size the model was trained at
        head_pool_kernel_sizes=((t_fast // alpha, 1, 1), (t_fast, 1, 1)),
    )
    _randomize_batch_norms(model, seed=1)
    return model.eval(), alpha, t_fast


def test_from_pytorchvideo_model_matches(pytorchvideo_model):
    model, alpha, t_fast = pytorchvideo_model
    ours = from_pytorchvideo(model).eval()
    assert isinstance(ours, SlowFastRecognizer)
    assert ours.backbone.speed_ratio == alpha
    x = pathway_clips(alpha, t_fast, seed=2)
    with torch.no_grad():
        want = model([t.clone() for t in x])
        got = ours(x)
    assert got.shape == (2, 11)
    assert_rel_close(got, want, TOL, "class scores")


def test_from_pytorchvideo_state_dict_needs_and_takes_alpha(pytorchvideo_model):
    model, alpha, t_fast = pytorchvideo_model
    with pytest.raises(ValueError, match="speed_ratio"):
        from_pytorchvideo(model.state_dict())
    ours = from_pytorchvideo(model.state_dict(), speed_ratio=alpha).eval()
    x = pathway_clips(alpha, t_fast, seed=3)
    with torch.no_grad():
        assert_rel_close(ours(x), model([t.clone() for t in x]), TOL, "class scores")


_PYSLOWFAST_NAMES = [
    (r"blocks\.0\.multipathway_blocks\.(\d)\.conv\.", r"s1.pathway\1_stem.conv."),
    (r"blocks\.0\.multipathway_blocks\.(\d)\.norm\.", r"s1.pathway\1_stem.bn."),
    (r"blocks\.(\d)\.multipathway_fusion\.conv_fast_to_slow\.", lambda m: f"s{int(m[1]) + 1}_fuse.conv_f2s."),
    (r"blocks\.(\d)\.multipathway_fusion\.norm\.", lambda m: f"s{int(m[1]) + 1}_fuse.bn."),
    (
        r"blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.",
        lambda m: f"s{int(m[1]) + 1}.pathway{m[2]}_res{m[3]}.",
    ),
    (r"\.branch1_conv\.", ".branch1."),
    (r"\.branch1_norm\.", ".branch1_bn."),
    (r"\.branch2\.conv_([abc])\.", r".branch2.\1."),
    (r"\.branch2\.norm_([abc])\.", r".branch2.\1_bn."),
    (r"blocks\.6\.proj\.", "head.projection."),
]


def as_pyslowfast(state_dict: dict) -> dict:
    """pytorchvideo's SlowFast state_dict under PySlowFast's module names."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in _PYSLOWFAST_NAMES:
            key = re.sub(pattern, replacement, key)
        assert key.startswith(("s1", "s2", "s3", "s4", "s5", "head.")), key
        renamed[key] = value
    return renamed


def test_from_pyslowfast_checkpoint_file_matches(pytorchvideo_model, tmp_path):
    """A .pyth as PySlowFast's checkpoint saver writes it: model_state, the config as YAML, DDP names."""
    model, alpha, t_fast = pytorchvideo_model
    state = {f"module.{k}": v for k, v in as_pyslowfast(model.state_dict()).items()}
    cfg = f"MODEL:\n  NUM_CLASSES: 11\nSLOWFAST:\n  BETA_INV: 8\n  ALPHA: {alpha}\n  FUSION_KERNEL_SZ: 7\n"
    path = tmp_path / "checkpoint_epoch_00001.pyth"
    torch.save({"epoch": 1, "model_state": state, "optimizer_state": {}, "cfg": cfg}, path)
    ours = from_pyslowfast(path).eval()
    assert ours.backbone.speed_ratio == alpha
    x = pathway_clips(alpha, t_fast, seed=4)
    with torch.no_grad():
        assert_rel_close(ours(x), model([t.clone() for t in x]), TOL, "class scores")


def test_from_pyslowfast_without_config_needs_alpha(pytorchvideo_model):
    model, alpha, _ = pytorchvideo_model
    state = as_pyslowfast(model.state_dict())
    with pytest.raises(ValueError, match="SLOWFAST.ALPHA"):
        from_pyslowfast(state)
    assert from_pyslowfast(state, speed_ratio=alpha).backbone.speed_ratio == alpha


def test_other_architecture_names_its_first_unmappable_key():
    torchvision_video = pytest.importorskip("torchvision.models.video")
    state = torchvision_video.r3d_18().state_dict()
    with pytest.raises(KeyError, match=r"cannot convert pytorchvideo key 'stem\.0\.weight'"):
        from_pytorchvideo(state, speed_ratio=4)


def test_non_local_block_is_not_dropped_silently(pytorchvideo_model):
    model, alpha, _ = pytorchvideo_model
    state = as_pyslowfast(model.state_dict())
    state["s4.pathway0_nonlocal3.conv_theta.weight"] = torch.ones(1)
    with pytest.raises(KeyError, match=r"'s4\.pathway0_nonlocal3\.conv_theta\.weight'"):
        from_pyslowfast(state, speed_ratio=alpha)


def test_missing_weight_fails_the_strict_load(pytorchvideo_model):
    model, alpha, _ = pytorchvideo_model
    state = as_pyslowfast(model.state_dict())
    del state["s3.pathway1_res0.branch2.b_bn.running_var"]
    with pytest.raises(RuntimeError, match=r"fast_path\.layer2\.0\.conv2\.bn\.running_var"):
        from_pyslowfast(state, speed_ratio=alpha)


@pytest.mark.parametrize(
    "cfg, alpha",
    [
        ("SLOWFAST:\n  ALPHA: 8\n  BETA_INV: 8\nSOLVER:\n  BASE_LR: 0.1\n", 8),
        # ALPHA of another section is not SLOWFAST.ALPHA
        ("MODEL:\n  ALPHA: 3\nSLOWFAST:\n  BETA_INV: 8\nX3D:\n  ALPHA: 5\n", None),
        ({"SLOWFAST": {"ALPHA": 4}}, 4),  # a CfgNode (a dict) saved as such
        ("SLOWFAST:\n  BETA_INV: 8\n  SUB:\n    ALPHA: 3\n", None),  # nor is a subsection's
        (None, None),
    ],
)
def test_pyslowfast_alpha_is_read_from_the_slowfast_section(cfg, alpha):
    from slowfast_fast.models.convert import _pyslowfast_alpha

    assert _pyslowfast_alpha(cfg) == alpha


# Small models (pytorchvideo's depth-18 layout: bottlenecks, 2 blocks per stage; 16/2-channel stems) for
# the tests of what the weights do not hold: strides, dilations, dropout, alpha.
SMALL_ALPHA, SMALL_T_FAST, SMALL_SIZE = 4, 8, 32


def small_pytorchvideo_model(final_size: int = 1, seed: int = 0, builder=None, **kwargs) -> nn.Module:
    """A random pytorchvideo SlowFast (eval mode, random BN) whose last stage is ``final_size`` square on
    SMALL_SIZE inputs, its head pool covering it."""
    torch.manual_seed(seed)
    kwargs.setdefault("slowfast_fusion_conv_stride", (SMALL_ALPHA, 1, 1))
    model = (builder or slowfast.create_slowfast)(
        model_num_class=5,
        model_depth=18,
        stem_dim_outs=(16, 2),
        head_pool_kernel_sizes=(
            (SMALL_T_FAST // SMALL_ALPHA, final_size, final_size),
            (SMALL_T_FAST, final_size, final_size),
        ),
        **kwargs,
    )
    _randomize_batch_norms(model, seed=seed + 1)
    return model.eval()


def assert_same_scores(ours: nn.Module, model: nn.Module, seed: int = 5) -> None:
    """``ours`` and the pytorchvideo ``model`` give the same class scores on the same pathway inputs."""
    x = pathway_clips(SMALL_ALPHA, SMALL_T_FAST, seed=seed, size=SMALL_SIZE)
    with torch.no_grad():
        assert_rel_close(ours(x), model([t.clone() for t in x]), TOL, "class scores")


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_from_pytorchvideo_takes_the_models_dropout(rate):
    """pytorchvideo adds no nn.Dropout for dropout_rate=0: neither may the converted head, else training
    (where dropout acts) computes something else."""
    model = small_pytorchvideo_model(dropout_rate=rate)
    ours = from_pytorchvideo(model)
    assert ours.cls_head.dropout_ratio == rate
    assert (ours.cls_head.dropout is None) == (rate == 0)
    if rate == 0:  # train mode (BN with batch statistics): the same numbers
        x = pathway_clips(SMALL_ALPHA, SMALL_T_FAST, seed=6, size=SMALL_SIZE)
        assert_rel_close(ours.train()(x), model.train()([t.clone() for t in x]), TOL, "train-mode scores")


@pytest.mark.parametrize(
    "cfg, rate",
    [
        ("MODEL:\n  DROPOUT_RATE: 0.0\n  NUM_CLASSES: 5\nSLOWFAST:\n  ALPHA: 4\n", 0.0),
        ("MODEL:\n  ARCH: slowfast\n  DROPOUT_RATE: 0.3\nSLOWFAST:\n  ALPHA: 4\n", 0.3),
        ({"MODEL": {"DROPOUT_RATE": 0.2}, "SLOWFAST": {"ALPHA": 4}}, 0.2),
        ("SLOWFAST:\n  ALPHA: 4\n", 0.5),  # PySlowFast's default
    ],
    ids=["yaml_0", "yaml_0.3", "dict_0.2", "default"],
)
def test_from_pyslowfast_takes_the_configs_dropout(cfg, rate):
    state = as_pyslowfast(small_pytorchvideo_model().state_dict())
    ours = from_pyslowfast({"model_state": state, "cfg": cfg})
    assert ours.cls_head.dropout_ratio == rate
    assert (ours.cls_head.dropout is None) == (rate == 0)


# pytorchvideo arguments of non-default stage geometry, and the last stage's size on SMALL_SIZE inputs.
_RES5_DILATED = ((1, 1, 1),) * 3 + ((1, 2, 2),)
GEOMETRIES = {
    "res5_stride_1": (dict(stage_spatial_strides=((1, 2, 2, 1),) * 2), 2),
    "res5_dilation_2": (dict(stage_conv_b_dilations=(_RES5_DILATED,) * 2), 1),
    # PySlowFast's AVA backbone: res5 with stride 1 and dilation 2
    "ava": (dict(stage_spatial_strides=((1, 2, 2, 1),) * 2, stage_conv_b_dilations=(_RES5_DILATED,) * 2), 2),
}


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_from_pytorchvideo_takes_the_models_strides_and_dilations(geometry):
    kwargs, final_size = GEOMETRIES[geometry]
    model = small_pytorchvideo_model(final_size, **kwargs)
    assert_same_scores(from_pytorchvideo(model).eval(), model)


# RESNET.SPATIAL_STRIDES / SPATIAL_DILATIONS ([slow, fast] per stage) of the "ava" geometry, as PyYAML dumps
# them (block lists at the key's indentation), in flow style, and as a saved CfgNode (a dict).
_AVA_CFGS = {
    "yaml_block": "RESNET:\n  DEPTH: 50\n  SPATIAL_DILATIONS:\n"
    + "".join(f"  - - {d}\n    - {d}\n" for d in (1, 1, 1, 2))
    + "  SPATIAL_STRIDES:\n"
    + "".join(f"  - - {s}\n    - {s}\n" for s in (1, 2, 2, 1))
    + "  STRIDE_1X1: false\nSLOWFAST:\n  ALPHA: 4\n",
    "yaml_flow": "RESNET:\n  SPATIAL_DILATIONS: [[1, 1], [1, 1], [1, 1], [2, 2]]\n"
    "  SPATIAL_STRIDES: [[1, 1], [2, 2], [2, 2], [1, 1]]\nSLOWFAST:\n  ALPHA: 4\n",
    "dict": {
        "RESNET": {
            "SPATIAL_DILATIONS": [[1, 1], [1, 1], [1, 1], [2, 2]],
            "SPATIAL_STRIDES": [[1, 1], [2, 2], [2, 2], [1, 1]],
        },
        "SLOWFAST": {"ALPHA": 4},
    },
}


@pytest.mark.parametrize("cfg", list(_AVA_CFGS))
def test_from_pyslowfast_takes_the_configs_strides_and_dilations(cfg):
    kwargs, final_size = GEOMETRIES["ava"]
    model = small_pytorchvideo_model(final_size, **kwargs)
    ours = from_pyslowfast({"model_state": as_pyslowfast(model.state_dict()), "cfg": _AVA_CFGS[cfg]})
    assert_same_scores(ours.eval(), model)


def test_detection_models_are_refused():
    """An AVA model's head pools RoIs: converting it to a classification head would be another network."""
    kwargs, final_size = GEOMETRIES["ava"]
    model = small_pytorchvideo_model(final_size, **kwargs)
    cfg = "DETECTION:\n  ENABLE: true\n  ROI_XFORM_RESOLUTION: 7\n" + _AVA_CFGS["yaml_block"]
    with pytest.raises(ValueError, match="DETECTION.ENABLE"):
        from_pyslowfast({"model_state": as_pyslowfast(model.state_dict()), "cfg": cfg})
    roi_model = small_pytorchvideo_model(builder=slowfast.create_slowfast_with_roi_head)
    with pytest.raises(ValueError, match="RoI detection head"):
        from_pytorchvideo(roi_model)


def test_pytorchvideo_model_zoo_pyth(tmp_path):
    """pytorchvideo's model-zoo .pyth (e.g. SLOWFAST_8x8_R50.pyth): its keys under 'model_state', no cfg.
    from_pyslowfast recognizes the keys; from_pytorchvideo takes the path, the loaded dict or a state_dict
    under 'state_dict'; anything else is a TypeError."""
    model = small_pytorchvideo_model()
    path = tmp_path / "SLOWFAST_8x8_R50.pyth"
    torch.save({"epoch": 196, "model_state": model.state_dict()}, path)
    assert_same_scores(from_pyslowfast(path, speed_ratio=SMALL_ALPHA).eval(), model)
    assert_same_scores(from_pytorchvideo(path, speed_ratio=SMALL_ALPHA).eval(), model)
    loaded = torch.load(path, weights_only=True)
    assert_same_scores(from_pytorchvideo(loaded, speed_ratio=SMALL_ALPHA).eval(), model)
    wrapped = {"state_dict": model.state_dict()}
    assert_same_scores(from_pytorchvideo(wrapped, speed_ratio=SMALL_ALPHA).eval(), model)
    with pytest.raises(TypeError, match="from_pytorchvideo takes"):
        from_pytorchvideo(42, speed_ratio=SMALL_ALPHA)
    with pytest.raises(TypeError, match="for a pytorchvideo model use from_pytorchvideo"):
        from_pyslowfast(model)


def test_speed_ratio_contradicting_the_models_fuse_stride_is_refused():
    model = small_pytorchvideo_model()
    assert from_pytorchvideo(model, speed_ratio=SMALL_ALPHA).backbone.speed_ratio == SMALL_ALPHA
    with pytest.raises(ValueError, match="speed_ratio=2 disagrees"):
        from_pytorchvideo(model, speed_ratio=2)


def test_stage_temporal_strides_are_refused():
    """pytorchvideo puts a stage's temporal stride on conv_a, mmaction2's ResNet3d on conv2."""
    model = small_pytorchvideo_model(stage_temporal_strides=((1, 2, 1, 1),) * 2)
    with pytest.raises(ValueError, match="temporal stride 2"):
        from_pytorchvideo(model)


def test_torch_compiled_model_converts():
    model = small_pytorchvideo_model()
    assert_same_scores(from_pytorchvideo(torch.compile(model)).eval(), model)
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    assert_same_scores(from_pytorchvideo(state, speed_ratio=SMALL_ALPHA).eval(), model)
