#!/usr/bin/env python3
"""Kernel cycles from Nsight Compute, and the ratios issue 3 asks for at equal clocks.

The H200 runs at its power limit in these benchmarks, and the SM clock it gives a kernel depends on how much
power that kernel draws: a sparse launch runs at ~1.75 GHz where the dense one runs at ~1.55 GHz. Ratios of
kernel cycles do not depend on that (bench/NOTES.md, eleventh session). scripts/device_cycles.sh produces the
input: blocks, each a line "== SEQ WHAT MIX" followed by what one profiled process printed, namely ncu's CSV
(--csv with the metrics gpu__time_duration.sum, sm__cycles_elapsed.max, sm__cycles_elapsed.avg.per_second)
and the program's JSON lines. WHAT is one of:
  attention                    bench/cuda_attention_bench.py --profile-density 0,...: one kernel per JSON line
                               {"profiled": seq, "window": w or null (dense), "flops": ...}, in launch order;
  cudnn-gqa, cudnn-expanded, selection, sample-attention, flex, uniform, uniform-dense
                               bench/cuda_e2e_bench.py --profile-call WHAT: the kernels of one call (summed).
Prints and writes (--out) per block the kernels' cycles, and the ratios: sparse attention efficiency in
FLOPs per cycle against dense, selection as % of cuDNN (the form with fewer cycles; in time the faster form),
sample_attention's speedup over cuDNN and over FlexAttention, and the worst case (sample_attention on uniform
attention over our dense kernel on the same inputs; issue 3 asks for at most 1.10).

  python3 bench/ncu_cycles.py cycles.log --out cycles.json
"""
import argparse
import csv
import json
import re
import time

METRICS = ("gpu__time_duration.sum", "sm__cycles_elapsed.max", "sm__cycles_elapsed.avg.per_second")


def number(text):
    return float(text.replace(",", ""))


def parse_blocks(path):
    """[(seq, what, mix, kernels, labels)]: kernels in launch order as dicts of name and the three metrics,
    labels the program's {"profiled": ...} JSON lines."""
    blocks = []
    for line in open(path, errors="replace").read().splitlines():
        head = re.match(r"^== (\d+) (\S+) (\S+)\s*$", line)
        if head:
            blocks.append({"seq": int(head.group(1)), "what": head.group(2), "mix": head.group(3), "csv": [],
                           "labels": []})
        elif blocks and line.startswith('"'):
            blocks[-1]["csv"].append(line)
        elif blocks and line.startswith('{"profiled"'):
            blocks[-1]["labels"].append(json.loads(line))
    for b in blocks:
        rows = list(csv.reader(b.pop("csv")))
        kernels = {}
        if rows:
            col = {name: i for i, name in enumerate(rows[0])}
            for r in rows[1:]:
                k = kernels.setdefault(int(r[col["ID"]]), {"name": r[col["Kernel Name"]]})
                if r[col["Metric Name"]] in METRICS:
                    k[r[col["Metric Name"]]] = number(r[col["Metric Value"]])
        b["kernels"] = [dict(name=k["name"], cycles=k["sm__cycles_elapsed.max"], ns=k["gpu__time_duration.sum"],
                             clock_hz=k["sm__cycles_elapsed.avg.per_second"]) for _, k in sorted(kernels.items())]
        b["cycles"] = sum(k["cycles"] for k in b["kernels"])
        b["ns"] = sum(k["ns"] for k in b["kernels"])
    return blocks


def attention_ratios(block):
    """Per length: each sparse case's FLOPs per cycle (and per ns) over the dense kernel's."""
    if len(block["kernels"]) != len(block["labels"]):
        raise ValueError(f"attention block {block['seq']}: {len(block['kernels'])} kernels for "
                         f"{len(block['labels'])} cases")
    if not any(label["window"] is None for label in block["labels"]):
        raise ValueError(f"attention block {block['seq']}: no dense case (0 in --profile-density) to compare with")
    cases = [dict(label, cycles=k["cycles"], ns=k["ns"], clock_hz=k["clock_hz"])
             for label, k in zip(block["labels"], block["kernels"])]
    out = []
    for c in cases:
        dense = [d for d in cases if d["profiled"] == c["profiled"] and d["window"] is None]
        if not dense or c["window"] is None:
            continue
        d = dense[0]
        out.append(dict(seq=c["profiled"], window=c["window"], flops=c["flops"],
                        eff_vs_dense_cycles=(c["flops"] / c["cycles"]) / (d["flops"] / d["cycles"]),
                        eff_vs_dense_time=(c["flops"] / c["ns"]) / (d["flops"] / d["ns"]),
                        clock_ghz=c["clock_hz"] / 1e9, dense_clock_ghz=d["clock_hz"] / 1e9))
    return out


def e2e_ratios(blocks):
    """Per length: selection % of cuDNN, sample_attention's speedups, in cycles (against the cuDNN form with
    fewer cycles) and in time (against the faster form; the same launches)."""
    for b in blocks:
        if not b["kernels"]:  # a failed or timed-out profile: no ratio may be taken from it
            raise ValueError(f"block {b['seq']} {b['what']} {b['mix']}: no kernels profiled")
    out = []
    for seq in sorted({b["seq"] for b in blocks}):
        of = {(b["what"], b["mix"]): b for b in blocks if b["seq"] == seq}
        cudnn = [b for (what, _), b in of.items() if what.startswith("cudnn")]
        if not cudnn:
            continue
        base = min(cudnn, key=lambda b: b["cycles"])
        base_t = min(cudnn, key=lambda b: b["ns"])
        r = dict(seq=seq, cudnn_form_cycles=base["what"], cudnn_cycles=base["cycles"], cudnn_form_time=base_t["what"],
                 cudnn_ms=base_t["ns"] / 1e6)
        for (what, mix), b in sorted(of.items()):
            if what == "selection":
                r[f"selection_pct_of_cudnn_cycles_{mix}"] = 100 * b["cycles"] / base["cycles"]
                r[f"selection_pct_of_cudnn_time_{mix}"] = 100 * b["ns"] / base_t["ns"]
            elif what == "sample-attention":
                r[f"speedup_vs_cudnn_cycles_{mix}"] = base["cycles"] / b["cycles"]
                r[f"speedup_vs_cudnn_time_{mix}"] = base_t["ns"] / b["ns"]
                flex = of.get(("flex", mix))
                if flex:
                    r[f"speedup_vs_flex_cycles_{mix}"] = flex["cycles"] / b["cycles"]
                    r[f"speedup_vs_flex_time_{mix}"] = flex["ns"] / b["ns"]
            elif what == "uniform" and ("uniform-dense", mix) in of:
                dense = of[("uniform-dense", mix)]
                r[f"uniform_over_dense_cycles_{mix}"] = b["cycles"] / dense["cycles"]
                r[f"uniform_over_dense_time_{mix}"] = b["ns"] / dense["ns"]
        out.append(r)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--out", default="")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--gpu", default="unknown", help="GPU name (device_cycles.sh passes nvidia-smi's)")
    ap.add_argument("--driver", default="unknown")
    a = ap.parse_args()
    blocks = parse_blocks(a.log)
    attention = [row for b in blocks if b["what"] == "attention" for row in attention_ratios(b)]
    e2e = e2e_ratios([b for b in blocks if b["what"] != "attention"])
    for b in blocks:
        clocks = ", ".join(f"{k['clock_hz'] / 1e9:.2f}" for k in b["kernels"][:4])
        print(f"{b['seq']:7d} {b['what']:16s} {b['mix']:9s} {len(b['kernels']):2d} kernels {b['cycles']:.4g} cycles "
              f"{b['ns'] / 1e6:9.3f} ms (GHz {clocks})")
    for row in attention:
        print(f"attention {row['seq']:7d} w {row['window']:6d}: efficiency {row['eff_vs_dense_cycles']:.3f} in cycles, "
              f"{row['eff_vs_dense_time']:.3f} in time ({row['clock_ghz']:.2f} vs dense {row['dense_clock_ghz']:.2f} GHz)")
    for row in e2e:
        print("e2e " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    if a.out:
        with open(a.out, "w") as f:
            date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            json.dump(dict(gpu=a.gpu, driver=a.driver, date=date, commit=a.commit, metrics=METRICS, blocks=blocks,
                           attention=attention, e2e=e2e), f, indent=1)


if __name__ == "__main__":
    main()
