#!/usr/bin/env python3
"""How much of the sparse attention's tile work is kept entries, for the synthetic selections of
bench/cuda_attention_bench.py (window + random columns at ~5 / 10 / 20 / 50% density, causal, Sq = Sk).

The sm_90a kernel visits, per query block (64 rows when the window is at most 768 keys, else 128), the band
span [floor128(p0 - w + 1), p1] in 128-key tiles and the kept columns left of it gathered into 128-column
tiles (attention_plan.cuh). If every visited tile cost what a dense tile costs, the efficiency over kept
entries (the issue's metric: kept-entry TFLOP/s over our dense kernel's) would be

    bound = (kept / visited) / (dense causal entries / dense visited)

with the dense kernel's own 128 x 128 tiles in the denominator. The script prints that bound beside the
measured efficiency (seventh session, bench/results/h200-attn-mask32-2026-11-29.json): the gap between the
two is per-tile and per-block cost (masks, copies, pipeline fill), the bound itself is the tile geometry.
Host only (numpy): python3 bench/sparse_tile_bound.py [--band-tile 64]  (--band-tile: the bound if the band
span used tiles of that many keys instead, everything else alike).
"""
import argparse
import math

import numpy as np

BLOCK_N = 128
SMALL_WINDOW = 768  # attention.h kSmallWindowRows
MEASURED = {  # efficiency at density ~5 / 10 / 20 / 50%, h200-attn-mask32-2026-11-29.json
    8192: (0.24, 0.36, 0.51, 0.76),
    32768: (0.41, 0.62, 0.83, 0.91),
    131072: (0.82, 0.87, 0.92, 0.95),
}


def density_spec(seq, target):
    """cuda_attention_bench.py's (window, columns): 60% of the kept entries in the window."""
    f = 1.0 - math.sqrt(1.0 - 0.6 * target)
    ncols = int((target - (2 * f - f * f)) / ((1 - f) ** 2) * seq)
    return max(1, math.ceil(f * seq)), max(1, ncols)


def dense_ratio(seq):
    """Causal entries over the entries of the dense kernel's visited 128 x 128 tiles."""
    rows = np.arange(seq, dtype=np.int64)
    visited = sum(min(BLOCK_N, seq - m0) * math.ceil(min(m0 + BLOCK_N, seq) / BLOCK_N) * BLOCK_N
                  for m0 in range(0, seq, BLOCK_N))
    return float((rows + 1).sum()) / visited


def sparse_ratio(seq, window, cols, band_tile=BLOCK_N):
    """Kept entries over visited entries for one head with sorted kept columns `cols`."""
    block_m = 64 if window <= SMALL_WINDOW else 128
    rows = np.arange(seq, dtype=np.int64)
    band = np.minimum(window, rows + 1)
    # a kept column j outside row r's band: j <= r - window
    below = np.searchsorted(cols, rows - window, side="right")
    kept = int(band.sum() + below.sum())
    visited = 0
    for m0 in range(0, seq, block_m):
        m1 = min(m0 + block_m, seq)
        span_lo = max(0, m0 - window + 1) // band_tile * band_tile
        span_tiles = math.ceil((m1 - span_lo) / band_tile)
        left = int(np.searchsorted(cols, span_lo, side="left"))
        visited += (m1 - m0) * (band_tile * span_tiles + BLOCK_N * math.ceil(left / BLOCK_N))
    return kept / visited, kept / float((rows + 1).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--band-tile", type=int, default=BLOCK_N)
    band_tile = ap.parse_args().band_tile
    rng = np.random.default_rng(7)
    print("S        target  window  columns  density  kept/visited  bound  measured")
    for seq in (8192, 32768, 131072):
        dense = dense_ratio(seq)
        for target, measured in zip((0.05, 0.10, 0.20, 0.50), MEASURED[seq]):
            window, ncols = density_spec(seq, target)
            cols = np.sort(rng.choice(seq, size=min(ncols, seq), replace=False))
            ratio, density = sparse_ratio(seq, window, cols, band_tile)
            print(f"{seq:<8d} {target:5.2f}  {window:7d}  {ncols:7d}  {density:7.3f}  {ratio:12.3f}  "
                  f"{ratio / dense:5.2f}  {measured:8.2f}")


if __name__ == "__main__":
    main()
