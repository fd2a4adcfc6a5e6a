"""The one comparison of a library Selection with the fp64 SPEC (spec_reference.py), shared by the NumPy tests
and the CUDA tests so that every backend's selection is judged by the same rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

import spec_reference as ref


def check_selection(sel, q, k, config, causal=True, scale=None):
    """The library's selection against the fp64 SPEC, head by head (q, k: host arrays, any float dtype NumPy
    can cast to float64). Stage 2 sums fp32 scores in the library, so a column whose score ties the boundary
    within rounding (ref.non_ties) may differ; nothing else may. Returns the fraction of heads that match
    exactly."""
    seq_q, seq_k, d = q.shape[1], k.shape[1], q.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    cfg = dict(alpha=0.95, sample_ratio=0.05, window_ratio=0.08, min_window=64, sink_tokens=0, dense_tail=0,
               dense_head_density=1.0)
    cfg.update(config)
    assert (sel.batch, sel.heads, sel.seq_q, sel.seq_k) == (q.shape[0], q.shape[2], seq_q, seq_k)
    exact = 0
    for b in range(sel.batch):
        for h in range(sel.heads):
            want = ref.select_head(q, k, b, h, causal=causal, scale=scale, **cfg)
            got = np.asarray(sel.columns(b, h))
            assert int(sel.window[b, h]) == want.window
            assert np.all(np.diff(got) > 0), "columns must be sorted and unique"
            diff = np.setxor1d(got, want.columns)
            if diff.size == 0:
                exact += 1
            else:
                assert ref.non_ties(got, want).size == 0, (b, h, diff)
            rows = ref.sampled_rows(cfg["sample_ratio"], seq_q)
            mask = ref.mask_of(seq_q, seq_k, want.window, got, causal, cfg["dense_tail"])
            p, _ = ref.softmax_rows(ref.scores(q, k, b, h, q.shape[2] // k.shape[2], scale)[rows],
                                    ref.visible(seq_q, seq_k, causal)[rows])
            coverage = (p * mask[rows]).sum() / len(rows)
            assert sel.sampled_coverage[b, h] == pytest.approx(coverage, abs=1e-4)
            assert coverage >= cfg["alpha"] - 1e-5
            vis = ref.visible(seq_q, seq_k, causal)
            assert sel.kept_entries[b, h] == mask.sum()
            assert sel.visible_entries[b, h] == vis.sum()
            assert sel.head_density[b, h] == pytest.approx(mask.sum() / vis.sum(), rel=1e-12)
    return exact / (sel.batch * sel.heads)
