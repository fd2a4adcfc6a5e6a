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


def test_requires_grad_inputs_and_out_param(rng):
    q, k, v = _qkv(rng)
    q.requires_grad_(True)
    out = torch.full(q.shape, float("nan"))
    got = sampleattn.sample_attention(q, k, v, out=out)
    assert got is out and torch.isfinite(out).all() and not out.requires_grad


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
