#!/usr/bin/env bash
# Kernel cycles of the benchmark cases on the device (Nsight Compute with the clocks left as they are), and the
# issue-3 ratios at equal clocks from them (bench/ncu_cycles.py): the H200 runs at its power limit, where the
# SM clock follows each kernel's power draw, so time ratios between a sparse and a dense kernel carry a clock
# gain that cycle ratios do not (bench/NOTES.md, eleventh session).
#
#   device: bash scripts/device_cycles.sh [BUILD_DIR]   # carry BUILD_DIR/device (device_test.sh build)
#
# One profiled process per block: the attention kernel on dense and the 5/10/20/50% synthetic selections at
# 128K and 32K (one process per length), then one call each of cuDNN (both GQA forms), the selection,
# sample_attention (both head mixes), the worst case (sample_attention and our dense kernel on uniform
# attention) and, at 128K, FlexAttention given sample_attention's mask. Writes
# $OUT/cycles.log (the raw blocks) and $OUT/h200-cycles.json. LENGTHS and FLEX (space-separated) narrow it
# (default "131072 32768" and "131072").
set -uo pipefail
B=${1:-build-final}
D=$B/device
OUT=${OUT:-/tmp/sampleattn-cycles}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/$D:${LD_LIBRARY_PATH:-}"
command -v ncu > /dev/null || { echo "ncu not found"; exit 1; }
LOG=$OUT/cycles.log
: > "$LOG"
METRICS=gpu__time_duration.sum,sm__cycles_elapsed.max,sm__cycles_elapsed.avg.per_second
status=0
profile() {  # profile SEQ WHAT MIX SECONDS NCU_ARGS... -- PROGRAM ARGS...
  local seq=$1 what=$2 mix=$3 seconds=$4
  shift 4
  echo "== $seq $what $mix" >> "$LOG"
  timeout "$seconds" ncu --clock-control none --metrics "$METRICS" --csv "$@" >> "$LOG" 2>> "$OUT/ncu.err"
  local rc=$?
  echo "$seq $what $mix rc=$rc"
  [ $rc = 0 ] || status=1
}
for S in ${LENGTHS:-131072 32768}; do
  profile "$S" attention - 200 --kernel-name regex:attention_kernel_sm90 python3 bench/cuda_attention_bench.py \
    --lib "ours=$D/libsa_attn.so" --out /dev/null --seqs "$S" --profile-density 0,0.05,0.1,0.2,0.5
  calls="cudnn-gqa:default cudnn-expanded:default selection:default sample-attention:default sample-attention:no-dense"
  calls="$calls uniform:default uniform-dense:default"
  [[ " ${FLEX:-131072} " == *" $S "* ]] && calls="$calls flex:default flex:no-dense"
  for spec in $calls; do
    profile "$S" "${spec%%:*}" "${spec##*:}" 200 --nvtx --nvtx-include m/ python3 bench/cuda_e2e_bench.py \
      --lib "$D/libsa_e2e.so" --profile-call "${spec%%:*}" --lengths "$S" --mixes "${spec##*:}"
  done
done
GPU_INFO=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
python3 bench/ncu_cycles.py "$LOG" --out "$OUT/h200-cycles.json" --commit "$(cat "$D/COMMIT" 2>/dev/null || echo unknown)" \
  --gpu "${GPU_INFO%%,*}" --driver "${GPU_INFO##*, }" ||
  status=1
exit $status
