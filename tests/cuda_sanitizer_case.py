"""Runs every CUDA op of slowfast_fast forward and backward once, on small odd shapes, for
compute-sanitizer to wrap (not a pytest file):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python tests/cuda_sanitizer_case.py
    compute-sanitizer --tool racecheck python tests/cuda_sanitizer_case.py --quick
    compute-sanitizer --tool initcheck python tests/cuda_sanitizer_case.py --quick

Covers both memory formats, fp32 (TF32 on and off, set through PyTorch's precision API where it
exists), fp16 and bf16, shapes that take the 16-byte vector paths and shapes that do not, ReLU masks,
k > stride and stride > k, several 64-wide tiles, and a resample input that starts at an unaligned
address. ``--quick`` keeps fp32 with TF32 and bf16 (every kernel's two MMA paths, both layouts) for
the slower tools. Prints one line per case and exits 0; any kernel fault surfaces as an exception
(the sanitizer reports the access itself).
"""

from __future__ import annotations

import argparse

import torch

from slowfast_fast import ops as sf_ops

OPS = torch.ops.slowfast_fast
FORMATS = {"ncdhw": torch.contiguous_format, "ndhwc": torch.channels_last_3d}

# (N, C_slow, C_fast, C_lat, T_fast, H, W, k, stride, padding)
LATERAL_CASES = [
    (2, 3, 5, 7, 13, 3, 5, 5, 8, 2),  # odd everything, scalar paths, skipped frames
    (1, 8, 16, 24, 12, 4, 4, 7, 4, 3),  # vector paths
    (1, 40, 24, 72, 10, 11, 12, 3, 2, 1),  # several tiles in every dimension
]


def _set_conv_tf32(enabled: bool) -> None:
    """Turns TF32 for convolutions on or off the way a user of this torch would."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = "tf32" if enabled else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = enabled


def _lateral(case, dtype, fmt, tf32):
    n, c_s, c_f, c_l, t_f, h, w, k, s, p = case
    t_s = (t_f + 2 * p - k) // s + 1
    dev = "cuda"
    x_slow = torch.randn(n, c_s, t_s, h, w, device=dev, dtype=dtype).contiguous(memory_format=fmt)
    x_fast = torch.randn(n, c_f, t_f, h, w, device=dev, dtype=dtype).contiguous(memory_format=fmt)
    weight = torch.randn(c_l, c_f, k, 1, 1, device=dev, dtype=dtype)
    scale = torch.rand(c_l, device=dev, dtype=dtype) + 0.5
    shift = torch.randn(c_l, device=dev, dtype=dtype)
    leaves = [t.requires_grad_(True) for t in (x_slow, x_fast, weight, scale, shift)]
    _set_conv_tf32(tf32)
    for relu in (False, True):
        out = sf_ops.lateral_concat(*leaves[:3], s, p, leaves[3], leaves[4], relu, backend="cuda")
        torch.autograd.grad(out, leaves, torch.randn_like(out))


def _resample(dtype, fmt):
    x = torch.randn(2, 3, 19, 5, 7, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    for scale in (1 / 8, 1 / 3, 2.5):
        out = OPS.temporal_resample(x, scale)
        torch.autograd.grad(out, x, torch.randn_like(out))
    slow, fast = OPS.pathway_split(x, 1 / 8, 1 / 2)
    torch.autograd.grad((slow, fast), x, (torch.randn_like(slow), torch.randn_like(fast)))
    unaligned = torch.randn(2 * 3 * 17 * 5 * 5 + 1, device="cuda", dtype=dtype)[1:].view(2, 3, 17, 5, 5)
    OPS.temporal_resample(unaligned, 1 / 3)


def main() -> None:
    parser = argparse.ArgumentParser(description="Runs every CUDA op of slowfast_fast for compute-sanitizer.")
    parser.add_argument("--quick", action="store_true", help="fp32 with TF32 and bf16 only")
    quick = parser.parse_args().quick
    dtypes = (torch.float32, torch.bfloat16) if quick else (torch.float32, torch.float16, torch.bfloat16)
    for fmt_name, fmt in FORMATS.items():
        for dtype in dtypes:
            tf32_modes = (True,) if quick else (False, True)
            for tf32 in tf32_modes if dtype == torch.float32 else (False,):
                for case in LATERAL_CASES:
                    _lateral(case, dtype, fmt, tf32)
            _resample(dtype, fmt)
            torch.cuda.synchronize()
            print(f"ok {fmt_name} {dtype}")


if __name__ == "__main__":
    main()
