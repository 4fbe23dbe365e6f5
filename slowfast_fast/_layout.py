"""The memory-format rule every backend follows (mirrored in csrc/common.h).

An output is channels_last_3d exactly when its layout-defining input is densely channels_last_3d
and not also plainly contiguous; otherwise it is contiguous. Fake kernels and real kernels use the
same rule, so compiled graphs see the strides the kernels produce.
"""

import torch


def output_memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 5 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format
