#!/usr/bin/env bash
# One device call for the Python package (issue 4): compiles the nanobind extension against the CUDA build
# of the library carried in build-python/device (scripts/build_python_device.sh), then runs the pytest suite
# (tests/python: test_cuda.py runs there) and the transformers prefill benchmark (bench/hf_prefill.py).
# Everything it reports lands in $OUT. Knobs: TESTS=0/1, BENCH=0/1, PYTEST_ARGS, SEQS, LAYERS, REPEAT.
# Usage (device): bash scripts/device_python.sh
set -uo pipefail
OUT=${OUT:-/tmp/python-out}
mkdir -p "$OUT"
export SAMPLEATTN_COMMIT=$(cat build-python/device/COMMIT 2>/dev/null || echo unknown)
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import sys, torch, transformers, nanobind; print(sys.version.split()[0], torch.__version__, transformers.__version__, nanobind.__version__)"

start=$(date +%s)
if ! { cmake -S python/standalone -B /tmp/pyb -G Ninja -DCMAKE_BUILD_TYPE=Release \
         -DCMAKE_PREFIX_PATH="$PWD/build-python/device/prefix" -DPython_EXECUTABLE="$(command -v python3)" &&
       cmake --build /tmp/pyb -j 16; } > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  exit 1
fi
rm -rf /tmp/site && mkdir -p /tmp/site && cp -r python/sampleattn /tmp/site/ && cp /tmp/pyb/python/_sampleattn*.so /tmp/site/sampleattn/
export PYTHONPATH=/tmp/site
echo "extension built in $(( $(date +%s) - start )) s"
python3 -c "import sampleattn; print('built_with_cuda', sampleattn.built_with_cuda)" || exit 1

if [ "${TESTS:-1}" = 1 ]; then
  (cd tests/python && timeout "${TEST_TIMEOUT:-180}" python3 -m pytest -q -p no:cacheprovider -rs --durations=10 \
     ${PYTEST_ARGS:-.} > "$OUT/pytest.log" 2>&1; echo "pytest rc=$?" >> "$OUT/pytest.log")
  grep -E "passed|failed|Error|error|FAILED|assert|rc=" "$OUT/pytest.log" | tail -30
fi
if [ "${BENCH:-1}" = 1 ]; then
  timeout "${BENCH_TIMEOUT:-240}" python3 bench/hf_prefill.py --layers "${LAYERS:-4}" --repeat "${REPEAT:-3}" \
    --seq ${SEQS:-32768 131072} --out "$OUT/h200-hf-$(date -u +%F).json" 2>&1 | tee "$OUT/bench.log"
fi
