#!/usr/bin/env python3
"""Selection timeline of one or more builds of the C API library (device side).

For each library (bench/cuda_e2e_capi.cpp) and length: the structured workload (bf16, Hq 32, Hkv 8, d 128,
causal, seed 7, default head mix), sa_select timed with CUDA events (median of 20 calls enqueued back to back),
then one call under the PyTorch profiler on an idle GPU and one after 10 warm calls: every kernel's start
(us after the first kernel's) and duration, the span from the first start to the last end, and the summed
kernel time ("busy"; with dependent launches a kernel's time includes its wait for the one before, so busy
may exceed the span). bench/NOTES.md (eighth session) quotes its output.

  python3 bench/cuda_select_timeline.py build/device/libsa_e2e.so 8192,32768,131072
"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from cuda_e2e_bench import SampleAttn, time_ms


def timeline(fn):
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    ev = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    t0 = ev[0].time_range.start
    span = ev[-1].time_range.end - t0
    busy = sum(e.time_range.end - e.time_range.start for e in ev)
    parts = "  ".join(f"{e.name[:14]}@{e.time_range.start - t0:.0f}+{e.time_range.end - e.time_range.start:.0f}" for e in ev)
    return span, busy, parts


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sa = SampleAttn(sys.argv[1])
    for S in [int(x) for x in sys.argv[2].split(",")]:
        q, k, _ = sa.workload(S, 32, 8, 128, seed=7, mix=0)
        ws = sa.workspace(q, k)
        call = lambda: sa.select(q, k, ws)
        t = time_ms(call, 20, warmup=3)
        for label in ("idle", "warm"):
            if label == "warm":
                for _ in range(10):
                    call()
            span, busy, parts = timeline(call)
            print(f"S={S} {label}: event median {t:.3f} ms; span {span:.0f} us busy {busy:.0f} us | {parts}", flush=True)
        del q, k, ws
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
