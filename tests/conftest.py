"""Shared test setup: CUDA-marked tests skip without a GPU; mmaction2 is importable on CPU."""

import os
import sys
import types

import pytest
import torch
from _tf32 import conv_tf32

# Without a GPU the Triton kernels run under Triton's CPU interpreter. The flag is read when a kernel
# is decorated, so it must be set before slowfast_fast (which imports the Triton kernels) is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _fix_triton_interpreter_index() -> None:
    """Triton's interpreter before 3.7 (3.6: the GPU machine's, with torch 2.11) makes a scalar's
    ``__index__`` ``int(array_of_one)``, a TypeError since NumPy 2.4, so every kernel with a runtime loop
    bound (``range(count)``) fails under TRITON_INTERPRET (triton-lang/triton#9171, fixed by #9172).
    Re-patch it as the fix does: ``int(data.squeeze())``."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None or getattr(patch, "_slowfast_fast_fixed", False):
        return

    def _patch_lang_tensor(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    _patch_lang_tensor._slowfast_fast_fixed = True
    interpreter._patch_lang_tensor = _patch_lang_tensor


_fix_triton_interpreter_index()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _install_drn_stub() -> None:
    """mmaction2 1.2.0's wheel omits mmaction/models/localizers/drn/, which its package __init__
    imports; a stand-in module with a DRN class lets the rest of mmaction2 import."""
    if "mmaction.models.localizers.drn.drn" in sys.modules:
        return
    pkg = types.ModuleType("mmaction.models.localizers.drn")
    pkg.__path__ = []
    mod = types.ModuleType("mmaction.models.localizers.drn.drn")

    class DRN(torch.nn.Module):
        """Placeholder: the real DRN localizer is not part of the mmaction2 wheel."""

    mod.DRN = DRN
    pkg.drn = mod
    sys.modules["mmaction.models.localizers.drn"] = pkg
    sys.modules["mmaction.models.localizers.drn.drn"] = mod


@pytest.fixture(scope="session")
def mmaction_backbones():
    """mmaction2's backbones module (real mmaction2 1.2.0), or a skip if it is not installed."""
    pytest.importorskip("mmengine")
    pytest.importorskip("mmcv")
    _install_drn_stub()
    from mmaction.models import backbones

    return backbones


@pytest.fixture
def no_tf32():
    """fp32 convs (and so the GPU backends, which follow them) without TF32, restored after."""
    with conv_tf32(False):
        yield


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Run a module's tests on one CPU thread (the model tests use it): those models are many small
    ops, and with several threads on a shared CPU OpenMP barriers make a test ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(params=[1, 2])
def threads(request):
    """Run the test on 1 and on 2 CPU threads (the CPU kernels split their work by thread count),
    restoring the thread count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        torch.set_num_threads(before)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item (``item.rep_call``...), so fixtures can see in their
    teardown whether the test ran to the end."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
