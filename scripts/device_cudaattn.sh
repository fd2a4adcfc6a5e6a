#!/usr/bin/env bash
# One device call for the CUDA attention kernels (cudaattn): GPU tests against the CPU reference,
# compute-sanitizer memcheck + racecheck on small cases, the benchmark against PyTorch SDPA
# (bench/cuda_attention_bench.py), and optionally an Nsight Compute profile of two launches. Everything it
# reports lands in $OUT. Built beforehand on the host (scripts/build_cudaattn_device.sh):
#   build-cudaattn/device/{sampleattn_cuda_tests, libsa_attn_<variant>.so, libcudart.so.13, COMMIT}
# Usage (device): LIBS="final w16" NCU=1 bash scripts/device_cudaattn.sh [extra bench args, e.g. --million]
# LIBS: kernel variants to compare, the first is the primary (tests always use the CMake build).
set -uo pipefail
OUT=${OUT:-/tmp/cudaattn-out}
mkdir -p "$OUT"
D=${B:-build-cudaattn}/device
LIBS=${LIBS:-$(cd "$D" && ls libsa_attn_*.so | sed 's/libsa_attn_\(.*\)\.so/\1/')}
export LD_LIBRARY_PATH="$PWD/$D:${LD_LIBRARY_PATH:-}"
export SAMPLEATTN_COMMIT=$(cat "$D/COMMIT" 2>/dev/null || echo unknown)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"

if [ "${TESTS:-1}" = 1 ]; then
  echo "== tests"
  for t in "$D"/sampleattn_cuda_tests*; do  # the CMake build, and builds of other block orders if present
    timeout 240 "$t" --gtest_brief=1 > "$OUT/tests-$(basename "$t").log" 2>&1
    echo "$(basename "$t") rc=$?" | tee -a "$OUT/tests-$(basename "$t").log"
    grep -E "FAILED|PASSED|Failure|Expected|Which is|seed|error" "$OUT/tests-$(basename "$t").log" | head -20
  done
  SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  for tool in memcheck racecheck; do
    [ -n "$SAN" ] || { echo "compute-sanitizer not found"; break; }
    echo "== $tool"
    timeout 120 "$SAN" --tool "$tool" --error-exitcode 3 "$D/sampleattn_cuda_tests" \
      --gtest_filter='*SmallCasesForSanitizers*' > "$OUT/$tool.log" 2>&1
    echo "$tool rc=$?" | tee -a "$OUT/$tool.log"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$OUT/$tool.log" | head -5
  done
fi

libs=()
for n in $LIBS; do libs+=(--lib "$n=$D/libsa_attn_$n.so"); done
primary=$(echo $LIBS | cut -d' ' -f1)

if [ "${NCU:-0}" = 1 ] && command -v ncu > /dev/null; then
  echo "== ncu ($primary)"
  { cuobjdump -sass "$D/libsa_attn_$primary.so" | grep -E "Function|LDL|STL" | head -60; } > "$OUT/sass-spills.txt" 2>&1
  timeout 150 ncu --clock-control none --kernel-name regex:attention_kernel --launch-count 2 \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis python3 bench/cuda_attention_bench.py "${libs[@]}" --out /dev/null \
    --profile-one > "$OUT/ncu.txt" 2>&1
  echo "ncu rc=$?"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Stall|Warp Cycles Per Issued|Issue Slots|Executed Ipc|L2 Hit|Registers|Achieved Occupancy|Pipe" "$OUT/ncu.txt" | head -60
fi

echo "== bench (${LIBS})"
PYTHONUNBUFFERED=1 timeout 400 python3 bench/cuda_attention_bench.py "${libs[@]}" --out "$OUT/h200-attn.json" "$@" \
  2>&1 | tee "$OUT/bench.log" | grep -v '^{'
echo "bench rc=${PIPESTATUS[0]}"
