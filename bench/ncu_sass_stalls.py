#!/usr/bin/env python3
"""Where a kernel's warps wait, per SASS instruction, from Nsight Compute's source page.

Input: `ncu -i REPORT --page source --csv --print-source sass > FILE` (plain or .gz), for a report taken with
`--set full` (warp-stall sampling). Prints the sampled stall reasons in total, samples and executed warp
instructions by opcode, the top instructions by samples with their main reasons, and, with --regions, the
executed instructions and samples per address range (offsets from the kernel's first instruction, as
cuobjdump -sass prints them). bench/NOTES.md (ninth session) quotes its output for the selection kernels.

  python3 bench/ncu_sass_stalls.py colsum.csv.gz --top 30 --regions 0x51e0:top,0x5470:copies,0x6480:classify
"""
import argparse
import csv
import gzip
import re


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", errors="replace") as f:
        rows = list(csv.reader(f))
    head = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    header = rows[head]
    return header, [r for r in rows[head + 1:] if len(r) == len(header)]


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def opcode(source):
    m = re.match(r"\s*(@!?U?P\w+\s+)?([A-Z0-9_]+)", source)
    return m.group(2) if m else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--regions", default="", help="comma-separated START:NAME (hex offsets), each up to the next")
    a = ap.parse_args()
    header, rows = load(a.csv)
    col = {name: i for i, name in enumerate(header)}
    samples, executed = col["Warp Stall Sampling (All Samples)"], col["Instructions Executed"]
    reasons = [i for i, name in enumerate(header) if name.startswith("stall_") and "Not Issued" not in name]
    total = sum(number(r[samples]) for r in rows) or 1.0
    insts = sum(number(r[executed]) for r in rows) or 1.0
    print(f"samples {total:.0f}, warp instructions executed {insts:.0f}")
    by_reason = sorted(((sum(number(r[i]) for r in rows), header[i]) for i in reasons), reverse=True)
    listed = sum(v for v, _ in by_reason)
    print("stall reasons (% of samples): " + ", ".join(f"{n[6:]} {v / total * 100:.1f}" for v, n in by_reason[:12]) +
          f", unlisted {(total - listed) / total * 100:.1f}")
    for label, column, norm in (("samples", samples, total), ("executed", executed, insts)):
        by_op = {}
        for r in rows:
            by_op[opcode(r[1])] = by_op.get(opcode(r[1]), 0.0) + number(r[column])
        top = sorted(by_op.items(), key=lambda kv: -kv[1])[:14]
        print(f"{label} by opcode (%): " + ", ".join(f"{k} {v / norm * 100:.1f}" for k, v in top))
    base = int(rows[0][col["Address"]], 16)
    print(f"top {a.top} instructions by samples (offset, % of samples, executed, instruction | main reasons):")
    for r in sorted(rows, key=lambda r: -number(r[samples]))[:a.top]:
        main_reasons = sorted(((number(r[i]), header[i][6:]) for i in reasons if number(r[i]) > 0), reverse=True)[:3]
        # Samples whose reason the CSV has no column for (e.g. warps waiting on their own wgmma).
        other = number(r[samples]) - sum(number(r[i]) for i in reasons)
        if other > 0.05 * number(r[samples]):
            main_reasons.insert(0, (other, "unlisted"))
        print(f"  {int(r[col['Address']], 16) - base:#07x} {number(r[samples]) / total * 100:5.1f}% "
              f"{number(r[executed]):12.0f}  {r[1].strip()[:58]:58s} | " +
              ", ".join(f"{n} {v:.0f}" for v, n in main_reasons))
    if a.regions:
        marks = sorted((int(s.split(":")[0], 16), s.split(":")[1]) for s in a.regions.split(","))
        print("regions (executed % / samples %):")
        for k, (start, name) in enumerate(marks):
            end = marks[k + 1][0] if k + 1 < len(marks) else float("inf")
            part = [r for r in rows if start <= int(r[col["Address"]], 16) - base < end]
            print(f"  {name:12s} {sum(number(r[executed]) for r in part) / insts * 100:5.1f} / "
                  f"{sum(number(r[samples]) for r in part) / total * 100:5.1f}")


if __name__ == "__main__":
    main()
