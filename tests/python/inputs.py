"""Test inputs with awkward strides, as real callers pass them."""

from __future__ import annotations

import numpy as np


def strided(rng, batch, seq, heads, dim, dtype=np.float32, layout="bshd", scale=1.0):
    """A [batch, seq, heads, dim] view with fresh normal values. layout: 'bshd' contiguous; 'bhsd' a
    transposed [batch, heads, seq, dim] buffer; 'slice' every other head of a wider buffer."""
    if layout == "bshd":
        return (rng.standard_normal((batch, seq, heads, dim)) * scale).astype(dtype)
    if layout == "bhsd":
        return (rng.standard_normal((batch, heads, seq, dim)) * scale).astype(dtype).transpose(0, 2, 1, 3)
    if layout == "slice":
        return (rng.standard_normal((batch, seq, 2 * heads, dim + 8)) * scale).astype(dtype)[:, :, ::2, 3:3 + dim]
    raise ValueError(layout)


def peaked(rng, batch, seq, q_heads, kv_heads, dim, heavy=12, strength=(7.0, 9.0), avoid=4):
    """(q, k, v) float32 [batch, seq, heads, dim] (k, v with kv_heads) whose attention is peaked on `heavy` key
    columns per (batch, KV head), drawn from the first quarter of the keys past the first avoid + 8: every query
    of the group reads them with logits larger than the background's by about strength * (1, 1.05, 1.10, ...)
    (at scale 1/sqrt(dim)), strength rising from strength[0] for the first query head to strength[1] for the
    last, so the heads differ. The heavy columns' scores are far apart (stage 2's cut lands between two of them,
    far from any tie) and they hold most of the mass; the first `avoid` keys are background, so stage 2 does
    not pick them."""
    group = q_heads // kv_heads
    scale = 1.0 / np.sqrt(dim)
    q = rng.standard_normal((batch, seq, q_heads, dim))
    k = rng.standard_normal((batch, seq, kv_heads, dim))
    v = rng.standard_normal((batch, seq, kv_heads, dim))
    first = avoid + 8
    for b in range(batch):
        for g in range(kv_heads):
            axis = g % dim
            columns = rng.choice(np.arange(first, first + 3 * heavy), heavy, replace=False)
            k[b, :, g, axis] *= 0.1
            k[b, columns, g, :] *= 0.1
            k[b, columns, g, axis] = 1.0 + 0.05 * np.arange(heavy)
    for h in range(q_heads):
        gap = strength[0] + (strength[1] - strength[0]) * h / max(q_heads - 1, 1)
        q[:, :, h, (h // group) % dim] = gap / scale
    return q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)
