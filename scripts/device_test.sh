#!/usr/bin/env bash
# Every GPU test of sampleattn in one device call, plus (optionally) the end-to-end benchmark.
#
#   host:   bash scripts/device_test.sh build [BUILD_DIR]   # CMake build (sm_90a) + bench C API into BUILD_DIR/device
#   device: bash scripts/device_test.sh run [BUILD_DIR]     # carry BUILD_DIR/device; results land in $OUT
#
# run does: the CUDA GoogleTest binary (tests/cuda/*: attention kernels, selection, backend, 1M tokens with
# SAMPLEATTN_LARGE_TESTS=1), then its attention, selection and offsets-beyond-2^32 tests again with the sm_80
# kernels forced (SAMPLEATTN_CUDA_KERNELS=sm80: on a Hopper GPU the sm_90a kernels are the default), the selection and
# backend tests with the sm_90a pass 2 at one query head per tile (SAMPLEATTN_SM90_COLSUM_HEADS=1: the path of
# odd GQA groups, forced on the even ones), compute-sanitizer memcheck and racecheck on the
# *SmallCasesForSanitizers* tests (the backend's also with one head per tile), dense and alpha = 1 against
# PyTorch SDPA (cuDNN) via bench/cuda_e2e_bench.py --check, with BENCH=1 the end-to-end benchmark (BENCH_ARGS, default
# 32K and 128K with FlexAttention at 128K) writing $OUT/h200-e2e.json, and with ATTN_BENCH=1 the attention
# kernel benchmark (bench/cuda_attention_bench.py over BUILD_DIR/device/libsa_attn.so) writing $OUT/h200-attn.json,
# and with CYCLES=1 the same comparisons in kernel cycles (scripts/device_cycles.sh) writing $OUT/h200-cycles.json.
# Devices.SecondDevice (tests/cuda/devices_test.cpp) and test_cuda.py's second-device test skip on one GPU: run them
# on a two-GPU machine (device kind nvidia-h200-x2).
# Switches: TESTS=0 skips the gtest + sanitizer part, SAN=0 the sanitizers, GTEST_FILTER, GTEST_FILTER_SM80 and
# GTEST_FILTER_COLSUM1 narrow the three test runs. The main run alone takes ~5 minutes (LARGE=0), the sm_80 one ~3:
# with one device call limited to 600 s, split the parts over calls (e.g. GTEST_FILTER, or TESTS=0 CHECK=1).
set -uo pipefail
MODE=${1:-run}
B=${2:-build-cudaselect}
D=$B/device

if [ "$MODE" = build ]; then
  set -e
  if [ ! -f "$B/build.ninja" ] && [ ! -f "$B/Makefile" ]; then
    cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DSAMPLEATTN_BUILD_TOOLS=OFF \
      "-DSAMPLEATTN_CUDA_GENCODE=-gencode=arch=compute_90a,code=sm_90a"
  fi
  cmake --build "$B" -j 2 --target sampleattn_cuda_tests
  mkdir -p "$D"
  cp "$B/tests/sampleattn_cuda_tests" "$D/"
  g++ -std=c++20 -O2 -shared -fPIC bench/cuda_e2e_capi.cpp -Iinclude -Isrc -I/usr/local/cuda/include \
    "$B/libsampleattn.a" -L/usr/local/cuda/lib64 -lcudart -lpthread -o "$D/libsa_e2e.so"
  g++ -std=c++20 -O2 -shared -fPIC bench/cuda_attention_capi.cpp -Iinclude -Isrc -I/usr/local/cuda/include \
    "$B/libsampleattn.a" -L/usr/local/cuda/lib64 -lcudart -lpthread -o "$D/libsa_attn.so"
  cp /usr/local/cuda/lib64/libcudart.so.13 "$D/" 2>/dev/null || true
  git rev-parse HEAD > "$D/COMMIT"
  ls -la "$D"
  exit 0
fi

OUT=${OUT:-/tmp/sampleattn-device}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/$D:${LD_LIBRARY_PATH:-}"
export SAMPLEATTN_COMMIT=$(cat "$D/COMMIT" 2>/dev/null || echo unknown)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
status=0

# run_gtest NAME SECONDS FILTER [VAR=VALUE ...]: the CUDA test binary into $OUT/NAME.log with the given
# environment; prints the summary and each failure with its trace (case, seed), since only a few files of $OUT
# come back from the device.
run_gtest() {
  local name=$1 seconds=$2 filter=$3
  shift 3
  env "$@" timeout "$seconds" "$D/sampleattn_cuda_tests" --gtest_brief=1 --gtest_filter="$filter" \
    > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc" | tee -a "$OUT/$name.log"
  [ $rc = 0 ] || status=1
  grep -E "FAILED|PASSED|1M tokens|error:|exception" "$OUT/$name.log" | head -20
  grep -E -A14 "Failure" "$OUT/$name.log" | head -80
}

if [ "${TESTS:-1}" = 1 ]; then
  echo "== gtest (CUDA)"
  # The 1M-token case (LARGE=1) also runs a CPU selection of one head: ~1-3 minutes more.
  run_gtest tests "$([ "${LARGE:-1}" = 1 ] && echo 540 || echo 420)" "${GTEST_FILTER:-*}" SAMPLEATTN_LARGE_TESTS="${LARGE:-1}"
  echo "== gtest (CUDA), sm_80 kernels forced"
  run_gtest tests-sm80 300 "${GTEST_FILTER_SM80:-Attention*:Select*:BackendCuda.OffsetsBeyondUint32}" \
    SAMPLEATTN_CUDA_KERNELS=sm80
  echo "== gtest (CUDA), sm_90a pass 2 with one head per tile"
  run_gtest tests-colsum1 200 "${GTEST_FILTER_COLSUM1:-Select*:Backend*}" SAMPLEATTN_SM90_COLSUM_HEADS=1
  SAN=${SAN:-1}
  SANBIN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  # Every small case, then the backend's again with one head per pass-2 tile (its cases have even groups).
  for run in memcheck racecheck memcheck-colsum1 racecheck-colsum1; do
    [ "$SAN" = 1 ] || break
    [ -n "$SANBIN" ] || { echo "compute-sanitizer not found"; status=1; break; }
    echo "== $run"
    tool=${run%-colsum1}
    if [ "$run" = "$tool" ]; then
      timeout 150 "$SANBIN" --tool "$tool" --error-exitcode 3 "$D/sampleattn_cuda_tests" \
        --gtest_filter='*SmallCasesForSanitizers*' > "$OUT/$run.log" 2>&1
    else
      SAMPLEATTN_SM90_COLSUM_HEADS=1 timeout 150 "$SANBIN" --tool "$tool" --error-exitcode 3 \
        "$D/sampleattn_cuda_tests" --gtest_filter='BackendCuda.SmallCasesForSanitizers' > "$OUT/$run.log" 2>&1
    fi
    rc=$?
    echo "$run rc=$rc" | tee -a "$OUT/$run.log"
    [ $rc = 0 ] || status=1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race|PASSED|FAILED" "$OUT/$run.log" | head -8
  done
fi

if [ "${CHECK:-1}" = 1 ]; then
  echo "== vs PyTorch SDPA (cuDNN)"
  PYTHONUNBUFFERED=1 timeout 120 python3 bench/cuda_e2e_bench.py --lib "$D/libsa_e2e.so" --check 2>&1 | tee "$OUT/sdpa_check.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi

if [ "${ATTN_BENCH:-0}" = 1 ]; then
  echo "== attention kernel benchmark"
  PYTHONUNBUFFERED=1 timeout 300 python3 bench/cuda_attention_bench.py --lib "ours=$D/libsa_attn.so" \
    --out "$OUT/h200-attn.json" ${ATTN_BENCH_ARGS:-} 2>&1 | grep -v '^{' | tee "$OUT/attn-bench.log" | grep -v "check OK"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if [ "${BENCH:-0}" = 1 ]; then
  echo "== benchmark"
  # The SM clock, power and temperature every 200 ms beside it ($OUT/clocks.csv; the JSON's wall_stamps say
  # which phase ran when).
  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv -lms 200 > "$OUT/clocks.csv" &
  clock_pid=$!
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 timeout 420 python3 bench/cuda_e2e_bench.py --lib "$D/libsa_e2e.so" --bench \
    --out "$OUT/h200-e2e.json" ${BENCH_ARGS:---lengths 32768,131072 --flex 131072} 2>&1 | tee "$OUT/bench.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  kill "$clock_pid" 2> /dev/null
fi
if [ "${CYCLES:-0}" = 1 ]; then
  echo "== kernel cycles"
  OUT=$OUT/cycles bash scripts/device_cycles.sh "$B" 2>&1 | grep -v " rc=0$"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  mv "$OUT/cycles/h200-cycles.json" "$OUT/" 2> /dev/null
fi
echo "device_test status=$status"
exit $status
