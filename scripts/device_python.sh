#!/usr/bin/env bash
# One device call for the Python package (issue 4): compiles the nanobind extension against the CUDA build
# of the library carried in build-python/device (scripts/build_python_device.sh), runs pytest sets
# (tests/python: test_cuda.py runs there) and the transformers prefill benchmark (bench/hf_prefill.py).
# With REBUILD=1 it also builds the library from source there (CMake flags in EXTRA_CMAKE_ARGS) and uses
# that build whenever the carried one fails a CHECK_SETS set (a crash, say).
# Everything it reports lands in $OUT. Knobs: TESTS, BENCH, CHECK_SETS, PYTEST_SETS ('|'-separated pytest
# argument lists, each run in a fresh process), SEQS, LAYERS, REPEAT, TEST_TIMEOUT, BENCH_TIMEOUT, DIAG.
# Usage (device): bash scripts/device_python.sh
set -uo pipefail
OUT=${OUT:-/tmp/python-out}
mkdir -p "$OUT"
export SAMPLEATTN_COMMIT=$(cat build-python/device/COMMIT 2>/dev/null || echo unknown)
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import sys, torch, transformers, nanobind; print(sys.version.split()[0], torch.__version__, transformers.__version__, nanobind.__version__)"
PY=$(command -v python3)

# build_ext PREFIX BUILD_DIR SITE: the extension against the sampleattn installed in PREFIX, staged in SITE.
# The system g++ (not the image's /opt/gcc one): seen 2026-11-29, the /opt/gcc build put its own copy of
# libstdc++'s iostreams into the module, and the first std::ostringstream << long (every error message)
# crashed inside it once the process had the system libstdc++ loaded (cuda-gdb backtrace in bench/NOTES.md).
build_ext() {
  { cmake -S python/standalone -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$1" \
      -DCMAKE_CXX_COMPILER="${PY_CXX:-/usr/bin/g++}" -DPython_EXECUTABLE="$PY" && cmake --build "$2" -j 16; } > "$OUT/build-$(basename "$2").log" 2>&1 ||
    { tail -30 "$OUT/build-$(basename "$2").log"; return 1; }
  rm -rf "$3" && mkdir -p "$3" && cp -r python/sampleattn "$3/" && cp "$2"/python/_sampleattn*.so "$3/sampleattn/"
}

# run_sets SITE TAG SETS: each '|'-separated pytest argument list in a fresh process; returns 1 if any failed.
run_sets() {
  local site=$1 tag=$2 rc=0 n=0 args
  IFS='|' read -r -a sets <<< "$3"
  for args in "${sets[@]}"; do
    n=$((n + 1))
    (cd tests/python && PYTHONPATH="$site" eval timeout "${TEST_TIMEOUT:-180}" "$PY" -X faulthandler -m pytest -q \
       -p no:cacheprovider -rs --durations=5 $args > "$OUT/pytest-$tag-$n.log" 2>&1)
    local r=$?
    echo "[$tag] pytest $args: rc=$r"
    grep -E "passed|skipped|failed|FAILED|Error:|assert |Segmentation|File \"/tmp/site" "$OUT/pytest-$tag-$n.log" | tail -8
    [ $r -eq 0 ] || rc=1
  done
  return $rc
}

# DIAG=1: where do C++ exceptions crash? (Seen 2026-11-29: the extension segfaulted at its first C++ exception
# there, built with /opt/gcc g++ 13.3 and Python 3.12, while the same code passes here.) A minimal nanobind
# module that throws, built with each variant, called with and without torch imported first.
if [ "${DIAG:-0}" = 1 ]; then
  mkdir -p /tmp/diag && cat > /tmp/diag/m.cpp <<'CPP'
#include <nanobind/nanobind.h>
#include <stdexcept>
NB_MODULE(diag_m, m) {
  m.def("value_error", [] { throw nanobind::value_error("expected"); });
  m.def("runtime_error", [] { throw std::runtime_error("expected"); });
  m.def("caught", [] { try { throw std::runtime_error("x"); } catch (const std::exception&) { return 1; } });
}
CPP
  printf 'cmake_minimum_required(VERSION 3.24)\nproject(d CXX)\nfind_package(Python COMPONENTS Interpreter Development.Module REQUIRED)\nexecute_process(COMMAND "${Python_EXECUTABLE}" -m nanobind --cmake_dir OUTPUT_STRIP_TRAILING_WHITESPACE OUTPUT_VARIABLE nanobind_ROOT)\nfind_package(nanobind CONFIG REQUIRED)\nnanobind_add_module(diag_m NB_STATIC m.cpp)\n' > /tmp/diag/CMakeLists.txt
  for variant in "default:" "static-runtime:-DCMAKE_MODULE_LINKER_FLAGS=-static-libstdc++\ -static-libgcc" "usr-gxx:-DCMAKE_CXX_COMPILER=/usr/bin/g++"; do
    name=${variant%%:*}
    eval cmake -S /tmp/diag -B "/tmp/diag/b-$name" -G Ninja -DPython_EXECUTABLE="$PY" ${variant#*:} > "$OUT/diag-$name.log" 2>&1 &&
      cmake --build "/tmp/diag/b-$name" >> "$OUT/diag-$name.log" 2>&1 || { echo "diag $name: build failed"; continue; }
    for pre in "" "import torch;"; do
      (cd "/tmp/diag/b-$name" && "$PY" -c "$pre
import diag_m
print(diag_m.caught())
for f in (diag_m.value_error, diag_m.runtime_error):
    try: f()
    except Exception as e: print(type(e).__name__, e)" > /dev/null 2>&1)
      echo "diag $name (${pre:-no torch}): rc=$?"
    done
  done
fi

start=$(date +%s)
build_ext "$PWD/build-python/device/prefix" /tmp/pyb /tmp/site || exit 1
echo "extension built in $(( $(date +%s) - start )) s"
SITE=/tmp/site
check_failed=0
if [ -n "${CHECK_SETS:-}" ] && ! run_sets /tmp/site carried "$CHECK_SETS"; then check_failed=1; fi
if [ "$check_failed" = 1 ] && [ "${REBUILD:-0}" = 1 ]; then
  start=$(date +%s)
  if cmake -S . -B /tmp/libb -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAMPLEATTN_BUILD_TESTS=OFF \
       -DSAMPLEATTN_BUILD_TOOLS=OFF -DSAMPLEATTN_CUDA=ON "-DSAMPLEATTN_CUDA_GENCODE=-gencode=arch=compute_90a,code=sm_90a" \
       ${EXTRA_CMAKE_ARGS:-} > "$OUT/build-lib.log" 2>&1 && cmake --build /tmp/libb -j 16 >> "$OUT/build-lib.log" 2>&1 &&
     cmake --install /tmp/libb --prefix /tmp/prefix2 >> "$OUT/build-lib.log" 2>&1 && build_ext /tmp/prefix2 /tmp/pyb2 /tmp/site2; then
    echo "library + extension built on the device in $(( $(date +%s) - start )) s"
    run_sets /tmp/site2 rebuilt "$CHECK_SETS" && SITE=/tmp/site2
  else
    tail -20 "$OUT/build-lib.log"
  fi
fi
echo "using $SITE"
export PYTHONPATH=$SITE
status=0
[ "$check_failed" = 1 ] && [ "$SITE" = /tmp/site ] && status=1  # CHECK_SETS failed and no rebuild passed them
# test_cuda.py skips without a GPU or a CUDA build of the extension: here that would hide every GPU test.
if ! "$PY" -c "import sampleattn, torch, sys; sys.exit(0 if torch.cuda.is_available() and sampleattn.built_with_cuda else 1)"; then
  echo "the extension has no CUDA backend or torch sees no GPU: the GPU tests would only skip"
  status=1
fi
if [ "${TESTS:-1}" = 1 ]; then
  run_sets "$SITE" main "${PYTEST_SETS:-.}" || status=1
fi
if [ "${BENCH:-1}" = 1 ]; then
  timeout "${BENCH_TIMEOUT:-240}" "$PY" bench/hf_prefill.py --layers "${LAYERS:-4}" --repeat "${REPEAT:-3}" \
    --seq ${SEQS:-32768 131072} --out "$OUT/h200-hf-$(date -u +%F).json" 2>&1 | tee "$OUT/bench.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
echo "device_python status=$status"
exit $status
