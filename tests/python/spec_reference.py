"""An independent fp64 NumPy implementation of SampleAttention (shared/SPEC.md, variant A) and of the
tolerance table (src/core/tolerance.h), for checking the package against something it does not share code with.

Shapes: q [B, Sq, Hq, d], k and v [B, Sk, Hkv, d]; query row r sits at key position Sk - Sq + r.
Brute force (dense [Sq, Sk] matrices per head): meant for the small sizes the tests use.
"""

from __future__ import annotations

import math
import pathlib
import re
from dataclasses import dataclass

import numpy as np

_TOLERANCE_H = pathlib.Path(__file__).resolve().parents[2] / "src" / "core" / "tolerance.h"


def tolerance(dtype_name: str) -> tuple:
    """(out, lse) tolerances for 'f32' / 'f16' / 'bf16', read from src/core/tolerance.h (the one table)."""
    text = _TOLERANCE_H.read_text()
    m = re.search(r"case DType::%s:\s*return \{([^,]+),\s*([^,}]+)," % dtype_name, text)
    assert m, f"no {dtype_name} entry in {_TOLERANCE_H}"
    return float(m.group(1)), float(m.group(2))


def rounding(dtype_name: str) -> float:
    """The unit roundoff of 'f32' / 'f16' / 'bf16' (the table's third field), for the per-row rounding check."""
    m = re.search(r"case DType::%s:\s*return \{[^,]+,[^,]+,\s*([^}]+)\};" % dtype_name, _TOLERANCE_H.read_text())
    assert m, f"no {dtype_name} entry in {_TOLERANCE_H}"
    return float.fromhex(m.group(1).strip())


def ceil_ratio(ratio: float, n: int) -> int:
    # ceil(ratio * n) with exact products kept exact (0.05 * 20 is 1, not 2): SPEC's integers.
    from fractions import Fraction

    return math.ceil(Fraction(ratio).limit_denominator(10**9) * n)


def window_size(window_ratio: float, min_window: int, seq_k: int) -> int:
    return min(max(max(min_window, ceil_ratio(window_ratio, seq_k)), 1), seq_k)


def sampled_rows(sample_ratio: float, seq_q: int) -> np.ndarray:
    n = min(max(1, ceil_ratio(sample_ratio, seq_q)), seq_q)
    return np.array([(i + 1) * seq_q // n - 1 for i in range(n)], dtype=np.int64)


def visible(seq_q: int, seq_k: int, causal: bool) -> np.ndarray:
    """[Sq, Sk] bool: key j visible to query row r."""
    pos = np.arange(seq_q)[:, None] + (seq_k - seq_q)
    j = np.arange(seq_k)[None, :]
    return j <= pos if causal else np.ones((seq_q, seq_k), dtype=bool)


def band(seq_q: int, seq_k: int, w: int, causal: bool) -> np.ndarray:
    pos = np.arange(seq_q)[:, None] + (seq_k - seq_q)
    j = np.arange(seq_k)[None, :]
    if causal:
        return (j > pos - w) & (j <= pos)
    return (j > pos - w) & (j < pos + w)


def mask_of(seq_q: int, seq_k: int, w: int, columns, causal: bool, dense_tail: int = 0) -> np.ndarray:
    vis = visible(seq_q, seq_k, causal)
    stripes = np.zeros((seq_q, seq_k), dtype=bool)
    stripes[:, np.asarray(columns, dtype=np.int64)] = True
    m = band(seq_q, seq_k, w, causal) | (stripes & vis)
    if dense_tail > 0:
        m[seq_q - min(dense_tail, seq_q):] = vis[seq_q - min(dense_tail, seq_q):]
    return m


def softmax_rows(s: np.ndarray, keep: np.ndarray):
    """Row softmax of s over the True entries of keep; returns (P, lse)."""
    s = np.where(keep, s, -np.inf)
    mx = s.max(axis=1, keepdims=True)
    e = np.exp(s - mx)
    tot = e.sum(axis=1, keepdims=True)
    return e / tot, (mx + np.log(tot))[:, 0]


@dataclass
class HeadSelection:
    window: int
    columns: np.ndarray  # sorted ascending
    colscore: np.ndarray  # [Sk], fp64
    boundary: float  # colscore of the last column that stage 2 kept (before sinks)
    coverage: float  # fraction of the sampled rows' mass inside the mask
    density: float  # kept / visible entries
    after: float = -math.inf  # colscore of the first column that stage 2 dropped (-inf: it dropped none)

    def cut_gap(self) -> float:
        """How far stage 2's cut is from a tie: (boundary - after) / total score."""
        return (self.boundary - self.after) / self.colscore.sum()


def scores(q, k, b, h, group, scale):
    return (q[b, :, h, :].astype(np.float64) @ k[b, :, h // group, :].astype(np.float64).T) * scale


def select_head(q, k, b, h, *, alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, causal,
                scale, dense_head_density=1.0) -> HeadSelection:
    seq_q, seq_k = q.shape[1], k.shape[1]
    group = q.shape[2] // k.shape[2]
    w = window_size(window_ratio, min_window, seq_k)
    rows = sampled_rows(sample_ratio, seq_q)
    vis = visible(seq_q, seq_k, causal)
    s = scores(q, k, b, h, group, scale)
    p, _ = softmax_rows(s[rows], vis[rows])
    colscore = p.sum(axis=0)
    order = np.lexsort((np.arange(seq_k), -colscore))  # score descending, then lower index first
    running = np.cumsum(colscore[order])
    m = int(np.searchsorted(running, alpha * colscore.sum() * (1 - 1e-12), side="left")) + 1
    m = min(m, seq_k)
    kept = set(order[:m].tolist()) | set(range(min(sink_tokens, seq_k)))
    columns = np.array(sorted(kept), dtype=np.int64)
    mask = mask_of(seq_q, seq_k, w, columns, causal, dense_tail)
    if dense_head_density < 1 and mask.sum() >= max(1, math.ceil(dense_head_density * vis.sum())):
        columns = np.arange(seq_k, dtype=np.int64)  # ours: a head that keeps that much runs dense
        mask = mask_of(seq_q, seq_k, w, columns, causal, dense_tail)
    coverage = float((p * mask[rows]).sum() / len(rows))
    density = float(mask.sum() / vis.sum())
    after = float(colscore[order[m]]) if m < seq_k else -math.inf
    return HeadSelection(w, columns, colscore, float(colscore[order[m - 1]]), coverage, density, after)


def non_ties(got_columns, want: HeadSelection, rel: float = 1e-5) -> np.ndarray:
    """The columns that are in only one of got_columns and want.columns and whose SPEC score is no tie with
    stage 2's boundary (|colscore - boundary| > rel * total score). A backend sums scores in fp32, so a column
    tied with the boundary within rounding may go either way; any column returned here is a real difference."""
    diff = np.setxor1d(np.asarray(got_columns, dtype=np.int64), want.columns)
    return diff[np.abs(want.colscore[diff] - want.boundary) > rel * want.colscore.sum()]


def attention(q, k, v, masks, scale):
    """Renormalised attention over per-head masks: masks[b][h] is [Sq, Sk] bool. Returns (out, lse)."""
    batch, seq_q, q_heads, d = q.shape
    group = q_heads // k.shape[2]
    out = np.zeros((batch, seq_q, q_heads, d))
    lse = np.zeros((batch, q_heads, seq_q))
    for b in range(batch):
        for h in range(q_heads):
            p, lse[b, h] = softmax_rows(scores(q, k, b, h, group, scale), masks[b][h])
            out[b, :, h, :] = p @ v[b, :, h // group, :].astype(np.float64)
    return out, lse


def dense(q, k, v, causal=True, scale=None):
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    vis = visible(q.shape[1], k.shape[1], causal)
    masks = [[vis for _ in range(q.shape[2])] for _ in range(q.shape[0])]
    return attention(q, k, v, masks, scale)


def spec_selections(q, k, *, causal, scale, alpha, sample_ratio, window_ratio, min_window=64, sink_tokens=0,
                    dense_tail=0, min_gap=1e-3):
    """select_head for every (batch, query head), asserting that each head's stage-2 cut is at least min_gap of
    the total score away from a tie, so that a backend must reproduce the columns exactly. [batch][head] lists."""
    result = []
    for b in range(q.shape[0]):
        row = []
        for h in range(q.shape[2]):
            sel = select_head(q, k, b, h, alpha=alpha, sample_ratio=sample_ratio, window_ratio=window_ratio,
                              min_window=min_window, sink_tokens=sink_tokens, dense_tail=dense_tail, causal=causal,
                              scale=scale)
            assert sel.cut_gap() > min_gap, (b, h, sel.cut_gap())
            row.append(sel)
        result.append(row)
    return result
