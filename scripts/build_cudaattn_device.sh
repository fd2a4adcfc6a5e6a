#!/usr/bin/env bash
# Host side of scripts/device_cudaattn.sh: builds what that call carries into build-cudaattn/device:
# the CUDA test binary (CMake build in build-cudaattn), the benchmark's shared library for each kernel
# variant (VARIANTS="name:-DFLAG ..."), the CUDA runtime and the commit id.
# Usage (host, after configuring build-cudaattn with CMake):
#   VARIANTS="final: w16:-DSAMPLEATTN_SM80_WARP_ROWS=16" bash scripts/build_cudaattn_device.sh
set -euo pipefail
B=${B:-build-cudaattn}
D=$B/device
mkdir -p "$D"
cmake --build "$B" -j 2 --target sampleattn_cuda_tests
cp "$B/tests/sampleattn_cuda_tests" "$D/"
cp /usr/local/cuda/lib64/libcudart.so.13 "$D/"
git rev-parse HEAD > "$D/COMMIT"
for v in ${VARIANTS:-final:}; do
  name=${v%%:*}
  flags=${v#*:}
  nvcc -shared -Xcompiler -fPIC -std=c++20 -O3 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
    -Iinclude -Isrc $flags src/cuda/attention_launch.cu src/cuda/attention_sm*_*.cu src/core/tensor.cpp \
    bench/cuda_attention_capi.cpp -o "$D/libsa_attn_$name.so" &
done
wait
ls -la "$D"
