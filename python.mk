# Python package targets, included by the Makefile. `make test-python`: a virtualenv under $(BUILD), the
# package installed into it with `pip install .` (scikit-build-core over the same CMake project), the test
# dependencies from PyPI, then pytest over tests/python.
#   PY_TORCH=1 (default) also installs torch and transformers from PyPI so that the torch, torch.compile
#     and transformers tests run (measured on a 2-core CI-class machine: about 1 minute, ~5 GB of disk); a
#     failed install fails the target. PY_TORCH=0 leaves them out on purpose (those tests report as skipped).
#   PY_CUDA=OFF (default) builds the extension without the CUDA backend: CI has no GPU to test it on and the
#     C++ build already compiles the kernels. `pip install .` outside this target uses AUTO (nvcc found -> CUDA).
PYTHON ?= python3
PY_VENV ?= $(BUILD)/python-venv
PY_BUILD ?= $(BUILD)/python-build
PY_TORCH ?= 1
PY_CUDA ?= OFF
PY_PIP = $(PY_VENV)/bin/python -m pip --disable-pip-version-check -q

.PHONY: python-venv python-install test-python

$(PY_VENV)/bin/python:
	@$(PYTHON) -m venv $(PY_VENV)

python-venv: $(PY_VENV)/bin/python
	@$(PY_PIP) install "scikit-build-core>=0.10" "nanobind>=2.0" "numpy>=1.22" "pytest>=7"
	@if [ "$(PY_TORCH)" = "1" ]; then $(PY_PIP) install "torch>=2.4" "transformers>=5.0"; fi

python-install: python-venv
	@CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PY_PIP) install --no-build-isolation -Cbuild-dir=$(PY_BUILD) \
		-Ccmake.define.SAMPLEATTN_CUDA=$(PY_CUDA) .

# A run that collects no test (pytest's exit code 5) fails like any other: tests/python always has tests.
test-python: python-install
	@cd tests/python && $(abspath $(PY_VENV))/bin/python -m pytest -q -p no:cacheprovider .
