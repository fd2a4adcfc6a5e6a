# Thin wrapper over CMake (the source of truth). Quick start: `make run`, `make test`.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=

.PHONY: all deps configure build run test test-cpp clean install

all: build

deps:
	@bash scripts/install_deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The main job on its embedded default: SampleAttention vs dense attention on the synthetic workload.
run: build
	@./$(BUILD)/tools/sampleattn demo

test-cpp: build
	@ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test: test-cpp test-python

install: build
	@cmake --install $(BUILD)

clean:
	@rm -rf $(BUILD)

-include python.mk
