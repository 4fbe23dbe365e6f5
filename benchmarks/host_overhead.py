"""Host-side (Python) cost of the Triton launchers per call, with the kernels themselves stubbed out.

On a GPU a small fused op is over in a few microseconds, so the host work of each call (argument
checks, the lookup of the launch plan derived once per shape key, output and workspace allocation,
the autotuner's key) can decide the op's speed when the host cannot run ahead of the GPU (batch 1, no
CUDA graph). This measures that work on the CPU with Triton's interpreter set (no GPU needed): every kernel's
``JITFunction.run`` is replaced by a no-op, so what is timed is ours plus Triton's autotuner front
end. NOT included: Triton's own JIT launch path on a GPU (argument binding, specialization key, the C
launcher) and the CUDA driver's launch, which only a GPU run can measure.

    TRITON_INTERPRET=1 python benchmarks/host_overhead.py [--rounds 7] [--calls 200]

Prints, per launcher, the median over rounds of the mean µs per call, and the 1-minute load average
at the start and the end (time only on a quiet machine).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402


def _stub_kernels() -> list[str]:
    """Replaces the run method of every Triton kernel of the package with a no-op; returns their names."""
    import triton

    names = []
    for module_name in (
        "slowfast_fast.triton.lateral_concat",
        "slowfast_fast.triton.lateral_concat_backward",
        "slowfast_fast.triton.resample",
    ):
        module = importlib.import_module(module_name)
        for name, kernel in vars(module).items():
            if isinstance(kernel, triton.runtime.Autotuner):
                kernel = kernel.fn
            if isinstance(kernel, triton.runtime.jit.KernelInterface):  # jitted or interpreted
                kernel.run = lambda *args, **kwargs: None
                names.append(name)
    return names


def _cases():
    from slowfast_fast import ops

    # By module path: the package re-exports functions of the modules' names.
    fwd = importlib.import_module("slowfast_fast.triton.lateral_concat")
    bwd = importlib.import_module("slowfast_fast.triton.lateral_concat_backward")
    resample = importlib.import_module("slowfast_fast.triton.resample")
    # R50 4x16 layer1's channels at a small spatial size (the host work does not depend on the pixel
    # count): batch 8, 8x8 frames.
    n, c_slow, c_fast, c_lat, t_fast, k, stride, pad, s = 8, 256, 32, 64, 32, 5, 8, 2, 8
    t_slow = (t_fast + 2 * pad - k) // stride + 1
    x_slow = torch.randn(n, c_slow, t_slow, s, s)
    x_fast = torch.randn(n, c_fast, t_fast, s, s)
    weight = torch.randn(c_lat, c_fast, k, 1, 1)
    weight_grad = weight.clone().requires_grad_()
    scale, shift = torch.randn(c_lat), torch.randn(c_lat)
    out = torch.randn(n, c_slow + c_lat, t_slow, s, s)
    grad = torch.randn_like(out)
    clip = torch.randn(n, 3, 32, s, s)
    return {
        "lateral_concat (launcher)": lambda: fwd.lateral_concat(
            x_slow, x_fast, weight, stride, pad, scale, shift, True
        ),
        "lateral_concat_backward (launcher)": lambda: bwd.lateral_concat_backward(
            grad, x_fast, weight, scale, out, stride, pad, True, True
        ),
        "pathway_split (launcher)": lambda: resample.pathway_split(clip, 1 / 8, 1 / 2),
        "ops.pathway_split (public op, triton)": lambda: ops.pathway_split(
            clip, 1 / 8, 1 / 2, backend="triton"
        ),
        "ops.lateral_concat (public op, triton)": lambda: ops.lateral_concat(
            x_slow, x_fast, weight, stride, pad, scale, shift, True, backend="triton"
        ),
        # Training: the weight needs a gradient, so the call passes the autograd layer and saves
        # tensors for the backward (which is not run).
        "ops.lateral_concat (public op, triton, weight needs grad)": lambda: ops.lateral_concat(
            x_slow, x_fast, weight_grad, stride, pad, scale, shift, True, backend="triton"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    stubbed = _stub_kernels()
    cases = _cases()
    for fn in cases.values():  # warm-up: imports, caches, the workspace's first allocation
        fn()
    results = {name: [] for name in cases}
    for _ in range(args.rounds):  # contenders interleaved, round after round
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                fn()
            results[name].append((time.perf_counter() - start) / args.calls * 1e6)
    print(f"kernels stubbed: {', '.join(sorted(stubbed))}")
    print(f"torch {torch.__version__}, 1 thread, {args.rounds} rounds x {args.calls} calls")
    print("| call | µs per call (median of rounds) | min | max |")
    print("|---|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")
    print(f"1-minute load average: {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
