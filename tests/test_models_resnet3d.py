"""ResNet3d / ResNet3dPathway against real mmaction2 1.2.0: construction (module names, state_dict
keys, seeded initialization), init_weights, outputs and gradients over the argument space; and the
arguments we do not support raising clear errors.

ResNet3d has no fused ops, so it computes exactly what mmaction2 computes: outputs and gradients are
compared at 1e-5 relative and in practice agree to the bit.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from _model_helpers import (
    build_pair,
    clip,
    compare_with_reference,
    randomized_state,
    run_forward_backward,
    slowfast_kwargs,
    state_dicts_equal,
)

from slowfast_fast.models import ResNet3d, ResNet3dPathway, ResNet3dSlowFast

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


NON_LOCAL_50 = dict(
    non_local=((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0)),
    non_local_cfg=dict(
        sub_sample=True,
        use_scale=False,
        norm_cfg=dict(type="BN3d", requires_grad=True),
        mode="embedded_gaussian",
    ),
)

# name: (ResNet3d arguments, input clip shape)
CONFIGS = {
    "r18_defaults": (dict(depth=18, base_channels=8, out_indices=(2, 3)), (2, 3, 8, 33, 33)),
    "r50_caffe_3x3x3_strides_dilations": (
        dict(
            depth=50,
            base_channels=8,
            style="caffe",
            inflate_style="3x3x3",
            inflate=(1, (1, 0, 1, 0), 0, 1),
            spatial_strides=(1, 2, 2, 1),
            temporal_strides=(1, 2, 1, 1),
            dilations=(1, 1, 2, 2),
            conv1_kernel=5,
            conv1_stride_t=2,
            pool1_stride_t=2,
            with_pool1=False,
            with_pool2=False,
            out_indices=(0, 1, 2, 3),
        ),
        (1, 3, 16, 37, 37),
    ),
    "r50_non_local": (dict(depth=50, base_channels=8, **NON_LOCAL_50), (1, 3, 8, 33, 33)),
    "r18_non_local_gaussian": (
        dict(
            depth=18,
            base_channels=8,
            non_local=(0, 1, 1, 0),
            non_local_cfg=dict(mode="gaussian", sub_sample=True),
        ),
        (1, 3, 8, 33, 33),
    ),
    "r18_non_local_dot_product": (
        dict(
            depth=18,
            base_channels=8,
            non_local=(0, 1, 0, 0),
            non_local_cfg=dict(mode="dot_product", reduction=4),
        ),
        (1, 3, 8, 33, 33),
    ),
    "r18_non_local_concatenation": (
        dict(depth=18, base_channels=8, non_local=(0, 0, 1, 0), non_local_cfg=dict(mode="concatenation")),
        (1, 3, 8, 33, 33),
    ),
    "r34_three_stages": (
        dict(
            depth=34,
            base_channels=8,
            num_stages=3,
            stage_blocks=(1, 2, 1),
            spatial_strides=(1, 2, 2),
            temporal_strides=(1, 1, 2),
            dilations=(1, 1, 1),
            out_indices=(2,),
        ),
        (1, 3, 8, 33, 33),
    ),
    "r18_norm_and_act_options": (
        dict(
            depth=18,
            base_channels=8,
            norm_cfg=dict(type="BN3d", eps=1e-3, momentum=0.3, requires_grad=False),
            act_cfg=dict(type="LeakyReLU", negative_slope=0.2, inplace=True),
            zero_init_residual=False,
        ),
        (2, 3, 8, 33, 33),
    ),
    "r18_with_cp": (dict(depth=18, base_channels=8, with_cp=True), (1, 3, 8, 33, 33)),
    # An activation given as a class: mmcv's ConvModule picks the LeakyReLU init gain only for the string
    # 'LeakyReLU', so here the convs get the ReLU gain (as in mmaction2), while the activation is LeakyReLU.
    "r18_act_cfg_class_type": (
        dict(depth=18, base_channels=8, act_cfg=dict(type=torch.nn.LeakyReLU, negative_slope=0.2)),
        (1, 3, 8, 33, 33),
    ),
}


def _seeded(cls, kwargs, seed=0):
    torch.manual_seed(seed)
    return cls(**copy.deepcopy(kwargs))


@pytest.mark.filterwarnings("ignore:torch.utils.checkpoint")  # mmaction2 omits use_reentrant
@pytest.mark.parametrize("name", list(CONFIGS))
def test_resnet3d_matches_mmaction(mmaction_backbones, name):
    kwargs, shape = CONFIGS[name]
    ref = _seeded(mmaction_backbones.ResNet3d, kwargs)
    ours = _seeded(ResNet3d, kwargs)
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    torch.manual_seed(1)
    ref.init_weights()
    torch.manual_seed(1)
    ours.init_weights()
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    assert ours.feat_dim == ref.feat_dim and ours.res_layers == ref.res_layers

    state = randomized_state(ref.state_dict(), seed=2)
    # mmcv's concatenation mode divides a ReLU output in place, so its backward fails: forward only.
    grads = kwargs.get("non_local_cfg", {}).get("mode") != "concatenation"
    for mode in (False, True):
        ref.load_state_dict(state)
        ours.load_state_dict(state)
        ref.train(mode)
        ours.train(mode)
        compare_with_reference(ref, ours, clip(shape), tol=1e-5, grads=grads)
    if not grads:
        run_forward_backward(ours, clip(shape))  # ours has no in-place division: backward runs


@pytest.mark.parametrize("act", ["ReLU", "ReLU6", "ELU", "SiLU", "GELU", "Sigmoid", "Tanh"])
def test_activation_types_match(mmaction_backbones, act):
    kwargs = dict(depth=18, base_channels=4, act_cfg=dict(type=act))
    ref, ours = build_pair(mmaction_backbones.ResNet3d, ResNet3d, kwargs)
    ref.eval()
    ours.eval()
    compare_with_reference(ref, ours, clip((1, 3, 4, 33, 33)), tol=1e-5)


def test_sync_bn_matches_in_eval(mmaction_backbones):
    kwargs = dict(depth=18, base_channels=4, norm_cfg=dict(type="SyncBN", requires_grad=True))
    ref, ours = build_pair(mmaction_backbones.ResNet3d, ResNet3d, kwargs)
    assert isinstance(ours.conv1.bn, nn.SyncBatchNorm)
    ref.eval()
    ours.eval()
    compare_with_reference(ref, ours, clip((1, 3, 4, 33, 33)), tol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(
            depth=18,
            lateral=True,
            lateral_norm=True,
            base_channels=16,
            channel_ratio=4,
            lateral_infl=1,
            fusion_kernel=3,
        ),
        dict(depth=50, lateral=True, lateral_inv=True, base_channels=8, speed_ratio=4, channel_ratio=2),
        dict(depth=50, lateral=True, base_channels=16, lateral_activate=(0, 1, 0, 1)),
    ],
)
def test_pathway_construction_matches(mmaction_backbones, kwargs):
    from mmaction.models.backbones.resnet3d_slowfast import ResNet3dPathway as RefPathway

    ref = _seeded(RefPathway, kwargs)
    ours = _seeded(ResNet3dPathway, kwargs)
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())
    assert ours.lateral_inplanes == ref.lateral_inplanes
    assert ours.lateral_connections == ref.lateral_connections
    torch.manual_seed(1)
    ref.init_weights()
    torch.manual_seed(1)
    ours.init_weights()
    assert state_dicts_equal(ours.state_dict(), ref.state_dict())


def test_frozen_stages_match(mmaction_backbones):
    kwargs = dict(depth=50, base_channels=8, lateral=True, lateral_norm=True, frozen_stages=2)
    from mmaction.models.backbones.resnet3d_slowfast import ResNet3dPathway as RefPathway

    ref, ours = build_pair(RefPathway, ResNet3dPathway, kwargs)
    # Like mmaction2, freezing takes effect on train(), not at construction.
    assert all(p.requires_grad for p in ours.parameters())
    ref.train()
    ours.train()
    assert [(n, m.training) for n, m in ours.named_modules()] == [
        (n, m.training) for n, m in ref.named_modules()
    ]
    assert [(n, p.requires_grad) for n, p in ours.named_parameters()] == [
        (n, p.requires_grad) for n, p in ref.named_parameters()
    ]
    assert not ours.layer2_lateral.conv.weight.requires_grad and ours.layer3_lateral.conv.weight.requires_grad


UNSUPPORTED = [
    (dict(norm_cfg=dict(type="GN", num_groups=2)), ValueError, "norm_cfg type 'GN' is not supported"),
    (dict(norm_cfg=dict(type="BN")), ValueError, "norm_cfg type 'BN' is not supported"),
    (dict(norm_cfg=None), ValueError, "norm_cfg=None"),
    (dict(act_cfg=dict(type="PReLU")), ValueError, "act_cfg type 'PReLU' is not supported"),
    (dict(act_cfg=None), ValueError, "act_cfg=None"),
    (dict(conv_cfg=dict(type="Conv2d")), ValueError, "conv_cfg"),
    (dict(conv_cfg=None), ValueError, "conv_cfg=None"),
    (dict(conv_cfg=dict(type="Conv3d", padding_mode="reflect")), ValueError, "conv_cfg"),
    (dict(non_local=(0, 1, 0, 0), non_local_cfg=dict(mode="cosine")), ValueError, "mode"),
    (
        dict(non_local=(0, 1, 0, 0), non_local_cfg=dict(conv_cfg=dict(type="Conv2d"))),
        ValueError,
        "non_local_cfg",
    ),
    (dict(non_local=(0, 1, 0, 0), non_local_cfg=dict(norm_cfg=dict(type="GN"))), ValueError, "non_local_cfg"),
    (dict(non_local=(0, 1, 0, 0), non_local_cfg=dict(temperature=2)), TypeError, "temperature"),
    (dict(deformable=True), TypeError, "deformable"),
    (dict(depth=42), KeyError, "invalid depth 42"),
    (dict(style="tf"), ValueError, "style"),
    (dict(inflate_style="2x1x1"), ValueError, "inflate_style"),
    (dict(num_stages=5), ValueError, "num_stages"),
    (dict(stage_blocks=(1, 1)), ValueError, "stage_blocks"),
    (dict(inflate=((1, 1, 1), 1, 1, 1)), ValueError, "inflate"),
]


@pytest.mark.parametrize("kwargs,error,match", UNSUPPORTED)
def test_unsupported_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        ResNet3d(**{"depth": 18, "base_channels": 4, **kwargs})


def test_unsupported_arguments_raise_through_slowfast():
    kwargs = slowfast_kwargs(18, base_channels=16, slow_extra=dict(norm_cfg=dict(type="LN")))
    with pytest.raises(ValueError, match="norm_cfg type 'LN' is not supported"):
        ResNet3dSlowFast(**kwargs)
    with pytest.raises(TypeError, match="pretrained must be a str or None"):
        ResNet3dSlowFast(**{**slowfast_kwargs(18, base_channels=16), "pretrained": 3}).init_weights()
