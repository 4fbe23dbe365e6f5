"""Builds slowfast_fast._C (op schemas, C++ CPU kernels, and CUDA kernels when CUDA is available).

Environment knobs:
    SLOWFAST_FAST_NO_EXT=1     skip the compiled extension (the package then runs on 'reference'/'triton')
    FORCE_CUDA=1               build the CUDA kernels even without a visible GPU (needs nvcc)
    SLOWFAST_FAST_NO_CUDA=1    never build the CUDA kernels
    TORCH_CUDA_ARCH_LIST       CUDA architectures (default "8.0;9.0")
    MAX_JOBS                   parallel compile jobs (default: number of CPUs, at most 4)
    CUDA_HOME                  CUDA toolkit root; found from nvcc when unset (see _cuda_home)
"""

import glob
import os
import re
import shutil

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cuda_home():
    """The real toolkit root. An `nvcc` on PATH may be a wrapper script (`exec /real/bin/nvcc`)
    that makes torch guess the wrong root, so read the script to find the real binary."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return "/usr/local/cuda" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    nvcc = os.path.realpath(nvcc)
    try:
        with open(nvcc, "rb") as f:
            head = f.read(4096)
    except OSError:
        head = b""
    if head.startswith(b"#!"):
        match = re.search(rb"(/\S+/bin/nvcc)\b", head)
        if match:
            nvcc = os.path.realpath(match.group(1).decode())
    return os.path.dirname(os.path.dirname(nvcc))


def _flag(name):
    return os.environ.get(name, "0") == "1"


def _extensions():
    if _flag("SLOWFAST_FAST_NO_EXT"):
        return [], {}
    cuda_home = _cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
    os.environ.setdefault("MAX_JOBS", str(min(4, os.cpu_count() or 1)))
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

    import torch
    from torch.utils import cpp_extension

    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    with_cuda = (
        not _flag("SLOWFAST_FAST_NO_CUDA")
        and bool(cuda_sources)
        and torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
        and (torch.cuda.is_available() or _flag("FORCE_CUDA"))
    )
    # BuildExtension adds -DTORCH_API_INCLUDE_EXTENSION_H and the C++ standard torch needs.
    cxx = ["-O3", "-fopenmp"]
    extra = {"cxx": cxx}
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        sources += cuda_sources
        extra["nvcc"] = [
            "-O3",
            "--expt-relaxed-constexpr",
            "-lineinfo",
        ]
        if _flag("SLOWFAST_FAST_PTXAS_VERBOSE"):
            extra["nvcc"].append("-Xptxas=-v")
        ext_cls = cpp_extension.CUDAExtension
    else:
        ext_cls = cpp_extension.CppExtension
    ext = ext_cls(
        "slowfast_fast._C",
        sources,
        include_dirs=include_dirs,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    cmdclass = {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}
    return [ext], cmdclass


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
