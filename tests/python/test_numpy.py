"""The NumPy path of the package against the independent fp64 SPEC implementation (spec_reference.py):
the selection (window, columns, coverage, density), the sparse output and log-sum-exp, dense attention,
hand-made selections, on awkward shapes, GQA, Sq < Sk, non-contiguous strides, both CPU backends."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sampleattn
import spec_reference as ref
from inputs import strided

BACKENDS = ["cpu", "cpu_reference"]

# (batch, seq_q, seq_k, q_heads, kv_heads, head_dim, layout)
SHAPES = [
    (1, 1, 1, 1, 1, 64, "bshd"),
    (1, 17, 17, 4, 1, 64, "bhsd"),
    (2, 97, 97, 4, 4, 128, "slice"),
    (1, 60, 200, 8, 1, 64, "bshd"),
    (1, 257, 257, 8, 2, 64, "bhsd"),
    (2, 33, 1025, 2, 2, 64, "slice"),
]

CONFIG = dict(alpha=0.8, sample_ratio=0.1, window_ratio=0.05, min_window=4)


def _inputs(rng, shape, dtype=np.float32):
    batch, seq_q, seq_k, hq, hkv, d, layout = shape
    # Larger query norms make attention peaked, so stage 2 keeps well under all columns.
    q = strided(rng, batch, seq_q, hq, d, dtype, layout, scale=2.0)
    k = strided(rng, batch, seq_k, hkv, d, dtype, layout)
    v = strided(rng, batch, seq_k, hkv, d, dtype, layout)
    return q, k, v


def _lib_masks(sel, seq_q, seq_k):
    return [[ref.mask_of(seq_q, seq_k, int(sel.window[b, h]), sel.columns(b, h), sel.causal, sel.dense_tail)
             for h in range(sel.heads)] for b in range(sel.batch)]


def _check_selection(sel, q, k, config, causal=True, scale=None):
    """The library's selection against the fp64 SPEC, head by head. Stage 2 sums fp32 scores in the
    library, so a column whose score ties the boundary within rounding may differ; nothing else may."""
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
                tie = 1e-5 * want.colscore.sum()
                assert np.all(np.abs(want.colscore[diff] - want.boundary) <= tie), (b, h, diff)
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


def _check_attention(out, lse, q, k, v, masks, dtype_name, scale=None):
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    want_out, want_lse = ref.attention(q, k, v, masks, scale)
    tol_out, tol_lse = ref.tolerance(dtype_name)
    assert np.isfinite(out.astype(np.float64)).all(), "every output element must be written and finite"
    vmax = np.abs(v.astype(np.float64)).max()
    assert np.abs(out.astype(np.float64) - want_out).max() <= tol_out * vmax
    if lse is not None:
        assert np.abs(lse - want_lse).max() <= tol_lse


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_sample_attention_matches_spec(rng, shape, backend):
    q, k, v = _inputs(rng, shape)
    out = np.full((q.shape[0], q.shape[1], q.shape[2], q.shape[3]), np.nan, dtype=np.float32)
    got, lse, sel = sampleattn.sample_attention(q, k, v, **CONFIG, out=out, return_lse=True, return_selection=True,
                                                backend=backend)
    assert got is out, "out= must be written in place"
    assert isinstance(lse, np.ndarray) and lse.dtype == np.float32 and lse.shape == (q.shape[0], q.shape[2], q.shape[1])
    exact = _check_selection(sel, q, k, CONFIG)
    assert exact >= 0.75, "most heads must match the SPEC's selection exactly"
    _check_attention(out, lse, q, k, v, _lib_masks(sel, q.shape[1], k.shape[1]), "f32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_options_sinks_dense_tail_scale(rng, backend):
    shape = (1, 120, 150, 4, 2, 64, "bhsd")
    q, k, v = _inputs(rng, shape)
    config = dict(CONFIG, sink_tokens=5, dense_tail=7)
    out, lse, sel = sampleattn.sample_attention(q, k, v, **config, scale=0.07, return_lse=True,
                                                return_selection=True, backend=backend)
    assert sel.dense_tail == 7
    for b in range(sel.batch):
        for h in range(sel.heads):
            assert set(range(5)) <= set(sel.columns(b, h).tolist())
    _check_selection(sel, q, k, config, scale=0.07)
    _check_attention(out, lse, q, k, v, _lib_masks(sel, 120, 150), "f32", scale=0.07)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_head_density(rng, backend):
    # Half the heads see uniform attention (q = 0), half sharp attention: at alpha 0.95 the first keep ~100 of
    # 130 columns (over 90% of their entries) and, at dense_head_density 0.6, run dense (every column); the
    # others (~20 columns, ~25% of the entries) keep the paper's selection.
    shape = (1, 100, 130, 4, 2, 64, "bshd")
    q, k, v = _inputs(rng, shape)
    q[:, :, :2] = 0.0
    q[:, :, 2:] *= 4.0
    config = dict(CONFIG, alpha=0.95, dense_head_density=0.6)
    out, sel = sampleattn.sample_attention(q, k, v, **config, return_selection=True, backend=backend)
    kept = [len(sel.columns(0, h)) for h in range(4)]
    assert kept[:2] == [130, 130] and max(kept[2:]) < 130, kept
    _check_selection(sel, q, k, config)
    _check_attention(out, None, q, k, v, _lib_masks(sel, 100, 130), "f32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_causal(rng, backend):
    shape = (1, 80, 80, 4, 4, 64, "bshd")
    q, k, v = _inputs(rng, shape)
    out, sel = sampleattn.sample_attention(q, k, v, **CONFIG, causal=False, return_selection=True, backend=backend)
    assert not sel.causal
    _check_selection(sel, q, k, CONFIG, causal=False)
    _check_attention(out, None, q, k, v, _lib_masks(sel, 80, 80), "f32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_one_is_dense(rng, backend):
    q, k, v = _inputs(rng, (2, 64, 90, 8, 2, 64, "slice"))
    out = sampleattn.sample_attention(q, k, v, alpha=1.0, backend=backend)
    want, _ = ref.dense(q, k, v)
    assert np.abs(out - want).max() <= ref.tolerance("f32")[0] * np.abs(v).max()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
def test_dense_attention(rng, backend, causal):
    q, k, v = _inputs(rng, (2, 31, 97, 4, 1, 64, "bhsd"))
    out, lse = sampleattn.dense_attention(q, k, v, causal=causal, return_lse=True, backend=backend)
    want, want_lse = ref.dense(q, k, v, causal=causal)
    assert np.abs(out - want).max() <= ref.tolerance("f32")[0] * np.abs(v).max()
    assert np.abs(lse - want_lse).max() <= ref.tolerance("f32")[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_select_then_attend_and_hand_made_selection(rng, backend):
    q, k, v = _inputs(rng, (1, 50, 50, 2, 1, 64, "bshd"))
    sel = sampleattn.select(q, k, **CONFIG, backend=backend)
    out1 = sampleattn.attend(q, k, v, sel, backend=backend)
    out2 = sampleattn.sample_attention(q, k, v, **CONFIG, backend=backend)
    np.testing.assert_array_equal(out1, out2)

    # A hand-made selection: head 0 keeps columns 0 and 10 with window 3; head 1 keeps nothing, window 1.
    hand = sampleattn.Selection(1, 2, 50, 50, window=np.array([3, 1]), offsets=np.array([0, 2, 2]),
                                indices=np.array([0, 10], dtype=np.int32))
    assert hand.kept_columns.tolist() == [[2, 0]]
    assert hand.kept_entries[0, 1] == 50  # the diagonal only
    out, lse = sampleattn.attend(q, k, v, hand, return_lse=True, backend=backend)
    _check_attention(out, lse, q, k, v, _lib_masks(hand, 50, 50), "f32")


def test_float16_inputs(rng):
    q, k, v = _inputs(rng, (1, 97, 97, 4, 2, 64, "bhsd"), dtype=np.float16)
    out, lse, sel = sampleattn.sample_attention(q, k, v, **CONFIG, return_lse=True, return_selection=True)
    assert out.dtype == np.float16
    _check_attention(out, lse, q, k, v, _lib_masks(sel, 97, 97), "f16")


def test_read_only_inputs_and_stats_views(rng):
    q, k, v = _inputs(rng, (1, 40, 40, 2, 2, 64, "bshd"))
    for x in (q, k, v):
        x.setflags(write=False)
    out, sel = sampleattn.sample_attention(q, k, v, return_selection=True)
    assert out.flags.writeable
    assert not sel.indices.flags.writeable
    assert sel.offsets[-1] == sel.indices.size
    assert sel.kept_columns.shape == (1, 2) and sel.head_density.shape == (1, 2)
    assert 0 < sel.density <= 1 and sel.min_sampled_coverage >= 0.95 - 1e-6
    columns = sel.columns(0, 1)
    del sel  # the view keeps the selection alive
    assert np.all(np.diff(columns) > 0)


def test_exact_metrics(rng):
    q, k, v = _inputs(rng, (1, 64, 64, 2, 1, 64, "bshd"))
    _, full = sampleattn.sample_attention(q, k, v, alpha=1.0, return_selection=True)
    m = sampleattn.exact_metrics(q, k, v, full)
    assert np.all(m["rows"] == 64)
    np.testing.assert_allclose(m["min_kept_mass"], 1.0, atol=1e-9)
    assert m["rel_error"].max() < 1e-9
    _, sparse = sampleattn.sample_attention(q, k, v, **CONFIG, return_selection=True)
    m = sampleattn.exact_metrics(q, k, v, sparse, rows=[0, 31, 63])
    assert np.all(m["rows"] == 3)
    assert np.all(m["min_kept_mass"] <= m["mean_kept_mass"] + 1e-12)
    assert np.all(m["mean_kept_mass"] <= 1.0 + 1e-9)


class _DLPackOnly:
    """A tensor that implements nothing but the DLPack protocol (no shape, no dtype, no array namespace)."""

    def __init__(self, array, device=None):
        self._array, self._device = array, device

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device if self._device is not None else self._array.__dlpack_device__()


def test_bare_dlpack_producers(rng):
    # "Any DLPack tensor": imported with numpy.from_dlpack (no copy), outputs come back as NumPy arrays.
    q, k, v = _inputs(rng, (1, 97, 97, 4, 2, 64, "bhsd"))
    dq, dk, dv = _DLPackOnly(q), _DLPackOnly(k), _DLPackOnly(v)
    out, lse, sel = sampleattn.sample_attention(dq, dk, dv, **CONFIG, return_lse=True, return_selection=True)
    assert isinstance(out, np.ndarray) and out.shape == q.shape and isinstance(lse, np.ndarray)
    assert sel.density < 1.0
    _check_attention(out, lse, q, k, v, _lib_masks(sel, 97, 97), "f32")
    got = sampleattn.attend(dq, dk, dv, sampleattn.select(dq, dk, **CONFIG))
    np.testing.assert_array_equal(got, out)
    dense = sampleattn.dense_attention(dq, dk, dv)
    want, _ = ref.dense(q, k, v)
    assert np.abs(dense - want).max() <= ref.tolerance("f32")[0] * np.abs(v).max()
    # out= a bare producer: written in place, and the caller's object comes back.
    buffer = np.full(q.shape, np.nan, dtype=np.float32)
    target = _DLPackOnly(buffer)
    assert sampleattn.dense_attention(dq, dk, dv, out=target) is target
    np.testing.assert_array_equal(buffer, dense)
    with pytest.raises(ValueError, match=r"q lives on DLPack device type 14, which sampleattn does not support"):
        sampleattn.sample_attention(_DLPackOnly(q, device=(14, 0)), dk, dv)
