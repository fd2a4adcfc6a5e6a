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
