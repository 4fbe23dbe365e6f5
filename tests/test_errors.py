"""Every public op checks its argument types before anything else and says, in a TypeError, which
argument was wrong, what it expected and what it got (rather than an AttributeError from deep inside)."""

import numpy as np
import pytest
import torch

import slowfast_fast


def _lateral_args(**override):
    args = dict(
        x_slow=torch.randn(2, 4, 4, 5, 7),
        x_fast=torch.randn(2, 3, 16, 5, 7),
        weight=torch.randn(6, 3, 5, 1, 1),
        stride=4,
        padding=2,
    )
    args.update(override)
    return args


BAD_LATERAL = [
    (
        "numpy x_fast",
        dict(x_fast=np.zeros((2, 3, 16, 5, 7), np.float32)),
        r"x_fast must be a torch.Tensor, got numpy.ndarray; convert it with torch.as_tensor",
    ),
    ("list x_slow", dict(x_slow=[[0.0]]), r"x_slow must be a torch.Tensor, got list \[\[0.0\]\]"),
    ("None weight", dict(weight=None), r"weight must be a torch.Tensor, got NoneType None$"),
    (
        "tuple stride",
        dict(stride=(4, 1, 1)),
        r"stride must be an int \(the temporal stride\), got tuple \(4, 1, 1\)",
    ),
    ("float stride", dict(stride=4.0), r"stride must be an int \(the temporal stride\), got float 4.0"),
    ("bool padding", dict(padding=True), r"padding must be an int .*, got bool True"),
    (
        "tensor stride",
        dict(stride=torch.tensor(4)),
        r"stride must be an int .*; pass a Python int \(tensor.item\(\)\)",
    ),
    ("str padding", dict(padding="2"), r"padding must be an int .*, got str '2'"),
    ("list scale", dict(scale=[1.0] * 6), r"scale must be a torch.Tensor or None, got list"),
    ("numpy shift", dict(shift=np.zeros(6)), r"shift must be a torch.Tensor or None, got numpy.ndarray"),
    ("int relu", dict(relu=1), r"relu must be a bool, got int 1"),
    (
        "device backend",
        dict(backend=torch.device("cpu")),
        r"backend must be a backend name \(str\) or None, got torch.device",
    ),
]


@pytest.mark.parametrize("override, message", [c[1:] for c in BAD_LATERAL], ids=[c[0] for c in BAD_LATERAL])
def test_lateral_concat_names_the_wrong_argument_type(override, message):
    with pytest.raises(TypeError, match=message):
        slowfast_fast.lateral_concat(**_lateral_args(**override))


def test_numpy_integer_stride_is_an_int():
    out = slowfast_fast.lateral_concat(**_lateral_args(stride=np.int64(4), padding=np.int32(2)))
    assert out.shape == (2, 10, 4, 5, 7)


X = torch.randn(1, 3, 8, 4, 4)

BAD_RESAMPLE = [
    (
        "numpy x",
        lambda: slowfast_fast.temporal_resample(X.numpy(), 0.5),
        r"x must be a torch.Tensor, got numpy.ndarray; convert it with torch.as_tensor",
    ),
    (
        "str scale",
        lambda: slowfast_fast.temporal_resample(X, "0.5"),
        r"scale_factor must be a real number \(int or float\), got str '0.5'",
    ),
    (
        "tensor scale",
        lambda: slowfast_fast.temporal_resample(X, torch.tensor(0.5)),
        r"scale_factor must be a real number .*; pass a Python number \(tensor.item\(\)\)",
    ),
    (
        "tuple scale",
        lambda: slowfast_fast.temporal_resample(X, (0.5, 1, 1)),
        r"scale_factor must be a real number \(int or float\), got tuple \(0.5, 1, 1\)",
    ),
    (
        "bool scale",
        lambda: slowfast_fast.temporal_resample(X, True),
        r"scale_factor must be .*, got bool True",
    ),
    (
        "int backend",
        lambda: slowfast_fast.temporal_resample(X, 0.5, backend=1),
        r"backend must be a backend name \(str\) or None, got int 1",
    ),
    (
        "list x split",
        lambda: slowfast_fast.pathway_split([[1.0]], 0.5, 1.0),
        r"x must be a torch.Tensor, got list",
    ),
    (
        "None fast scale",
        lambda: slowfast_fast.pathway_split(X, 0.5, None),
        r"fast_scale must be a real number \(int or float\), got NoneType None",
    ),
    (
        "str rate",
        lambda: slowfast_fast.pathway_inputs(X, "4", 2),
        r"resample_rate must be a real number \(int or float\), got str '4'",
    ),
    (
        "float ratio",
        lambda: slowfast_fast.pathway_inputs(X, 4, 2.0),
        r"speed_ratio must be an int \(fast frames per slow frame\), got float 2.0",
    ),
    (
        "str ratio",
        lambda: slowfast_fast.pathway_inputs(X, 4, "2"),
        r"speed_ratio must be an int \(fast frames per slow frame\), got str '2'",
    ),
    (
        "numpy x inputs",
        lambda: slowfast_fast.pathway_inputs(X.numpy(), 4, 2),
        r"x must be a torch.Tensor, got numpy",
    ),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in BAD_RESAMPLE], ids=[c[0] for c in BAD_RESAMPLE])
def test_resampling_ops_name_the_wrong_argument_type(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_long_values_are_described_by_type_only():
    with pytest.raises(TypeError, match=r"got list; convert"):
        slowfast_fast.temporal_resample(list(range(100)), 0.5)
