"""The NumPy path of the package against the independent fp64 SPEC implementation (spec_reference.py):
the selection (window, columns, coverage, density), the sparse output and log-sum-exp, dense attention,
hand-made selections, on awkward shapes, GQA, Sq < Sk, non-contiguous strides, both CPU backends."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import sampleattn
import spec_reference as ref
from inputs import strided
from selection_check import check_selection as _check_selection

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


def _spec_metrics(q, k, v, sel, rows, scale=None, group_of=None):
    """exact_metrics recomputed in fp64 from the SPEC: per (batch, query head), over `rows`, the dense causal
    probabilities P (row r at key position Sk - Sq + r), the mass s_r = sum of P over the selection's mask (band,
    columns, dense tail), the renormalised sparse output O~ = (P * mask) V / s_r and the dense O = P V; returns
    min_r s_r, mean_r s_r and ||O~ - O||_F / ||O||_F over the rows, each [batch, q_heads]. group_of(h) is the KV
    head that query head h reads (SPEC: h // (Hq / Hkv))."""
    batch, seq_q, q_heads, d = q.shape
    seq_k, group = k.shape[1], q_heads // k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    group_of = group_of or (lambda h: h // group)
    rows = np.asarray(rows, dtype=np.int64)
    vis = ref.visible(seq_q, seq_k, sel.causal)[rows]
    result = {name: np.zeros((batch, q_heads)) for name in ("min_kept_mass", "mean_kept_mass", "rel_error")}
    for b in range(batch):
        for h in range(q_heads):
            g = group_of(h)
            s = (q[b, rows, h].astype(np.float64) @ k[b, :, g].astype(np.float64).T) * scale
            p, _ = ref.softmax_rows(s, vis)
            mask = ref.mask_of(seq_q, seq_k, int(sel.window[b, h]), sel.columns(b, h), sel.causal,
                               sel.dense_tail)[rows]
            kept = (p * mask).sum(axis=1)
            vv = v[b, :, g].astype(np.float64)
            dense_o = p @ vv
            sparse_o = ((p * mask) @ vv) / kept[:, None]
            result["min_kept_mass"][b, h] = kept.min()
            result["mean_kept_mass"][b, h] = kept.mean()
            result["rel_error"][b, h] = np.linalg.norm(sparse_o - dense_o) / np.linalg.norm(dense_o)
    return result


@pytest.mark.parametrize("shape, config", [
    ((2, 96, 96, 4, 2, 32, "bhsd"), dict(CONFIG, alpha=0.6)),
    ((1, 70, 130, 8, 2, 64, "slice"), dict(CONFIG, alpha=0.7, sink_tokens=3, dense_tail=5)),
], ids=["gqa4-2", "gqa8-2-chunked-sinks-tail"])
def test_exact_metrics_against_spec(rng, shape, config):
    # exact_metrics (CRA = min kept mass, mean kept mass, relative error) against an fp64 recomputation from the
    # SPEC, per head, on a sparse selection (density well under 1) over many rows, with GQA (query heads h and
    # h + 1 share KV head h // group, so a wrong head mapping changes the numbers) and, in the second case,
    # chunked prefill (Sq < Sk), sinks and a dense tail.
    q, k, v = _inputs(rng, shape)
    batch, seq_q, _, q_heads, kv_heads = shape[:5]
    _, sel = sampleattn.sample_attention(q, k, v, **config, return_selection=True)
    assert sel.density < 0.8 and sel.dense_tail == config.get("dense_tail", 0)
    explicit = [0, 1, 7, seq_q // 3, seq_q // 2, seq_q - 6, seq_q - 2, seq_q - 1]
    default_rows = [(i + 1) * seq_q // min(64, seq_q) - 1 for i in range(min(64, seq_q))]  # num_rows 64
    ten_rows = [(i + 1) * seq_q // 10 - 1 for i in range(10)]
    for rows, kwargs in ((explicit, dict(rows=explicit)), (default_rows, {}), (ten_rows, dict(num_rows=10))):
        got = sampleattn.exact_metrics(q, k, v, sel, **kwargs)
        want = _spec_metrics(q, k, v, sel, rows)
        assert got["rows"].shape == (batch, q_heads) and np.all(got["rows"] == len(rows))
        for name in ("min_kept_mass", "mean_kept_mass", "rel_error"):
            assert got[name].shape == (batch, q_heads) and got[name].dtype == np.float64
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-9, err_msg=f"{name}, rows {rows}")
        # Not vacuous: the rows keep different masses, so the minimum is below the mean, and mass is dropped.
        assert np.all(want["min_kept_mass"] < want["mean_kept_mass"] - 1e-3)
        assert np.all(want["mean_kept_mass"] < 1 - 1e-3) and np.all(want["rel_error"] > 1e-3)
    # ... and the query-to-KV-head mapping matters on these inputs (h % kv_heads would read other KV heads).
    wrong = _spec_metrics(q, k, v, sel, explicit, group_of=lambda h: h % kv_heads)
    assert np.abs(wrong["rel_error"] - _spec_metrics(q, k, v, sel, explicit)["rel_error"]).max() > 1e-3


# One CPU call per kernel set, in a fresh process (the variable is read once per process): out, lse and dense out.
_RUN_WITH_KERNELS = """
import sys
import numpy as np
import sampleattn
rng = np.random.default_rng(7)
q = (rng.standard_normal((1, 300, 8, 72)) * 2).astype(np.float16)
k = rng.standard_normal((1, 400, 2, 72)).astype(np.float16)
v = rng.standard_normal((1, 400, 2, 72)).astype(np.float16)
out, lse = sampleattn.sample_attention(q, k, v, alpha=1.0, return_lse=True, backend="cpu")
dense = sampleattn.dense_attention(q, k, v, backend="cpu")
np.save(sys.stdout.buffer, np.concatenate([out.astype(np.float32).ravel(), lse.ravel(), dense.astype(np.float32).ravel()]))
"""


def _run_with_kernels(name):
    env = dict(os.environ, SAMPLEATTN_CPU_KERNELS=name)
    return subprocess.run([sys.executable, "-c", _RUN_WITH_KERNELS], env=env, capture_output=True, timeout=300)


def test_cpu_kernel_choice_keeps_attention_bit_identical():
    """SAMPLEATTN_CPU_KERNELS picks the CPU kernel set. The AVX-512 set computes each attention output element
    with the AVX2 set's operations in the same order, so the two give the same bits (alpha = 1 keeps every
    column, so stage 1's summation order cannot change the selection); the portable set is only close. Where
    the CPU lacks AVX-512, both runs use the same set."""
    runs = {name: _run_with_kernels(name) for name in ("avx512", "avx2", "portable")}
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stderr.decode()[-2000:])
    assert runs["avx512"].stdout == runs["avx2"].stdout
    import io

    wide, portable = (np.load(io.BytesIO(runs[c].stdout)) for c in ("avx2", "portable"))
    assert np.isfinite(wide).all() and np.abs(wide - portable).max() <= 2e-3


def test_unknown_cpu_kernel_set_is_named():
    r = _run_with_kernels("avx1024")
    assert r.returncode != 0
    assert "SAMPLEATTN_CPU_KERNELS (avx1024) must be amx, avx512bf16, avx512, avx2 or portable" in r.stderr.decode()
