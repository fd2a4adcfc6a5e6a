"""attn_implementation="sample_attention" in Hugging Face transformers, on tiny random-weight Llama, Qwen2
and Mistral models with GQA built from configs: with alpha = 1 the logits equal SDPA's; masks, short
prompts and decoding go to SDPA; the per-layer stats say what ran. Skipped without torch or transformers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sampleattn  # noqa: E402
import sampleattn.transformers as sat  # noqa: E402

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)


def _config(family, **overrides):
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "mistral": transformers.MistralConfig}[family]
    extra = {"sliding_window": None} if family in ("mistral", "qwen2") else {}
    extra.update(overrides)
    return cls(**TINY, **extra)


@pytest.fixture(autouse=True)
def registered():
    saved = sat.settings()
    sat.register(min_seq_len=0, alpha=1.0)
    sat.reset_stats()
    yield
    sat.configure(**saved)


def _pair(config):
    """The same random weights under sdpa and under sample_attention."""
    torch.manual_seed(0)
    dense = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    sparse = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sample_attention").eval()
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def _ids(rng, batch, seq):
    return torch.from_numpy(rng.integers(0, TINY["vocab_size"], (batch, seq)))


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_from_config_alpha_one_matches_sdpa(rng, family):
    dense, sparse = _pair(_config(family))
    assert sparse.config._attn_implementation == "sample_attention"
    ids = _ids(rng, 2, 150)
    with torch.no_grad():
        want = dense(ids, output_hidden_states=True)
        got = sparse(ids, output_hidden_states=True)
    for a, b in zip(want.hidden_states, got.hidden_states):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.logits, want.logits, atol=2e-5, rtol=1e-5)
    stats = sat.last_stats()
    assert sorted(stats) == [0, 1]
    for layer in stats.values():
        assert layer.path == "sample_attention" and layer.reason == ""
        assert layer.density.shape == (2, 4) and np.all(layer.density == 1.0)
        assert np.all(layer.sampled_coverage >= 1.0 - 1e-6)
        assert np.all(layer.kept_columns == 150)


def test_from_pretrained(rng, tmp_path):
    dense, _ = _pair(_config("llama"))
    dense.save_pretrained(tmp_path)
    sparse = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sample_attention").eval()
    assert sparse.config._attn_implementation == "sample_attention"
    ids = _ids(rng, 1, 120)
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids).logits, dense(ids).logits, atol=2e-5, rtol=1e-5)
    assert sat.summary()["sample_attention_layers"] == 2


def test_sparse_run_reports_what_was_skipped(rng):
    sat.configure(alpha=0.5, sample_ratio=0.1, window_ratio=0.05)
    dense, sparse = _pair(_config("qwen2"))
    ids = _ids(rng, 1, 200)
    with torch.no_grad():
        sparse(ids)
    summary = sat.summary()
    assert summary["sample_attention_layers"] == 2 and summary["sdpa_layers"] == 0
    assert summary["mean_density"] < 1.0
    assert summary["min_sampled_coverage"] >= 0.5 - 1e-6
    for layer in sat.last_stats().values():
        assert layer.seq_q == layer.seq_k == 200 and layer.q_heads == 4
        assert np.all(layer.window == 64)  # max(min_window 64, ceil(0.05 * 200))


def test_dense_head_density_runs_every_head_dense(rng):
    # alpha 0.5 alone skips entries; with dense_head_density 0.01 every head reaches it, keeps every column and
    # so equals dense attention (SDPA) up to rounding, and the stats say so.
    sat.configure(alpha=0.5, sample_ratio=0.1, window_ratio=0.05, dense_head_density=0.01)
    dense, sparse = _pair(_config("llama"))
    ids = _ids(rng, 1, 150)
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids).logits, dense(ids).logits, atol=2e-5, rtol=1e-5)
    summary = sat.summary()
    assert summary["sample_attention_layers"] == 2 and summary["mean_density"] == 1.0
    for layer in sat.last_stats().values():
        assert np.all(layer.kept_columns == 150)


def test_padding_mask_falls_back_to_sdpa(rng):
    dense, sparse = _pair(_config("llama"))
    ids = _ids(rng, 2, 80)
    mask = torch.ones(2, 80, dtype=torch.long)
    mask[0, :11] = 0  # left padding
    sat.configure(alpha=0.3)  # a mask that the sparse path would ignore would change the logits
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids, attention_mask=mask).logits, dense(ids, attention_mask=mask).logits,
                                   atol=0, rtol=0)
    stats = sat.last_stats()
    assert {s.path for s in stats.values()} == {"sdpa"}
    assert {s.reason for s in stats.values()} == {"attention_mask"}


def test_short_prompts_and_decoding_use_sdpa(rng):
    sat.configure(min_seq_len=100, alpha=0.3)
    dense, sparse = _pair(_config("mistral"))
    short = _ids(rng, 1, 60)
    with torch.no_grad():
        torch.testing.assert_close(sparse(short).logits, dense(short).logits, atol=0, rtol=0)
    assert {s.reason for s in sat.last_stats().values()} == {"short"}

    sat.configure(alpha=1.0)
    prompt = _ids(rng, 1, 120)
    with torch.no_grad():
        want = dense.generate(prompt, max_new_tokens=6, do_sample=False)
        got = sparse.generate(prompt, max_new_tokens=6, do_sample=False)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert {s.reason for s in sat.last_stats().values()} == {"decode"}
    prefill = sat.last_stats(prefill=True)
    assert {s.path for s in prefill.values()} == {"sample_attention"}
    assert all(s.seq_q == 120 for s in prefill.values())


def test_sliding_window_mask_is_honoured(rng):
    dense, sparse = _pair(_config("mistral", sliding_window=16))
    sat.configure(alpha=0.3)
    ids = _ids(rng, 1, 64)
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids).logits, dense(ids).logits, atol=0, rtol=0)
    assert {s.path for s in sat.last_stats().values()} == {"sdpa"}


class _Module(torch.nn.Module):
    def __init__(self, layer_idx=0, groups=2):
        super().__init__()
        self.layer_idx, self.num_key_value_groups, self.is_causal = layer_idx, groups, True


def _heads(rng, b, h, s, d, scale=1.0):
    return torch.from_numpy(rng.standard_normal((b, h, s, d)) * scale).float()


def test_attention_function_against_sdpa(rng):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = _Module()
    q, k, v = _heads(rng, 2, 8, 130, 64, 3.0), _heads(rng, 2, 4, 130, 64), _heads(rng, 2, 4, 130, 64)
    got, weights = sat.sample_attention_forward(module, q, k, v, None, scaling=0.1)
    want, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.1)
    assert weights is None and got.shape == (2, 130, 8, 64)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)

    # With alpha < 1 the function is exactly sampleattn.sample_attention on the [batch, seq, heads, dim] views.
    sat.configure(alpha=0.7, sample_ratio=0.1)
    got, _ = sat.sample_attention_forward(module, q, k, v, None)
    direct = sampleattn.sample_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), alpha=0.7,
                                         sample_ratio=0.1)
    torch.testing.assert_close(got, direct, atol=0, rtol=0)
    assert sat.last_stats()[0].mean_density < 1.0


def test_attention_function_masks_and_alignment(rng):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    sat.configure(alpha=0.3)
    module = _Module()
    q, k, v = _heads(rng, 1, 8, 40, 32), _heads(rng, 1, 4, 40, 32), _heads(rng, 1, 4, 40, 32)
    mask = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(1)) > 0.3
    mask |= torch.eye(40, dtype=torch.bool)
    got, _ = sat.sample_attention_forward(module, q, k, v, mask)
    want, _ = sdpa_attention_forward(module, q, k, v, mask)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert sat.last_stats()[0].reason == "attention_mask"

    got, _ = sat.sample_attention_forward(module, q, k, v, None, sliding_window=8)
    assert sat.last_stats()[0].reason == "sliding_window"
    with pytest.raises(ValueError, match="softcap"):  # SDPA refuses it too: never approximated away
        sat.sample_attention_forward(module, q, k, v, None, softcap=30.0)
    assert sat.last_stats()[0].reason == "softcap"

    # No mask and seq_k > seq_q (a prefill into a static cache): SDPA's is_causal aligns top-left, so query i
    # sees keys 0..i; the cache's empty tail (here: garbage) must not leak in.
    sat.configure(alpha=1.0)
    k_tail, v_tail = _heads(rng, 1, 4, 64, 32), _heads(rng, 1, 4, 64, 32)
    k_tail[:, :, :40], v_tail[:, :, :40] = k, v
    got, _ = sat.sample_attention_forward(module, q, k_tail, v_tail, None)
    want, _ = sdpa_attention_forward(module, q, k, v, None)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_configure_validates():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['alpah'\]"):
        sat.configure(alpah=0.9)
    with pytest.raises(ValueError, match=r"alpha \(0\) must be in \(0, 1\]"):
        sat.configure(alpha=0)
    with pytest.raises(ValueError, match=r"min_seq_len \(-1\) must be >= 0"):
        sat.configure(min_seq_len=-1)
    with pytest.raises(ValueError, match=r"dense_head_density \(0\) must be in \(0, 1\]"):
        sat.configure(dense_head_density=0)
    with pytest.raises(ValueError, match=r"dense_head_density \(1\.5\) must be in \(0, 1\]"):
        sat.configure(dense_head_density=1.5)
    assert sat.settings()["min_seq_len"] == 0


def test_compiled_model_fullgraph(rng):
    torch._dynamo.reset()
    dense, sparse = _pair(_config("llama"))
    ids = _ids(rng, 1, 90)
    compiled = torch.compile(sparse, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids).logits, dense(ids).logits, atol=2e-5, rtol=1e-5)
