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
