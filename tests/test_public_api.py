"""The fused ops are importable from the top level, as the README shows, and are the same
functions as those in slowfast_fast.ops."""

import torch

import slowfast_fast
from slowfast_fast import lateral_concat, pathway_inputs, pathway_split, temporal_resample


def test_top_level_ops_are_the_ops_module_functions():
    for name in ("lateral_concat", "temporal_resample", "pathway_split", "pathway_inputs"):
        assert name in slowfast_fast.__all__
        assert getattr(slowfast_fast, name) is getattr(slowfast_fast.ops, name)


def test_every_exported_name_exists():
    missing = [name for name in slowfast_fast.__all__ if not hasattr(slowfast_fast, name)]
    assert not missing, f"__all__ names {missing}, which slowfast_fast does not define"


def test_readme_example_runs():
    x_slow, x_fast = torch.randn(1, 8, 4, 5, 5), torch.randn(1, 2, 32, 5, 5)
    out = lateral_concat(x_slow, x_fast, torch.randn(4, 2, 5, 1, 1), stride=8, padding=2)
    assert out.shape == (1, 12, 4, 5, 5)
    clip = torch.randn(1, 3, 32, 5, 5)
    slow, fast = pathway_inputs(clip, resample_rate=8, speed_ratio=8)
    assert slow.shape[2] == 4 and fast is clip
    assert torch.equal(pathway_split(clip, 1 / 8, 1.0)[0], temporal_resample(clip, 1 / 8))
