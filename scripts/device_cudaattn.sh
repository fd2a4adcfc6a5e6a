#!/usr/bin/env bash
# One device call for the CUDA attention kernels (cudaattn): GPU tests against the CPU reference,
# compute-sanitizer memcheck + racecheck on small cases, then the benchmark against PyTorch SDPA
# (bench/cuda_attention_bench.py). Everything it reports lands in $OUT. Built beforehand on the host:
#   build-cudaattn/device/{sampleattn_cuda_tests, libsa_attn_*.so, libcudart.so.13, COMMIT}
# Usage (device): bash scripts/device_cudaattn.sh [extra bench args]
set -uo pipefail
OUT=${OUT:-/tmp/cudaattn-out}
mkdir -p "$OUT"
D=build-cudaattn/device
export LD_LIBRARY_PATH="$PWD/$D:${LD_LIBRARY_PATH:-}"
export SAMPLEATTN_COMMIT=$(cat "$D/COMMIT" 2>/dev/null || echo unknown)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"

echo "== tests"
timeout 240 "$D/sampleattn_cuda_tests" --gtest_brief=1 > "$OUT/tests.log" 2>&1
echo "tests rc=$?" | tee -a "$OUT/tests.log"
grep -E "FAILED|PASSED|Failure|Expected|Which is|seed|error" "$OUT/tests.log" | head -40

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SAN" ]; then
  for tool in memcheck racecheck; do
    echo "== $tool"
    timeout 120 "$SAN" --tool "$tool" --error-exitcode 3 "$D/sampleattn_cuda_tests" \
      --gtest_filter='*SmallCasesForSanitizers*' > "$OUT/$tool.log" 2>&1
    echo "$tool rc=$?" | tee -a "$OUT/$tool.log"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$OUT/$tool.log" | head -5
  done
else
  echo "compute-sanitizer not found"
fi

echo "== bench"
libs=()
for f in "$D"/libsa_attn_*.so; do n=$(basename "$f" .so); libs+=(--lib "${n#libsa_attn_}=$f"); done
PYTHONUNBUFFERED=1 timeout 400 python3 bench/cuda_attention_bench.py "${libs[@]}" --out "$OUT/h200-attn.json" "$@" \
  2>&1 | tee "$OUT/bench.log" | grep -v '^{'
echo "bench rc=${PIPESTATUS[0]}"
