#!/usr/bin/env bash
# Host side of scripts/device_python.sh: a CUDA build of the sampleattn library (sm_90a only: the device is
# an H200), installed into build-python/device/prefix with the commit id. The device call carries that
# folder and compiles only the nanobind extension against it (python/standalone), since the device's Python
# (3.12) differs from this machine's.
# Usage (host): bash scripts/build_python_device.sh
set -euo pipefail
B=build-python/cuda-lib
D=build-python/device
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAMPLEATTN_BUILD_TESTS=OFF -DSAMPLEATTN_BUILD_TOOLS=OFF \
  -DSAMPLEATTN_CUDA=ON "-DSAMPLEATTN_CUDA_GENCODE=-gencode=arch=compute_90a,code=sm_90a" ${EXTRA_CMAKE_ARGS:-} > /dev/null
cmake --build "$B" -j 2
rm -rf "$D"
cmake --install "$B" --prefix "$D/prefix" > /dev/null
git rev-parse HEAD > "$D/COMMIT"
du -sh "$D"
