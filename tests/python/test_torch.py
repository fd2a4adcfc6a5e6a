"""PyTorch CPU tensors through the package and the custom ops: torch in -> torch out, dtypes, strides,
the fp64 SPEC reference, torch.library.opcheck, and torch.compile with fullgraph=True (no graph breaks).
Skipped where torch is not importable."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sampleattn  # noqa: E402
import spec_reference as ref  # noqa: E402
from inputs import peaked  # noqa: E402

CONFIG = dict(alpha=0.8, sample_ratio=0.1, window_ratio=0.05)


def _qkv(rng, batch=1, sq=96, sk=96, hq=4, hkv=2, d=64, dtype=torch.float32, bhsd=True):
    def draw(s, h, scale=1.0):
        if bhsd:  # [batch, heads, seq, dim] buffers, as transformers holds them
            x = torch.from_numpy(rng.standard_normal((batch, h, s, d)) * scale).to(dtype).transpose(1, 2)
        else:
            x = torch.from_numpy(rng.standard_normal((batch, s, h, d)) * scale).to(dtype)
        return x

    return draw(sq, hq, 2.0), draw(sk, hkv), draw(sk, hkv)


def _np64(x):
    return x.detach().to(torch.float64).numpy()


def _masks(sel):
    return [[ref.mask_of(sel.seq_q, sel.seq_k, int(sel.window[b, h]), sel.columns(b, h), sel.causal)
             for h in range(sel.heads)] for b in range(sel.batch)]


@pytest.mark.parametrize("dtype, name", [(torch.float32, "f32"), (torch.float16, "f16"), (torch.bfloat16, "bf16")])
def test_torch_in_torch_out_matches_spec(rng, dtype, name):
    q, k, v = _qkv(rng, dtype=dtype)
    assert not q.is_contiguous()
    out, lse, sel = sampleattn.sample_attention(q, k, v, **CONFIG, return_lse=True, return_selection=True)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == q.shape and out.is_contiguous()
    assert isinstance(lse, torch.Tensor) and lse.dtype == torch.float32 and lse.shape == (1, 4, 96)
    assert sel.density < 1.0
    want, want_lse = ref.attention(_np64(q), _np64(k), _np64(v), _masks(sel), 1.0 / math.sqrt(64))
    tol_out, tol_lse = ref.tolerance(name)
    assert torch.isfinite(out).all()
    assert np.abs(_np64(out) - want).max() <= tol_out * np.abs(_np64(v)).max()
    assert np.abs(lse.numpy() - want_lse).max() <= tol_lse


def test_dense_and_alpha_one_match_sdpa(rng):
    q, k, v = _qkv(rng, sq=40, sk=70)
    dense = sampleattn.dense_attention(q, k, v, causal=False)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(2, 1), v.transpose(1, 2).repeat_interleave(2, 1)
    ).transpose(1, 2)
    torch.testing.assert_close(dense, sdpa, atol=2e-5, rtol=0)
    q, k, v = _qkv(rng, sq=70, sk=70)
    full = sampleattn.sample_attention(q, k, v, alpha=1.0)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
    ).transpose(1, 2)
    torch.testing.assert_close(full, sdpa, atol=2e-5, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_window_attention_matches_the_spec_band(rng, causal):
    q, k, v = _qkv(rng, batch=2, sq=40, sk=70, hq=4, hkv=2, d=32)
    for window in (1, 9, 200):
        out, lse = sampleattn.window_attention(q, k, v, window, causal=causal, return_lse=True)
        band = ref.band(40, 70, window, causal)
        want, want_lse = ref.attention(_np64(q), _np64(k), _np64(v), [[band] * 4] * 2, 1.0 / math.sqrt(32))
        tol_out, tol_lse = ref.tolerance("f32")
        assert np.abs(_np64(out) - want).max() <= tol_out * np.abs(_np64(v)).max(), window
        assert np.abs(lse.numpy() - want_lse).max() <= tol_lse, window
    with pytest.raises(sampleattn.Error, match=r"window \(0\)"):
        sampleattn.window_attention(q, k, v, 0)


def test_requires_grad_inputs_raise_in_grad_mode(rng):
    # The library has no autograd: a silently detached result would lose the gradients, so the plain functions
    # refuse inputs that require grad while grad mode is on, and run as usual under no_grad / inference_mode.
    q, k, v = _qkv(rng)
    q.requires_grad_(True)
    sel = sampleattn.select(q, k, **CONFIG)  # a host Selection: nothing to differentiate, no error
    for call in (lambda: sampleattn.sample_attention(q, k, v), lambda: sampleattn.dense_attention(q, k, v),
                 lambda: sampleattn.attend(q, k, v, sel)):
        with pytest.raises(RuntimeError, match=r"q requires grad, but sampleattn is inference-only.*torch\.no_grad"):
            call()
    with pytest.raises(RuntimeError, match=r"v requires grad"):
        sampleattn.dense_attention(q.detach(), k, v.clone().requires_grad_(True))
    with pytest.raises(RuntimeError, match=r"out requires grad"):
        sampleattn.dense_attention(q.detach(), k, v, out=torch.zeros(q.shape, requires_grad=True))

    want, _ = ref.dense(_np64(q), _np64(k), _np64(v))
    tol_out, _ = ref.tolerance("f32")
    with torch.no_grad():
        out = torch.full(q.shape, float("nan"))
        got = sampleattn.dense_attention(q, k, v, out=out)
    assert got is out and not out.requires_grad
    assert np.abs(_np64(out) - want).max() <= tol_out * np.abs(_np64(v)).max()
    with torch.inference_mode():
        got = sampleattn.sample_attention(q, k, v, alpha=1.0)
    assert np.abs(_np64(got) - want).max() <= tol_out * np.abs(_np64(v)).max()


def test_custom_op_with_grad_inputs_runs_and_raises_on_backward(rng):
    # The op keeps its contract: forward works on inputs that require grad, backward raises (no formula).
    q, k, v = _qkv(rng)
    q.requires_grad_(True)
    out = torch.ops.sampleattn.sample_attention(q, k, v, 1.0)
    assert out.requires_grad
    want, _ = ref.dense(_np64(q), _np64(k), _np64(v))
    assert np.abs(_np64(out) - want).max() <= ref.tolerance("f32")[0] * np.abs(_np64(v)).max()
    with pytest.raises(RuntimeError, match=r"no autograd formula"):
        out.sum().backward()
    assert q.grad is None


def _neg_view(rng, batch, seq, heads, d):
    """(x, plain): x a float32 view with the negative bit set (the imaginary part of a conjugate), plain the
    same values in an ordinary tensor."""
    real = torch.from_numpy(rng.standard_normal((batch, seq, heads, d))).float()
    imag = torch.from_numpy(rng.standard_normal((batch, seq, heads, d))).float()
    x = torch.complex(real, imag).conj().imag
    assert x.is_neg() and x.dtype == torch.float32
    return x, (-imag).contiguous()


def test_negative_bit_views_are_read_with_their_sign(rng):
    (q, q0), (k, k0), (v, v0) = (_neg_view(rng, 1, 80, h, 64) for h in (4, 2, 2))
    tol_out, tol_lse = ref.tolerance("f32")
    vmax = np.abs(_np64(v0)).max()

    want, _ = ref.dense(_np64(q0), _np64(k0), _np64(v0))
    got = sampleattn.dense_attention(q, k, v)
    assert np.abs(_np64(got) - want).max() <= tol_out * vmax

    out, lse, sel = sampleattn.sample_attention(q, k, v, **CONFIG, return_lse=True, return_selection=True)
    assert sel.density < 1.0
    want, want_lse = ref.attention(_np64(q0), _np64(k0), _np64(v0), _masks(sel), 1.0 / math.sqrt(64))
    assert np.abs(_np64(out) - want).max() <= tol_out * vmax
    assert np.abs(lse.numpy() - want_lse).max() <= tol_lse
    plain = sampleattn.select(q0, k0, **CONFIG)
    for h in range(4):
        np.testing.assert_array_equal(sampleattn.select(q, k, **CONFIG).columns(0, h), plain.columns(0, h))
    got = sampleattn.attend(q, k, v, sel)
    assert np.abs(_np64(got) - want).max() <= tol_out * vmax

    # The custom op (and so the transformers hook) goes through the same resolution.
    got = torch.ops.sampleattn.sample_attention(q, k, v, 0.8, 0.1, 0.05)
    assert np.abs(_np64(got) - want).max() <= tol_out * vmax

    # An output tensor with the negative bit cannot be written correctly: refused.
    with pytest.raises(ValueError, match=r"out has the negative or conjugate bit set"):
        sampleattn.dense_attention(q0, k0, v0, out=_neg_view(rng, 1, 80, 4, 64)[0])


def test_meta_and_sparse_tensors_are_refused_by_name(rng):
    q, k, v = _qkv(rng)
    meta = [x.to("meta") for x in (q, k, v)]
    with pytest.raises(ValueError, match=r"q is on device 'meta', which sampleattn does not support"):
        sampleattn.sample_attention(*meta)
    with pytest.raises(ValueError, match=r"k is on device 'meta'"):
        sampleattn.select(q, meta[1])
    with pytest.raises(TypeError, match=r"v has layout torch\.sparse_coo: only dense \(strided\) tensors"):
        sampleattn.dense_attention(q, k, v.contiguous().to_sparse())
    with pytest.raises(TypeError, match=r"q\.dtype \(float64\) is not supported"):
        sampleattn.sample_attention(q.double(), k, v)


def test_custom_op_matches_eager(rng):
    q, k, v = _qkv(rng)
    eager = sampleattn.sample_attention(q, k, v, **CONFIG, scale=0.1)
    op = torch.ops.sampleattn.sample_attention(q, k, v, 0.8, 0.1, 0.05, 0, True, 0.1)
    torch.testing.assert_close(op, eager, atol=0, rtol=0)
    out, stats = torch.ops.sampleattn.sample_attention_with_stats(q, k, v, 0.8, 0.1, 0.05)
    _, sel = sampleattn.sample_attention(q, k, v, **CONFIG, return_selection=True)
    assert stats.shape == (1, 4, 4) and stats.dtype == torch.float64
    np.testing.assert_allclose(stats[..., 0].numpy(), sel.head_density)
    np.testing.assert_allclose(stats[..., 1].numpy(), sel.sampled_coverage)
    np.testing.assert_array_equal(stats[..., 2].numpy(), sel.kept_columns)
    np.testing.assert_array_equal(stats[..., 3].numpy(), sel.window)


def test_custom_op_errors(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(sampleattn.Error, match=r"config\.alpha \(0\) must be in \(0, 1\]"):
        torch.ops.sampleattn.sample_attention(q, k, v, 0.0)
    with pytest.raises(TypeError, match=r"q\.dtype \(float64\) is not supported"):
        sampleattn.sample_attention(q.double(), k, v)


@pytest.mark.parametrize("op", ["sample_attention", "sample_attention_with_stats"])
def test_opcheck(rng, op):
    q, k, v = _qkv(rng, sq=32, sk=48)
    torch.library.opcheck(getattr(torch.ops.sampleattn, op).default, (q, k, v, 0.9, 0.1, 0.05, 2, True, None),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_window_attention_op(rng):
    q, k, v = _qkv(rng, sq=32, sk=48)
    eager = sampleattn.window_attention(q, k, v, 7, scale=0.1)
    torch.testing.assert_close(torch.ops.sampleattn.window_attention(q, k, v, 7, True, 0.1), eager, atol=0, rtol=0)
    torch.library.opcheck(torch.ops.sampleattn.window_attention.default, (q, k, v, 7, True, None),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    torch._dynamo.reset()
    compiled = torch.compile(lambda q, k, v: torch.ops.sampleattn.window_attention(q * 1.0, k, v, 7) * 2,
                             fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), sampleattn.window_attention(q, k, v, 7) * 2, atol=0, rtol=0)


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(rng, dynamic):
    torch._dynamo.reset()

    def layer(q, k, v):
        out = torch.ops.sampleattn.sample_attention(q * 1.0, k, v, 0.9)
        return out.sum(dim=-1) * 2

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    for sq in (32, 48):
        q, k, v = _qkv(rng, sq=sq, sk=sq)
        torch.testing.assert_close(compiled(q, k, v), layer(q, k, v), atol=0, rtol=0)


def test_torch_compile_inductor(rng):
    torch._dynamo.reset()

    def layer(q, k, v):
        return torch.ops.sampleattn.sample_attention(q, k, v) + 1

    q, k, v = _qkv(rng, sq=16, sk=16, d=16)
    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), layer(q, k, v), atol=1e-6, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_custom_ops_window_ratio_sink_tokens_causal_against_spec(rng, causal):
    # A sequence long enough that window_ratio, not min_window (64), decides the window (ceil(0.1 * 1536) = 154;
    # the default 0.08 would give 123), sinks that stage 2 would not pick, and the causal flag: the ops' output
    # and stats against the fp64 SPEC.
    seq, scale = 1536, 0.25
    config = dict(alpha=0.6, sample_ratio=0.05, window_ratio=0.1, sink_tokens=4)
    q, k, v = peaked(rng, 1, seq, 4, 2, 16)
    want = ref.spec_selections(q, k, causal=causal, scale=scale, **config)
    no_sinks = ref.spec_selections(q, k, causal=causal, scale=scale, **dict(config, sink_tokens=0))
    assert ref.window_size(0.1, 64, seq) == 154 != ref.window_size(0.08, 64, seq)
    args = (config["alpha"], config["sample_ratio"], config["window_ratio"], config["sink_tokens"], causal, scale)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    out = torch.ops.sampleattn.sample_attention(tq, tk, tv, *args)
    out2, stats = torch.ops.sampleattn.sample_attention_with_stats(tq, tk, tv, *args)
    torch.testing.assert_close(out2, out, atol=0, rtol=0)
    for h in range(4):
        w = want[0][h]
        assert set(range(4)) <= set(w.columns.tolist()) and not set(range(4)) & set(no_sinks[0][h].columns.tolist())
        assert stats[0, h, 3].item() == w.window == 154
        assert stats[0, h, 2].item() == len(w.columns)
        assert stats[0, h, 0].item() == pytest.approx(w.density, rel=1e-12)
        assert stats[0, h, 1].item() == pytest.approx(w.coverage, abs=1e-4)
    masks = [[ref.mask_of(seq, seq, w.window, w.columns, causal) for w in row] for row in want]
    expect, _ = ref.attention(q, k, v, masks, scale)
    assert np.abs(_np64(out) - expect).max() <= ref.tolerance("f32")[0] * np.abs(v).max()
    if not causal:  # not vacuous: the causal answer is far from this one
        causal_masks = [[ref.mask_of(seq, seq, w.window, w.columns, True) for w in row] for row in want]
        assert np.abs(ref.attention(q, k, v, causal_masks, scale)[0] - expect).max() > 0.1
