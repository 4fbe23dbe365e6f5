# The README's two commands:
#   make bench   set up, then run the benchmarks (the package's main job)
#   make test    set up, then run the test suite
# `make install` alone sets up: torch, test/bench dependencies, and the package with its compiled _C.

PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_SPEC ?= torch==2.14.1
TORCHVISION_SPEC ?= torchvision==0.29.*
# setup.py builds the CUDA kernels only when a GPU is visible (a CPU machine skips minutes of nvcc);
# FORCE_CUDA=1 builds them without one (CI does, so they compile on every run); SLOWFAST_FAST_NO_CUDA=1 never.
FORCE_CUDA ?= 0
# pytest-xdist workers: the model tests run on one thread each, so two workers use both cores
# (measured on a clean clone of the 2-core machine: tests 346 s serial, 222 s with 2 workers).
TEST_WORKERS ?= 2
STAMP := build/.installed
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu csrc/cuda/*.cuh)

# Scratch tree for `make asan` (the CPU kernels built with AddressSanitizer).
ASAN_DIR ?= build/asan
ASAN_PRELOAD = $$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so.6)

.PHONY: install bench test lint clean asan

install: $(STAMP)

$(STAMP): $(SOURCES)
	$(PIP) install -q "$(TORCH_SPEC)" ninja "setuptools>=70.1" wheel
	$(PIP) install -q pytest pytest-xdist hypothesis ruff matplotlib tqdm \
		mmaction2==1.2.0 mmcv-lite==2.1.0 mmengine importlib_metadata \
		onnx onnxscript onnxruntime pytorchvideo
	# torchvision must match torch exactly; --no-deps keeps pip from replacing torch.
	$(PIP) install -q --no-deps "$(TORCHVISION_SPEC)"
	FORCE_CUDA=$(FORCE_CUDA) $(PIP) install -v --no-build-isolation --no-deps -e . > build.log 2>&1 \
		|| (tail -n 60 build.log; exit 1)
	$(PYTHON) -c "import slowfast_fast, slowfast_fast._C; print('slowfast_fast', slowfast_fast.__version__, 'backends on cpu:', slowfast_fast.available_backends('cpu'))"
	@mkdir -p build && touch $(STAMP)

# The GPU machine's Triton (3.6: its codegen and ptxas 12.8 differ from CI's 3.8), for
# tests/test_triton_sm90_static.py to compile every kernel for sm_90 a second time: a venv that sees this
# environment's packages (torch, the package) but imports its own Triton.
# Order-only on the install: a rebuilt _C does not remake it; another release is another venv.
SECOND_TRITON_VERSION ?= 3.6.0
SECOND_TRITON_VENV := build/triton-$(SECOND_TRITON_VERSION)
SECOND_TRITON_STAMP := $(SECOND_TRITON_VENV)/.installed

$(SECOND_TRITON_STAMP): | $(STAMP)
	rm -rf $(SECOND_TRITON_VENV)
	$(PYTHON) -m venv --system-site-packages $(SECOND_TRITON_VENV)
	$(SECOND_TRITON_VENV)/bin/python -m pip install -q --no-deps "triton==$(SECOND_TRITON_VERSION)"
	$(SECOND_TRITON_VENV)/bin/python -c "import triton; print('second Triton for the sm_90 checks:', triton.__version__)"
	touch $@

bench: install
	$(PYTHON) -m slowfast_fast.bench $(BENCH_ARGS)

test: install $(SECOND_TRITON_STAMP)
	SLOWFAST_FAST_SM90_SECOND_PYTHON=$(abspath $(SECOND_TRITON_VENV))/bin/python \
		$(PYTHON) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint:
	ruff check slowfast_fast tests benchmarks setup.py
	ruff format --check slowfast_fast tests benchmarks setup.py

# The CPU kernels under AddressSanitizer (needs `make install`'s packages; about 2 minutes on 2 cores):
# a copy of the tracked tree built with -fsanitize=address (CPU kernels only), then the CPU kernel
# tests and a sweep of every benchmarked shape (tests/cpu_sanitizer_sweep.py) with ASan preloaded
# (libstdc++ too, so ASan's C++ exception interceptor finds it). Not part of `make test`.
asan:
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	git ls-files -z | xargs -0 cp --parents -t $(ASAN_DIR)
	cd $(ASAN_DIR) && SLOWFAST_FAST_NO_CUDA=1 CFLAGS="-fsanitize=address -fno-omit-frame-pointer" \
		LDFLAGS="-fsanitize=address" $(PYTHON) setup.py build_ext --inplace > asan_build.log 2>&1 \
		|| (tail -n 40 asan_build.log; exit 1)
	cd $(ASAN_DIR) && LD_PRELOAD="$(ASAN_PRELOAD)" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=. \
		$(PYTHON) -m pytest -q -p no:xdist -p no:cacheprovider \
		tests/test_cpu_kernels.py tests/test_cpu_lateral_paths.py tests/test_cpu_lateral_backward.py
	cd $(ASAN_DIR) && LD_PRELOAD="$(ASAN_PRELOAD)" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=. \
		$(PYTHON) tests/cpu_sanitizer_sweep.py

clean:
	rm -rf build build.log *.egg-info slowfast_fast/_C*.so
