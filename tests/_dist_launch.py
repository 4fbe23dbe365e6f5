"""Starting test workers the way multi-GPU training starts them: ``torchrun`` (``python -m
torch.distributed.run``), which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in
each worker, on a free local port, with a hard time limit so a hung rendezvous fails the test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it when binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_env() -> dict:
    """The environment of a worker: the tests folder importable (helpers, the mmaction2 stub), one
    CPU thread per worker (two workers share a small CI machine)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_torchrun(script: str, args: list[str], nproc: int = 2, timeout: float = 300) -> str:
    """Run ``tests/<script>`` under torchrun with ``nproc`` local workers; returns their output.

    Raises AssertionError with the output's tail if any worker fails or the run exceeds ``timeout``
    seconds (then the whole process group, workers included, is killed).
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(TESTS_DIR / script),
        *args,
    ]
    proc = subprocess.Popen(
        command,
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"torchrun {script} timed out after {timeout} s:\n{output[-4000:]}") from None
    assert proc.returncode == 0, f"torchrun {script} failed ({proc.returncode}):\n{output[-4000:]}"
    return output
