"""Every way to call the package wrongly raises ValueError (sampleattn.Error for the library's own checks)
or TypeError, with a message that names the argument and the values, and nothing is written."""

from __future__ import annotations

import numpy as np
import pytest

import sampleattn


def _qkv(rng, sq=8, sk=8, hq=4, hkv=2, d=16, dtype=np.float32):
    return (rng.standard_normal((1, sq, hq, d)).astype(dtype), rng.standard_normal((1, sk, hkv, d)).astype(dtype),
            rng.standard_normal((1, sk, hkv, d)).astype(dtype))


def test_error_is_a_value_error():
    assert issubclass(sampleattn.Error, ValueError)


@pytest.mark.parametrize("fn", ["sample_attention", "dense_attention"])
def test_not_a_tensor(rng, fn):
    q, k, v = _qkv(rng)
    with pytest.raises(TypeError, match=r"q must be a DLPack tensor .* not list"):
        getattr(sampleattn, fn)(q.tolist(), k, v)
    with pytest.raises(TypeError, match=r"v must be a DLPack tensor .* not NoneType"):
        getattr(sampleattn, fn)(q, k, None)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int8, np.bool_, np.complex64])
def test_unsupported_dtype(rng, dtype):
    q, k, v = _qkv(rng)
    with pytest.raises(TypeError, match=r"q\.dtype \(\w+\) is not supported: use float32, float16 or bfloat16"):
        sampleattn.sample_attention(q.astype(dtype), k, v)
    with pytest.raises(TypeError, match=r"k\.dtype"):
        sampleattn.select(q, k.astype(dtype))


def test_wrong_rank(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match=r"4 dimensions \[batch, seq, heads, head_dim\].*\(8, 4, 16\)"):
        sampleattn.sample_attention(q[0], k, v)
    with pytest.raises(ValueError, match=r"4 dimensions"):
        sampleattn.dense_attention(q, k, v[..., None])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q, k, v: (q, k.astype(np.float16), v), r"k\.dtype \(float16\) must equal q\.dtype \(float32\)"),
        (lambda q, k, v: (q, k, v.astype(np.float16)), r"v\.dtype \(float16\) must equal q\.dtype \(float32\)"),
        (lambda q, k, v: (q, k[..., :8], v[..., :8]), r"k\.head_dim \(8\) must equal q\.head_dim \(16\)"),
        (lambda q, k, v: (q[:, :, :3], k, v), r"q\.heads \(3\) must be a multiple of k\.heads \(2\)"),
        (lambda q, k, v: (q, k[:, :5], v[:, :5]), r"q\.seq \(8\) must be <= k\.seq \(5\)"),
        (lambda q, k, v: (np.concatenate([q, q]), k, v), r"k\.batch \(1\) must equal q\.batch \(2\)"),
        (lambda q, k, v: (q, k, v[:, :7]), r"v\.shape"),
        (lambda q, k, v: (q[:, :0], k, v), r"q\.seq \(0\) must be > 0"),
    ],
    ids=["k_dtype", "v_dtype", "head_dim", "heads", "seq", "batch", "v_shape", "empty"],
)
def test_library_shape_checks(rng, change, message):
    q, k, v = change(*_qkv(rng))
    for fn in (sampleattn.sample_attention, sampleattn.dense_attention):
        with pytest.raises(sampleattn.Error, match=message):
            fn(q, k, v)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(alpha=0.0), r"config\.alpha \(0\) must be in \(0, 1\]"),
        (dict(alpha=1.5), r"config\.alpha \(1\.5\) must be in \(0, 1\]"),
        (dict(sample_ratio=0.0), r"config\.sample_ratio \(0\)"),
        (dict(window_ratio=-0.1), r"config\.window_ratio \(-0\.1\)"),
        (dict(min_window=-1), r"config\.min_window \(-1\) must be >= 0"),
        (dict(sink_tokens=-2), r"config\.sink_tokens \(-2\) must be >= 0"),
        (dict(dense_tail=-3), r"config\.dense_tail \(-3\) must be >= 0"),
        (dict(dense_head_density=0.0), r"config\.dense_head_density \(0\) must be in \(0, 1\]"),
        (dict(dense_head_density=1.5), r"config\.dense_head_density \(1\.5\) must be in \(0, 1\]"),
        (dict(scale=0.0), r"params\.scale \(0\) must be finite and > 0"),
        (dict(scale=float("nan")), r"params\.scale \(nan\) must be finite and > 0"),
        (dict(num_threads=-1), r"options\.num_threads \(-1\) must be in \[0, 4096\]"),
    ],
    ids=lambda x: str(x) if isinstance(x, dict) else "",
)
def test_bad_config(rng, kwargs, message):
    q, k, v = _qkv(rng)
    out = np.full(q.shape, np.nan, dtype=np.float32)
    with pytest.raises(sampleattn.Error, match=message):
        sampleattn.sample_attention(q, k, v, out=out, **kwargs)
    assert np.isnan(out).all(), "nothing may be written when the call is rejected"


def test_non_finite_input_is_rejected(rng):
    q, k, v = _qkv(rng)
    k[0, 3, 1, 5] = np.inf
    with pytest.raises(sampleattn.Error, match=r"k\[0, 3, 1, 5\] is inf"):
        sampleattn.sample_attention(q, k, v)


def test_bad_backend(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match=r"backend \('gpu'\) must be one of 'auto', 'cpu', 'cpu_reference', 'cuda'"):
        sampleattn.sample_attention(q, k, v, backend="gpu")
    message = r"backend cuda needs CUDA tensors" if sampleattn.built_with_cuda else r"no CUDA backend"
    with pytest.raises(sampleattn.Error, match=message):
        sampleattn.dense_attention(q, k, v, backend="cuda")


def test_bad_out(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(sampleattn.Error, match=r"out"):
        sampleattn.sample_attention(q, k, v, out=np.empty((1, 8, 4, 8), dtype=np.float32))
    frozen = np.empty(q.shape, dtype=np.float32)
    frozen.setflags(write=False)
    with pytest.raises(ValueError, match=r"out must be a writable"):
        sampleattn.sample_attention(q, k, v, out=frozen)


def test_bad_selection(rng):
    q, k, v = _qkv(rng)
    sel = sampleattn.select(q, k)
    with pytest.raises(sampleattn.Error, match=r"selection shape \(batch 1, heads 4, seq_q 8, seq_k 8\) does not match"):
        sampleattn.attend(q[:, :4], k, v, sel)
    with pytest.raises(TypeError, match=r"selection must be a sampleattn\.Selection, not dict"):
        sampleattn.attend(q, k, v, {})
    with pytest.raises(sampleattn.Error, match=r"selection\.indices of head 0 must be sorted, unique"):
        sampleattn.Selection(1, 1, 4, 4, window=np.array([1]), offsets=np.array([0, 2]),
                             indices=np.array([3, 1], dtype=np.int32))
    with pytest.raises(sampleattn.Error, match=r"selection\.window\[0\] \(0\) must be >= 1"):
        sampleattn.Selection(1, 1, 4, 4, window=np.array([0]), offsets=np.array([0, 0]),
                             indices=np.array([], dtype=np.int32))
    with pytest.raises(IndexError, match=r"columns\(0, 9\)"):
        sel.columns(0, 9)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(min_window=2**64), ValueError, r"min_window \(18446744073709551616\) is out of range"),
        (dict(sink_tokens=2**63), ValueError, r"sink_tokens \(9223372036854775808\) is out of range"),
        (dict(dense_tail=-(2**70)), ValueError, r"dense_tail \(-1180591620717411303424\) is out of range"),
        (dict(num_threads=2**40), ValueError, r"num_threads \(1099511627776\) is out of range"),
        (dict(min_window=1.5), ValueError, r"min_window \(1\.5\) must be an integer"),
        (dict(min_window="64"), TypeError, r"min_window must be an integer, not str"),
        (dict(alpha="0.9"), TypeError, r"alpha must be a real number, not str"),
        (dict(sample_ratio=None), TypeError, r"sample_ratio must be a real number, not NoneType"),
        (dict(scale=10**400), ValueError, r"scale \(1000.*\) is out of range for a float"),
    ],
    ids=lambda x: str(x)[:40] if isinstance(x, dict) else "",
)
def test_arguments_nanobind_would_reject_are_named(rng, kwargs, error, message):
    # Values that no C++ parameter can hold: named here, not nanobind's "incompatible function arguments".
    q, k, v = _qkv(rng)
    out = np.full(q.shape, np.nan, dtype=np.float32)
    with pytest.raises(error, match=message):
        sampleattn.sample_attention(q, k, v, out=out, **kwargs)
    assert np.isnan(out).all()
    if "num_threads" in kwargs or "scale" in kwargs:
        with pytest.raises(error, match=message):
            sampleattn.dense_attention(q, k, v, **kwargs)
    else:
        with pytest.raises(error, match=message):
            sampleattn.select(q, k, **kwargs)
    # Integral floats and NumPy scalars are ordinary values.
    got = sampleattn.sample_attention(q, k, v, min_window=np.int64(4), num_threads=2.0, alpha=np.float32(1.0))
    np.testing.assert_allclose(got, sampleattn.dense_attention(q, k, v), atol=2e-6, rtol=0)


def test_numpy_dtypes_nanobind_cannot_read_are_named(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(TypeError, match=r"q\.dtype \(>f4\) has non-native byte order.*astype"):
        sampleattn.sample_attention(q.astype(">f4"), k, v)
    with pytest.raises(TypeError, match=r"k\.dtype \(>f2\) has non-native byte order"):
        sampleattn.select(q.astype(np.float16), k.astype(">f2"))
    with pytest.raises(TypeError, match=r"q\.dtype \(object\) is not supported: use float32, float16 or bfloat16"):
        sampleattn.dense_attention(q.astype(object), k, v)
    structured = np.zeros(q.shape, dtype=[("x", np.float32)])
    with pytest.raises(TypeError, match=r"v\.dtype \(\[\('x', '<f4'\)\]\) is not supported"):
        sampleattn.dense_attention(q, k, structured[:, :, :2])
    with pytest.raises(TypeError, match=r"out\.dtype \(>f4\) has non-native byte order"):
        sampleattn.dense_attention(q, k, v, out=np.zeros(q.shape, dtype=">f4"))


def test_exact_metrics_rows(rng):
    q, k, v = _qkv(rng, sq=64, sk=64)
    sel = sampleattn.select(q, k, alpha=0.1)
    # An empty row set has no minimum: it must not report a perfect CRA of 1 and error 0.
    with pytest.raises(sampleattn.Error, match=r"rows is empty"):
        sampleattn.exact_metrics(q, k, v, sel, rows=[])
    with pytest.raises(sampleattn.Error, match=r"rows is empty"):
        sampleattn.exact_metrics(q, k, v, sel, rows=np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match=r"rows\[1\] \(18446744073709551616\) is out of range"):
        sampleattn.exact_metrics(q, k, v, sel, rows=[0, 2**64])
    with pytest.raises(TypeError, match=r"rows must be a sequence of query row indices, not int"):
        sampleattn.exact_metrics(q, k, v, sel, rows=5)
    with pytest.raises(TypeError, match=r"selection must be a sampleattn\.Selection, not dict"):
        sampleattn.exact_metrics(q, k, v, {}, rows=[3])
    # A valid row set: the kept mass of row 63 against an fp64 computation of its own.
    m = sampleattn.exact_metrics(q, k, v, sel, rows=[63])
    assert np.all(m["rows"] == 1)
    s = (q[0, 63, 0].astype(np.float64) @ k[0, :, 0].astype(np.float64).T) / 4.0
    p = np.exp(s - s.max())
    p /= p.sum()
    cols = set(sel.columns(0, 0).tolist()) | set(range(64 - int(sel.window[0, 0]), 64))
    assert m["min_kept_mass"][0, 0] == pytest.approx(p[sorted(cols)].sum(), abs=1e-9)
