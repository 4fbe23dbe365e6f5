"""The benchmark's performance model: what a case should cost on the machine the run measured.

One function, :func:`predicted_ms`; the two numbers it needs (copy bandwidth and per-launch cost)
are measured at the start of every run by :mod:`timing` (``copy_bandwidth``, ``launch_cost``).
"""

from __future__ import annotations


def predicted_ms(nbytes: int, bandwidth: float, launch_ms: float) -> float:
    """Predicted time in ms of one call of an op that moves ``nbytes``:
    ``nbytes / bandwidth + launch_ms``.

    * ``nbytes``: the fewest bytes the op must move, as :mod:`cases` counts them (each input it
      needs read once, each output written once; 0 for an identity resampling, which needs no copy).
    * ``bandwidth``: bytes per second (read + written) of a large tensor copy measured in the same
      run: a device-to-device copy of ``copy_bytes`` (1 GiB on the gpu size preset) on CUDA, a
      256 MiB copy on CPU (:func:`timing.copy_bandwidth`).
    * ``launch_ms``: the fixed cost of one call, measured in the same run as the time of a 4 KiB
      tensor copy (:func:`timing.launch_cost`): on CUDA one kernel launch as the timer sees it, on
      CPU one dispatch through PyTorch. The model charges every case exactly one launch, as an ideal
      single fused kernel would; a backend that launches several kernels (the reference's conv then
      cat) pays the rest as measured/predicted above 1.

    Assumptions and what it ignores: the op is memory-bound and streams its bytes at the copy's
    rate, so arithmetic (the lateral conv's FLOPs), caches (inputs reused from L2 or a CPU's caches,
    bytes re-read by a kernel) and partial waves of thread blocks are not modelled. At the CPU sizes
    the tensors fit in the caches, which are faster than the 256 MiB copy that sets the bandwidth, so
    measured/predicted can be below 1 there; on a GPU at the gpu sizes it should not be.
    """
    return nbytes / bandwidth * 1e3 + launch_ms
