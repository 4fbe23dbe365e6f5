"""Runs the compiled CPU lateral_concat kernels (every forward path, both gradients, with and without
scale/ReLU) at every R50 fusion point the benchmarks time, for an AddressSanitizer build to watch
(not a pytest file). ``make asan`` builds the CPU kernels with ``-fsanitize=address`` in a scratch
copy of the tree and runs the CPU kernel tests and this sweep under it:

    make asan

The shapes are the benchmarks' (``slowfast_fast.bench.cases``): batch 2 of a 224x224 clip (fusion
points of 56, 56, 28, 14 pixels a side) and of the 56x56 ``cpu`` preset, 4x16 and 8x8, fp32, bf16 and
fp16, NCDHW and channels_last_3d: the pixel blocks, frame runs, fp32 ring slots and gathers of every
size the kernels choose there. Prints a line per preset; any invalid access aborts with ASan's
report.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from slowfast_fast.bench import cases

OPS = torch.ops.slowfast_fast


def main() -> None:
    torch.set_num_threads(2)
    calls = 0
    presets = {
        "224x224": dataclasses.replace(cases.SIZES["gpu"], kernel_batch=2),
        "56x56": cases.SIZES["cpu"],
    }
    for name, size in presets.items():
        for config in ("4x16", "8x8"):
            for sh in cases.lateral_shapes(size, cases.CONFIGS[config]):
                for dtype in (torch.float32, torch.bfloat16, torch.float16):
                    for fmt in (torch.contiguous_format, torch.channels_last_3d):
                        n, s = sh.batch, sh.spatial

                        def rand(*shape, fmt=fmt, dtype=dtype):
                            return torch.randn(*shape).to(dtype).contiguous(memory_format=fmt)

                        x_slow = rand(n, sh.c_slow, sh.t_slow, s, s)
                        x_fast = rand(n, sh.c_fast, sh.t_fast, s, s)
                        weight = rand(sh.c_lateral, sh.c_fast, sh.kernel, 1, 1, fmt=torch.contiguous_format)
                        scale = torch.rand(sh.c_lateral).to(dtype) + 0.5
                        grad_out = rand(n, sh.c_slow + sh.c_lateral, sh.t_slow, s, s)
                        args = (sh.stride, sh.padding)
                        for path in ("simd", "blas", ""):
                            os.environ["SLOWFAST_FAST_CPU_LATERAL"] = path
                            out = OPS.lateral_concat(x_slow, x_fast, weight, *args, scale, scale, True)
                        os.environ.pop("SLOWFAST_FAST_CPU_LATERAL")
                        for sc, mask in ((scale, out), (None, None)):
                            OPS.lateral_concat_grad_input(grad_out, x_fast, weight, sc, mask, *args)
                            OPS.lateral_concat_grad_weight(grad_out, x_fast, weight, sc, mask, *args)
                        calls += 7
        print(f"{name}: {calls} calls so far, no invalid access", flush=True)


if __name__ == "__main__":
    main()
