#!/usr/bin/env bash
# Nsight Compute of the CUDA selection's two stage-1 passes on the device, with SASS-level stall sampling.
#
#   device: bash scripts/device_ncu_select.sh [BUILD_DIR] [SEQ]   # carry BUILD_DIR/device (device_test.sh build)
#
# For each pass (sm_90a kernels: lse_kernel_sm90, colsum_kernel_sm90): one call of sa_select on the structured
# workload (bf16, Hq 32, Hkv 8, d 128, causal, seed 7) profiled with --set full (the second launch, after a
# warm-up), the report's details page into $OUT/<kernel>-details.txt, its source page (per SASS instruction)
# into $OUT/<kernel>-src.csv.gz, and bench/ncu_sass_stalls.py's summary on stdout and in $OUT/<kernel>-stalls.txt.
set -uo pipefail
B=${1:-build-final}
SEQ=${2:-32768}
D=$B/device
OUT=${OUT:-/tmp/sampleattn-ncu}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/$D:${LD_LIBRARY_PATH:-}"
command -v ncu > /dev/null || { echo "ncu not found"; exit 1; }
drive=$(mktemp --suffix=.py)
cat > "$drive" <<PY
import sys
sys.path.insert(0, "bench")
import torch
from cuda_e2e_bench import SampleAttn
sa = SampleAttn("$D/libsa_e2e.so")
q, k, _ = sa.workload($SEQ, 32, 8, 128, seed=7, mix=0)
ws = sa.workspace(q, k)
for _ in range(3):
    sa.select(q, k, ws)
torch.cuda.synchronize()
PY
status=0
for kernel in lse_kernel_sm90 colsum_kernel_sm90; do
  echo "== $kernel (S=$SEQ)"
  timeout 240 ncu --clock-control none --kernel-name "regex:$kernel" --launch-skip 1 --launch-count 1 --set full \
    --import-source no -f -o "/tmp/$kernel" python3 "$drive" > "/tmp/$kernel.run" 2>&1 || { tail -5 "/tmp/$kernel.run"; status=1; continue; }
  ncu -i "/tmp/$kernel.ncu-rep" --page details > "$OUT/$kernel-details.txt" 2>&1
  grep -E "Duration|Executed Ipc A|Issue Slots Busy|Eligible Warps|Active Warps Per|L2 Cache Throughput|L1/TEX Cache Throughput|highest-utilized" \
    "$OUT/$kernel-details.txt" | head -12
  ncu -i "/tmp/$kernel.ncu-rep" --page source --csv --print-source sass | gzip > "$OUT/$kernel-src.csv.gz"
  python3 bench/ncu_sass_stalls.py "$OUT/$kernel-src.csv.gz" --top 25 | tee "$OUT/$kernel-stalls.txt"
done
rm -f "$drive"
exit $status
