"""CMakeLists.txt configures and builds the same library setup.py builds, and it registers the ops.

The library is loaded in a fresh interpreter: loading a second copy of the schemas into a process
that already imported slowfast_fast._C would be a duplicate TORCH_LIBRARY registration.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

from slowfast_fast.ops._schemas import SCHEMAS

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cmake_configures_builds_and_registers_ops(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0"))
    configure = [
        "cmake", "-S", str(ROOT), "-B", str(tmp_path),
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        f"-DPython_EXECUTABLE={sys.executable}",
    ]  # fmt: skip
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    if torch.version.cuda is not None and os.path.exists("/usr/local/cuda/bin/nvcc"):
        configure.append("-DCUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda")
    subprocess.run(configure, check=True, env=env, capture_output=True)
    subprocess.run(["cmake", "--build", str(tmp_path), "-j", "2"], check=True, capture_output=True)
    (library,) = tmp_path.glob("_C*.so")
    check = (
        "import sys, torch; torch.ops.load_library(sys.argv[1]); "
        "ops = torch.ops.slowfast_fast; "
        "print(';'.join(str(getattr(ops, n).default._schema) for n in sys.argv[2:]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check, str(library), *SCHEMAS],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip().split(";") == [f"slowfast_fast::{s}" for s in SCHEMAS.values()]
