#!/usr/bin/env python3
"""Where a kernel's warps wait, per SASS instruction, from Nsight Compute's source page.

Input: `ncu -i REPORT --page source --csv --print-source sass > FILE` (plain or .gz), for a report taken with
`--set full` (warp-stall sampling). Prints the sampled stall reasons in total, samples and executed warp
instructions by opcode, the top instructions by samples with their main reasons, and, with --regions, the
executed instructions and samples per address range (offsets from the kernel's first instruction, as
cuobjdump -sass prints them). bench/NOTES.md (ninth session) quotes its output for the selection kernels.

  python3 bench/ncu_sass_stalls.py colsum.csv.gz --top 30 --regions 0x51e0:top,0x5470:copies,0x6480:classify

With --lines, the same per phase of the kernel's source instead of address ranges: LISTING is `nvdisasm -gi` of
the profiled cubin (e.g. extracted from the build's object with `cuobjdump -xelf all`), FUNCTION a substring of
the kernel's mangled name, and each instruction counts for the outermost line of FILE it was inlined into:

  python3 bench/ncu_sass_stalls.py src.csv.gz --lines k.sass Li128ELi2ELi128EE attention_kernel_sm90.cuh \
      --phases 0:entry,137:q-copies,287:producer-loop,439:step0,448:loop,463:finish
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
    ap.add_argument("--lines", nargs=3, metavar=("LISTING", "FUNCTION", "FILE"),
                    help="nvdisasm -gi listing, kernel name substring, source file whose lines --phases names")
    ap.add_argument("--phases", default="", help="comma-separated FIRST_LINE:NAME of FILE, each up to the next")
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
    if a.lines and a.phases:
        line_of = source_lines(*a.lines)
        marks = sorted((int(x.split(":")[0]), x.split(":")[1]) for x in a.phases.split(","))
        totals = {name: [0.0, 0.0, {}] for _, name in marks}
        totals["?"] = [0.0, 0.0, {}]
        for r in rows:
            line = line_of.get(int(r[col["Address"]], 16) - base, -1)
            name = next((n for first, n in reversed(marks) if line >= first), "?")
            t = totals[name]
            t[0] += number(r[executed])
            t[1] += number(r[samples])
            for i in reasons:
                t[2][header[i][6:]] = t[2].get(header[i][6:], 0.0) + number(r[i])
        print(f"phases by source line of {a.lines[2]} (executed % / samples % | main reasons, % of the phase):")
        for name, (e, smp, why) in totals.items():
            top = sorted(why.items(), key=lambda kv: -kv[1])[:4]
            print(f"  {name:14s} {e / insts * 100:5.1f} / {smp / total * 100:5.1f} | " +
                  ", ".join(f"{k} {v / smp * 100:.0f}" for k, v in top if smp))


def source_lines(listing, function, source):
    """Offset -> the outermost line of `source` each instruction of `function` comes from (-1: none)."""
    out, current, inside = {}, -1, False
    pattern = re.compile(re.escape(source) + r'", line (\d+)')
    with open(listing) as f:
        for text in f:
            if text.startswith(".text."):
                inside = function in text
            if not inside:
                continue
            if text.lstrip().startswith("//## File"):
                found = pattern.findall(text)
                current = int(found[-1]) if found else -1
                continue
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/", text)
            if m:
                out[int(m.group(1), 16)] = current
    return out


if __name__ == "__main__":
    main()
