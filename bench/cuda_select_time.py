#!/usr/bin/env python3
"""Selection (stages 1 + 2) timing of several builds of the C API library side by side (device side).

For each --lib name=path (bench/cuda_e2e_capi.cpp built against different kernel versions) and each length
of --lengths: the structured workload (bf16, Hq 32, Hkv 8, d 128, causal, seed 7, default head mix, as
bench/cuda_e2e_bench.py --bench), sa_select timed with CUDA events (median of --reps calls per round) and
split per kernel with the PyTorch profiler (median over rounds). The libraries alternate within each of
--rounds rounds, so clock and cache state treat them alike. The first library is the reference: for every
other one the script prints how many heads keep a different number of columns and the largest relative
difference of kept entries (fp32 rounding may move a column at the alpha threshold, nothing more).
"""
import argparse
import json
import statistics

import numpy as np
import torch

from cuda_e2e_bench import SampleAttn, kernel_profile, time_ms

KERNELS = (("pass1", "lse_kernel"), ("combine", "combine_kernel"), ("pass2", "colsum_kernel"))


def short_name(key):
    for short, part in KERNELS:
        if part in key:
            return short
    return key


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", action="append", required=True, help="name=path; the first is the reference")
    ap.add_argument("--lengths", default="32768,131072")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    libs = [(spec.split("=", 1)[0], SampleAttn(spec.split("=", 1)[1])) for spec in a.lib]
    Hq, Hkv, d = 32, 8, 128
    results = []
    for S in [int(x) for x in a.lengths.split(",") if x]:
        q, k, _ = libs[0][1].workload(S, Hq, Hkv, d, seed=7, mix=0)
        ws = {name: sa.workspace(q, k) for name, sa in libs}  # the builds may differ in workspace size
        times = {name: [] for name, _ in libs}
        split = {name: {} for name, _ in libs}
        for _ in range(a.rounds):
            for name, sa in libs:
                times[name].append(time_ms(lambda: sa.select(q, k, ws[name]), a.reps, warmup=2))
                for key, ms in kernel_profile(lambda: sa.select(q, k, ws[name])):
                    split[name].setdefault(short_name(key), []).append(ms)
        ref = libs[0][1].selection(q, k, ws[libs[0][0]])
        for name, sa in libs:
            sel = sa.selection(q, k, ws[name])
            case = dict(seq=S, lib=name, selection_ms=statistics.median(times[name]),
                        selection_ms_rounds=times[name],
                        kernels_ms={key: statistics.median(v) for key, v in split[name].items()})
            diff_heads = int(np.count_nonzero(sel["counts"] != ref["counts"]))
            rel = float(np.max(np.abs(sel["kept"] - ref["kept"]) / np.maximum(ref["kept"], 1)))
            case.update(heads_with_other_count=diff_heads, max_rel_kept_diff=rel)
            results.append(case)
            kern = "  ".join(f"{key} {ms:.3f}" for key, ms in sorted(case["kernels_ms"].items()))
            print(f"S={S:6d} {name:10s} selection {case['selection_ms']:7.3f} ms (rounds "
                  f"{', '.join(f'{t:.3f}' for t in times[name])}) | {kern} | vs {libs[0][0]}: {diff_heads} heads "
                  f"other count, kept rel diff {rel:.1e}", flush=True)
        del q, k, ws
        torch.cuda.empty_cache()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, cases=results), f, indent=1)


if __name__ == "__main__":
    main()
