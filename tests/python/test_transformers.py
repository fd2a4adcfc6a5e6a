"""attn_implementation="sample_attention" in Hugging Face transformers, on tiny random-weight Llama, Qwen2,
Mistral (and GPT-OSS, attention sinks) models with GQA built from configs: with alpha = 1 the logits equal
SDPA's; on a model with peaked attention the sparse layers stay within the SPEC's bound of what they drop;
masks, short prompts, decoding and float64 go to SDPA, sinks to the model's eager attention; the per-layer
stats say what ran. Every reference model is built from its own copy of the config and checked to run SDPA
(from_config writes config._attn_implementation). Skipped without torch or transformers."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sampleattn  # noqa: E402
import sampleattn.transformers as sat  # noqa: E402
import spec_reference as ref  # noqa: E402
from inputs import peaked  # noqa: E402

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


def _pair(config, reference="sdpa"):
    """The same random weights under `reference` (sdpa) and under sample_attention. Each model gets its own
    copy of the config: from_config writes config._attn_implementation into the object it is given, so one
    shared config would make the reference run sample_attention too (and the comparisons test the hook
    against itself)."""
    torch.manual_seed(0)
    dense = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=reference)
    sparse = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config),
                                                           attn_implementation="sample_attention")
    dense.eval(), sparse.eval()
    sparse.load_state_dict(dense.state_dict())
    assert dense.config is not sparse.config
    assert dense.config._attn_implementation == reference
    assert sparse.config._attn_implementation == "sample_attention"
    return dense, sparse


def _reference_run(model, *args, **kwargs):
    """The reference model's forward; it must not call the hook (no layer stats may appear)."""
    sat.reset_stats()
    with torch.no_grad():
        result = model(*args, **kwargs)
    assert sat.last_stats() == {}, "the reference model ran sample_attention"
    return result


def _ids(rng, batch, seq):
    return torch.from_numpy(rng.integers(0, TINY["vocab_size"], (batch, seq)))


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_from_config_alpha_one_matches_sdpa(rng, family):
    dense, sparse = _pair(_config(family))
    assert sparse.config._attn_implementation == "sample_attention"
    ids = _ids(rng, 2, 150)
    want = _reference_run(dense, ids, output_hidden_states=True)
    with torch.no_grad():
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


def test_gemma3_explicit_head_dim_and_scaling(rng):
    # Gemma 3: head_dim set apart from hidden_size / heads, the softmax scale from query_pre_attn_scalar (not
    # 1 / sqrt(head_dim)), q/k norms, and sliding-window layers beside full ones. At alpha = 1 the logits equal
    # SDPA's; the full layer runs sample_attention, the sliding one its window alone (the band path).
    config = transformers.Gemma3TextConfig(**dict(TINY, head_dim=48), query_pre_attn_scalar=20, sliding_window=32,
                                           layer_types=["sliding_attention", "full_attention"])
    dense, sparse = _pair(config)
    ids = _ids(rng, 2, 150)
    want = _reference_run(dense, ids).logits
    with torch.no_grad():
        got = sparse(ids).logits
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    stats = sat.last_stats()
    assert stats[0].path == "band" and stats[0].reason == "sliding_window"
    assert stats[1].path == "sample_attention" and np.all(stats[1].kept_columns == 150)
    # The scale reached the kernel: with the default 1 / sqrt(48) instead the logits differ.
    sparse.model.layers[1].self_attn.scaling = 48 ** -0.5
    with torch.no_grad():
        assert (sparse(ids).logits - want).abs().max().item() > 1e-3


@pytest.mark.parametrize("family", ["gemma3", "mistral"])
def test_sliding_layers_prefill_then_decode(rng, family):
    # A prefill longer than the window, then decoding past it: each step's logits against the SDPA model's, with
    # the caches transformers picks for each (Gemma 3: sliding layers keep the last window of keys only).
    if family == "gemma3":
        config = transformers.Gemma3TextConfig(**dict(TINY, head_dim=16), sliding_window=24,
                                               layer_types=["sliding_attention", "full_attention"])
    else:
        config = _config("mistral", sliding_window=24)
    dense, sparse = _pair(config)
    ids = _ids(rng, 2, 90)
    with torch.no_grad():
        want = dense(ids, use_cache=True)
        got = sparse(ids, use_cache=True)
        torch.testing.assert_close(got.logits, want.logits, atol=2e-5, rtol=1e-5)
        assert "band" in {s.path for s in sat.last_stats().values()}
        cache_d, cache_s = want.past_key_values, got.past_key_values
        for _ in range(6):
            step = want.logits[:, -1:].argmax(-1)
            want = dense(step, past_key_values=cache_d, use_cache=True)
            got = sparse(step, past_key_values=cache_s, use_cache=True)
            torch.testing.assert_close(got.logits, want.logits, atol=2e-5, rtol=1e-5)
            cache_d, cache_s = want.past_key_values, got.past_key_values


@pytest.mark.parametrize("family", ["exaone4", "phimoe"])
def test_sliding_windows_of_models_that_keep_them_in_the_mask(rng, family):
    # EXAONE 4 puts the config's window on every module and passes sliding_window=None on its full layers; PhiMoE
    # applies its window through the mask alone. Neither may lose a window or gain one.
    if family == "exaone4":
        config = transformers.Exaone4Config(**dict(TINY, num_hidden_layers=4), sliding_window=16,
                                            sliding_window_pattern=2)
    else:
        config = transformers.PhimoeConfig(**TINY, sliding_window=16, num_local_experts=2)
    dense, sparse = _pair(config)
    ids = _ids(rng, 2, 80)
    want = _reference_run(dense, ids).logits
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids).logits, want, atol=2e-5, rtol=1e-5)


def test_sliding_layers_in_grad_mode(rng):
    # The sparse kernels are inference only: in grad mode a sliding layer takes SDPA with its window as a mask, and
    # backward works.
    dense, sparse = _pair(_config("mistral", sliding_window=16))
    ids = _ids(rng, 1, 64)
    want = _reference_run(dense, ids).logits
    got = sparse(ids).logits
    torch.testing.assert_close(got.detach(), want, atol=2e-5, rtol=1e-5)
    got.sum().backward()
    assert all(s.path == "sdpa" and s.reason == "sliding_window, grad mode" for s in sat.last_stats().values())


def test_from_pretrained(rng, tmp_path):
    dense, _ = _pair(_config("llama"))
    dense.save_pretrained(tmp_path)
    sparse = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sample_attention").eval()
    assert sparse.config._attn_implementation == "sample_attention"
    ids = _ids(rng, 1, 120)
    want = _reference_run(dense, ids).logits
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids).logits, want, atol=2e-5, rtol=1e-5)
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
    want = _reference_run(dense, ids).logits
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids).logits, want, atol=2e-5, rtol=1e-5)
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
    want = _reference_run(dense, ids, attention_mask=mask).logits
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids, attention_mask=mask).logits, want, atol=0, rtol=0)
    stats = sat.last_stats()
    assert {s.path for s in stats.values()} == {"sdpa"}
    assert {s.reason for s in stats.values()} == {"attention_mask"}


def test_short_prompts_and_decoding_use_sdpa(rng):
    sat.configure(min_seq_len=100, alpha=0.3)
    dense, sparse = _pair(_config("mistral"))
    short = _ids(rng, 1, 60)
    want = _reference_run(dense, short).logits
    with torch.no_grad():
        torch.testing.assert_close(sparse(short).logits, want, atol=0, rtol=0)
    assert {s.reason for s in sat.last_stats().values()} == {"short"}

    sat.configure(alpha=1.0)
    prompt = _ids(rng, 1, 120)
    sat.reset_stats()
    with torch.no_grad():
        want = dense.generate(prompt, max_new_tokens=6, do_sample=False)
        assert sat.last_stats() == {}
        got = sparse.generate(prompt, max_new_tokens=6, do_sample=False)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert {s.reason for s in sat.last_stats().values()} == {"decode"}
    prefill = sat.last_stats(prefill=True)
    assert {s.path for s in prefill.values()} == {"sample_attention"}
    assert all(s.seq_q == 120 for s in prefill.values())


def test_sliding_window_mask_is_honoured(rng):
    # Mistral's layers all slide (window 16 < the prompt's 64): without padding each runs the band path (the
    # window alone, through the sparse kernels, whatever alpha); with padding transformers builds the mask and
    # SDPA applies it. Both against transformers' SDPA with its own masks.
    dense, sparse = _pair(_config("mistral", sliding_window=16))
    sat.configure(alpha=0.3)
    ids = _ids(rng, 2, 64)
    want = _reference_run(dense, ids).logits
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids).logits, want, atol=2e-5, rtol=1e-5)
    stats = sat.last_stats()
    assert {s.path for s in stats.values()} == {"band"} and {s.reason for s in stats.values()} == {"sliding_window"}
    assert sat.summary()["band_layers"] == 2
    padding = torch.ones(2, 64, dtype=torch.long)
    padding[1, :5] = 0
    want = _reference_run(dense, ids, attention_mask=padding).logits
    with torch.no_grad():
        torch.testing.assert_close(sparse(ids, attention_mask=padding).logits[padding.bool()],
                                   want[padding.bool()], atol=0, rtol=0)
    assert {s.path for s in sat.last_stats().values()} == {"sdpa"}
    # Full attention instead (no window) gives other logits: the window did bite.
    full, _ = _pair(_config("mistral"))
    full.load_state_dict(dense.state_dict())
    assert (_reference_run(full, ids).logits - want).abs().max().item() > 1e-3


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

    # A sliding window without a mask (the mask builder skips it): applied here, on the band path and on every
    # fallback (a short prompt, decoding, attention sinks' eager path are tested with models below).
    band = torch.ones(40, 40, dtype=torch.bool).tril() & ~torch.ones(40, 40, dtype=torch.bool).tril(-8)
    want, _ = sdpa_attention_forward(module, q, k, v, band[None, None])
    got, _ = sat.sample_attention_forward(module, q, k, v, None, sliding_window=8)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    assert sat.last_stats()[0].path == "band" and sat.last_stats()[0].reason == "sliding_window"
    sat.configure(min_seq_len=100)
    got, _ = sat.sample_attention_forward(module, q, k, v, None, sliding_window=8)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    assert sat.last_stats()[0].path == "sdpa" and sat.last_stats()[0].reason == "short"
    module.sliding_window = 8  # no kwarg: the module's attribute, read for models known to keep it there
    module.config = transformers.Qwen2MoeConfig()
    got, _ = sat.sample_attention_forward(module, q, k, v, None)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    assert sat.last_stats()[0].reason == "short"
    module.config = transformers.PhimoeConfig()  # not one of them: the attribute is not read
    got, _ = sat.sample_attention_forward(module, q, k, v, None)
    assert sat.last_stats()[0].reason == "short" and (got - want).abs().max().item() > 1e-3
    got, _ = sat.sample_attention_forward(module, q, k, v, None, sliding_window=None)  # EXAONE 4's full layers
    assert (got - want).abs().max().item() > 1e-3
    del module.sliding_window, module.config
    sat.configure(min_seq_len=0)
    got, _ = sat.sample_attention_forward(module, q[:, :, -1:], k, v, None, sliding_window=8)  # decoding
    torch.testing.assert_close(got, want[:, -1:], atol=2e-5, rtol=0)
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
    want = _reference_run(dense, ids).logits
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids).logits, want, atol=2e-5, rtol=1e-5)


def test_compiled_sliding_model_fullgraph(rng):
    # Under torch.compile a sliding layer's band runs as torch.ops.sampleattn.window_attention (no O(S^2) mask): the
    # traced graph holds the op and no SDPA, and the compiled model matches the SDPA model.
    dense, sparse = _pair(_config("mistral", sliding_window=24))
    ids = _ids(rng, 1, 90)
    want = _reference_run(dense, ids).logits
    graphs = []

    def keep_graph(gm, _example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(sparse, fullgraph=True, backend=keep_graph)
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids).logits, want, atol=2e-5, rtol=1e-5)
    code = "".join(gm.code for gm in graphs)
    assert "sampleattn.window_attention" in code
    assert "scaled_dot_product_attention" not in code


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("sample_ratio", -1.0, r"sample_ratio \(-1\.0\) must be in \(0, 1\]"),
        ("sample_ratio", 0, r"sample_ratio \(0\) must be in \(0, 1\]"),
        ("sample_ratio", 1.5, r"sample_ratio \(1\.5\) must be in \(0, 1\]"),
        ("sample_ratio", float("nan"), r"sample_ratio \(nan\) must be in \(0, 1\]"),
        ("window_ratio", -0.1, r"window_ratio \(-0\.1\) must be in \[0, 1\]"),
        ("window_ratio", 2, r"window_ratio \(2\) must be in \[0, 1\]"),
        ("window_ratio", float("nan"), r"window_ratio \(nan\) must be in \[0, 1\]"),
        ("sink_tokens", -1, r"sink_tokens \(-1\) must be >= 0"),
        ("sink_tokens", 2.5, r"sink_tokens \(2\.5\) must be an integer"),
        ("sink_tokens", 2**64, r"sink_tokens \(18446744073709551616\) is out of range: it must fit in a signed 64-bit"),
        ("alpha", float("nan"), r"alpha \(nan\) must be in \(0, 1\]"),
        ("alpha", -0.5, r"alpha \(-0\.5\) must be in \(0, 1\]"),
        ("dense_head_density", float("nan"), r"dense_head_density \(nan\) must be in \(0, 1\]"),
        ("min_seq_len", float("inf"), r"min_seq_len \(inf\) must be an integer"),
    ],
)
def test_configure_and_register_reject_invalid_settings(setting, value, message):
    # Each setting is checked when it is set (the library's ranges, include/sampleattn/config.h), instead of
    # every later call silently falling back to SDPA; nothing is applied when any setting is bad.
    before = sat.settings()
    with pytest.raises(ValueError, match=message):
        sat.configure(**{setting: value})
    with pytest.raises(ValueError, match=message):
        sat.register(**{setting: value})
    other = "min_seq_len" if setting != "min_seq_len" else "alpha"
    with pytest.raises(ValueError, match=message):
        sat.configure(**{other: 5 if other == "min_seq_len" else 0.5, setting: value})
    assert sat.settings() == before
    with pytest.raises(TypeError, match=r"alpha must be a real number, not str"):
        sat.configure(alpha="0.9")


def test_configure_boundaries_are_the_librarys(rng):
    # The closed ends of each range are accepted here and by the library alike, and the hook then runs.
    settings = sat.configure(alpha=1.0, sample_ratio=1.0, window_ratio=0.0, sink_tokens=0, dense_head_density=1.0)
    assert settings["window_ratio"] == 0.0 and settings["sample_ratio"] == 1.0
    module = _Module()
    q, k, v = _heads(rng, 1, 8, 40, 32), _heads(rng, 1, 4, 40, 32), _heads(rng, 1, 4, 40, 32)
    got, _ = sat.sample_attention_forward(module, q, k, v, None)
    assert sat.last_stats()[0].path == "sample_attention"
    want, _ = ref.dense(*(x.transpose(1, 2).double().numpy() for x in (q, k, v)))
    np.testing.assert_allclose(got.double().numpy(), want, atol=2e-5 * np.abs(v.numpy()).max(), rtol=0)


def test_float64_model_falls_back_to_sdpa(rng):
    # The kernels cover float32 / float16 / bfloat16: any other dtype takes the SDPA path on every device.
    dense, sparse = _pair(_config("llama"))
    dense.double(), sparse.double()
    ids = _ids(rng, 1, 100)
    want = _reference_run(dense, ids).logits
    with torch.no_grad():
        got = sparse(ids).logits
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    stats = sat.last_stats()
    assert {(s.path, s.reason) for s in stats.values()} == {("sdpa", "unsupported dtype: float64")}
    assert sat.summary()["reasons"] == ["unsupported dtype: float64"]


def test_forward_in_grad_mode(rng):
    # An ordinary forward without no_grad (parameters require grad) works and records its stats; backward through
    # a sampled layer raises (the op has no autograd formula) instead of returning wrong gradients.
    dense, sparse = _pair(_config("llama"))
    ids = _ids(rng, 1, 100)
    want = _reference_run(dense, ids).logits
    got = sparse(ids).logits
    assert got.requires_grad
    torch.testing.assert_close(got.detach(), want, atol=2e-5, rtol=1e-5)
    summary = sat.summary()
    assert summary["sample_attention_layers"] == 2 and summary["mean_density"] == 1.0
    with pytest.raises(RuntimeError, match=r"no autograd formula"):
        got.sum().backward()


# Peaked attention: initializer_range 0.5 gives logits that span ~100 within a row.
PEAKY = dict(initializer_range=0.5)


def test_peaky_model_full_window_matches_sdpa(rng):
    # window_ratio 1: the band covers every visible key, so the mask is the causal one whatever stage 2 keeps,
    # and the model must equal SDPA to fp32 rounding.
    sat.configure(alpha=1.0, window_ratio=1.0)
    dense, sparse = _pair(_config("llama", **PEAKY))
    ids = _ids(rng, 2, 150)
    want = _reference_run(dense, ids, output_hidden_states=True)
    with torch.no_grad():
        got = sparse(ids, output_hidden_states=True)
    for a, b in zip(want.hidden_states, got.hidden_states):
        torch.testing.assert_close(b, a, atol=1e-5 * float(a.abs().max()), rtol=1e-5)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5 * float(want.logits.abs().max()), rtol=1e-5)
    for layer in sat.last_stats().values():
        assert layer.path == "sample_attention" and np.all(layer.density == 1.0)


def test_peaky_model_alpha_one_matches_sdpa(rng):
    sat.configure(alpha=1.0)
    dense, sparse = _pair(_config("llama", **PEAKY))
    ids = _ids(rng, 2, 150)
    want = _reference_run(dense, ids).logits
    with torch.no_grad():
        got = sparse(ids).logits
    for layer in sat.last_stats().values():
        assert np.all(layer.density == 1.0), layer.kept_columns
    torch.testing.assert_close(got, want, atol=1e-5 * float(want.abs().max()), rtol=1e-5)


def test_peaky_model_sparse_layers_within_the_dropped_mass(rng):
    # alpha 0.5 on peaked attention: every layer runs sparse (density < 1) and its output differs from dense
    # attention, row by row, by no more than SPEC's bound 2 (1 - s_r) max |v|, s_r the exact (fp64) mass that the
    # layer's mask keeps in row r. The layers' inputs are captured from the model's own forward pass.
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = dict(alpha=0.5, sample_ratio=0.1, window_ratio=0.05)
    sat.configure(**config)
    captured = {}

    def capture(module, query, key, value, attention_mask, **kwargs):
        out, weights = sat.sample_attention_forward(module, query, key, value, attention_mask, **kwargs)
        captured[module.layer_idx] = (query, key, value, kwargs["scaling"], out)
        return out, weights

    AttentionInterface.register("sample_attention_capture", capture)
    AttentionMaskInterface.register("sample_attention_capture", sdpa_mask)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        _config("llama", **PEAKY), attn_implementation="sample_attention_capture").eval()
    with torch.no_grad():
        model(_ids(rng, 1, 200))
    stats = sat.last_stats()
    assert sorted(captured) == sorted(stats) == [0, 1]
    tol_out, _ = ref.tolerance("f32")
    for layer, (query, key, value, scaling, out) in captured.items():
        st = stats[layer]
        assert st.path == "sample_attention" and st.density.max() < 1.0
        q, k, v = (x.transpose(1, 2).double().numpy() for x in (query, key, value))
        # The layer's selection, recomputed (stage 1 and 2 are deterministic), matches what the stats report.
        sel = sampleattn.select(*(x.transpose(1, 2) for x in (query, key)), **config, scale=scaling)
        np.testing.assert_array_equal(sel.kept_columns, st.kept_columns)
        np.testing.assert_array_equal(sel.window, st.window)
        np.testing.assert_allclose(sel.head_density, st.density, rtol=1e-12)
        masks = [[ref.mask_of(sel.seq_q, sel.seq_k, int(sel.window[0, h]), sel.columns(0, h), True)
                  for h in range(sel.heads)]]
        got = out.double().numpy()
        sparse_want, _ = ref.attention(q, k, v, masks, scaling)
        dense_want, _ = ref.dense(q, k, v, scale=scaling)
        vmax = np.abs(v).max()
        assert np.abs(got - sparse_want).max() <= tol_out * vmax  # the hook computes the masked attention
        sdpa = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                                                enable_gqa=True).transpose(1, 2).double().numpy()
        assert np.abs(sdpa - dense_want).max() <= tol_out * vmax  # the fp64 reference is SDPA's result
        error = np.abs(got - sdpa).max(axis=-1)  # [1, seq, heads]
        for h in range(sel.heads):
            p, _ = ref.softmax_rows(ref.scores(q, k, 0, h, sel.heads // k.shape[2], scaling),
                                    ref.visible(sel.seq_q, sel.seq_k, True))
            kept = (p * masks[0][h]).sum(axis=1)
            vmax_h = np.abs(v[0, :, h // (sel.heads // k.shape[2])]).max()
            assert np.all(error[0, :, h] <= 2 * (1 - kept) * vmax_h + 2 * tol_out * vmax_h), (layer, h)
        assert error.max() > 1e-3  # the comparison is not vacuous: the layer did drop mass


_needs_gpt_oss = pytest.mark.skipif(not hasattr(transformers, "GptOssConfig"), reason="no GPT-OSS here")


def _gpt_oss_config(**overrides):
    values = dict(vocab_size=97, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                  layer_types=["sliding_attention", "full_attention"], sliding_window=16, initializer_range=0.5)
    values.update(overrides)
    return transformers.GptOssConfig(**values)


def _sink_attention(q, k, v, sinks, scale, keep):
    """fp64 attention with one learnt sink logit per head in the softmax's denominator (GPT-OSS):
    q [B, Hq, Sq, d], k, v [B, Hkv, Sk, d] as NumPy, keep [B or 1, 1, Sq, Sk] bool. Returns [B, Sq, Hq, d]."""
    batch, heads, seq_q, d = q.shape
    group = heads // k.shape[1]
    out = np.zeros((batch, seq_q, heads, d))
    for b in range(batch):
        for h in range(heads):
            s = q[b, h] @ k[b, h // group].T * scale
            s = np.where(keep[min(b, keep.shape[0] - 1), 0], s, -np.inf)
            m = np.maximum(s.max(axis=1, keepdims=True), sinks[h])
            e = np.exp(s - m)
            out[b, :, h] = (e / (e.sum(axis=1, keepdims=True) + np.exp(sinks[h] - m))) @ v[b, h // group]
    return out


@_needs_gpt_oss
def test_attention_sinks_function_against_fp64(rng):
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssAttention

    sat.configure(alpha=0.3)  # the sparse path, if it ran, would change the output
    module = GptOssAttention(_gpt_oss_config(), layer_idx=1)
    with torch.no_grad():
        module.sinks.copy_(torch.from_numpy(rng.standard_normal(4) * 3.0))
    sinks = module.sinks.detach().double().numpy()
    q, k, v = _heads(rng, 2, 4, 40, 16, 3.0), _heads(rng, 2, 2, 40, 16), _heads(rng, 2, 2, 40, 16)
    q64, k64, v64 = (x.double().numpy() for x in (q, k, v))
    causal = np.tril(np.ones((40, 40), dtype=bool))[None, None]
    padded = (causal & (np.arange(40) >= 7)) | np.eye(40, dtype=bool)  # left padding, as sdpa_mask builds it
    for mask, keep in ((None, causal), (torch.from_numpy(padded), padded)):
        with torch.no_grad():
            got, _ = sat.sample_attention_forward(module, q, k, v, mask, scaling=0.25, s_aux=module.sinks)
        want = _sink_attention(q64, k64, v64, sinks, 0.25, keep)
        np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5, rtol=0)
        no_sinks = _sink_attention(q64, k64, v64, np.full(4, -np.inf), 0.25, keep)
        assert np.abs(want - no_sinks).max() > 0.05  # the sinks matter here
        assert sat.last_stats()[1].path == "eager" and sat.last_stats()[1].reason == "attention_sinks"
    # Decoding (one query row, no mask): the row sees every cached key, and the sinks.
    with torch.no_grad():
        got, _ = sat.sample_attention_forward(module, q[:, :, -1:], k, v, None, scaling=0.25, s_aux=module.sinks)
    want = _sink_attention(q64[:, :, -1:], k64, v64, sinks, 0.25, np.ones((1, 1, 1, 40), dtype=bool))
    np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5, rtol=0)
    # A module without an eager function that reads the sinks: a clear error, never an answer without them.
    with pytest.raises(ValueError, match=r"_Module has attention sinks \(s_aux\).*attn_implementation='eager'"):
        sat.sample_attention_forward(_Module(), q, k, v, None, s_aux=module.sinks)


@_needs_gpt_oss
def test_attention_sinks_model_matches_eager(rng):
    sat.configure(min_seq_len=16, alpha=0.3)
    dense, sparse = _pair(_gpt_oss_config(), reference="eager")
    with torch.no_grad():
        for layer in dense.model.layers:
            layer.self_attn.sinks.normal_(0, 3.0)
    sparse.load_state_dict(dense.state_dict())
    ids = _ids(rng, 2, 40)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :5] = 0
    for kwargs in ({}, {"attention_mask": mask}):
        want = _reference_run(dense, ids, **kwargs).logits
        with torch.no_grad():
            got = sparse(ids, **kwargs).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        summary = sat.summary()
        assert summary["eager_layers"] == 2 and summary["sdpa_layers"] == 0
        assert summary["reasons"] == ["attention_sinks"]
    sat.reset_stats()
    with torch.no_grad():
        want = dense.generate(ids[:1], max_new_tokens=4, do_sample=False)
        got = sparse.generate(ids[:1], max_new_tokens=4, do_sample=False)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert {(s.path, s.reason) for s in sat.last_stats().values()} == {("eager", "attention_sinks")}


# Long enough that window_ratio, not min_window (64), decides the window: ceil(0.1 * 1536) = 154 keys, where the
# default ratio 0.08 would give 123. Tiny heads keep the fp64 reference fast.
LONG = dict(alpha=0.6, sample_ratio=0.05, window_ratio=0.1, sink_tokens=4)


def test_hook_window_ratio_and_sink_tokens_against_spec(rng):
    sat.configure(**LONG)
    seq, scale = 1536, 0.25
    q, k, v = peaked(rng, 2, seq, 4, 2, 16)  # [batch, seq, heads, dim]
    want = ref.spec_selections(q, k, causal=True, scale=scale, **LONG)
    window = ref.window_size(LONG["window_ratio"], 64, seq)
    assert window == 154 and window != ref.window_size(0.08, 64, seq)
    module = _Module(layer_idx=5)
    query, key, value = (torch.from_numpy(x).transpose(1, 2) for x in (q, k, v))  # [batch, heads, seq, dim]
    got, _ = sat.sample_attention_forward(module, query, key, value, None, scaling=scale)
    st = sat.last_stats()[5]
    assert st.path == "sample_attention" and st.density.shape == (2, 4)
    no_sinks = ref.spec_selections(q, k, causal=True, scale=scale, **dict(LONG, sink_tokens=0))
    for b in range(2):
        for h in range(4):
            w = want[b][h]
            # The sinks are in every head's columns because they are forced, not because stage 2 chose them.
            assert set(range(4)) <= set(w.columns.tolist())
            assert not set(range(4)) & set(no_sinks[b][h].columns.tolist())
            assert st.window[b, h] == w.window == window
            assert st.kept_columns[b, h] == len(w.columns)
            assert st.density[b, h] == pytest.approx(w.density, rel=1e-12)
            assert st.sampled_coverage[b, h] == pytest.approx(w.coverage, abs=1e-4)
    masks = [[ref.mask_of(seq, seq, w.window, w.columns, True) for w in row] for row in want]
    expect, _ = ref.attention(q, k, v, masks, scale)
    assert np.abs(got.double().numpy() - expect).max() <= ref.tolerance("f32")[0] * np.abs(v).max()


def test_summary_recomputed_from_the_per_layer_stats(rng):
    # summary() from last_stats() with the documented definitions, on a pass where the numbers differ across heads
    # and layers (peaked attention, alpha 0.5, batch 2) and one layer (Qwen2's sliding-window layer) falls back:
    # LayerStats.mean_density is the mean of its [batch, q_heads] density (1.0 on a fallback path); summary's
    # mean_density is the mean of the sampled layers' mean_density, min_sampled_coverage the least sampled coverage
    # of any head of any sampled layer, the counts are per path, reasons the sorted distinct fallback reasons.
    sat.configure(alpha=0.5, sample_ratio=0.1, window_ratio=0.05)
    config = transformers.Qwen2Config(**dict(TINY, num_hidden_layers=3), use_sliding_window=True, sliding_window=32,
                                      max_window_layers=2, **PEAKY)
    assert config.layer_types == ["full_attention", "full_attention", "sliding_attention"]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sample_attention").eval()
    with torch.no_grad():
        model(_ids(rng, 2, 200))
    stats, summary = sat.last_stats(), sat.summary()
    sampled = [s for s in stats.values() if s.path == "sample_attention"]
    fallback = [s for s in stats.values() if s.path != "sample_attention"]
    assert sorted(stats) == [0, 1, 2] and len(sampled) == 2 and [s.layer for s in fallback] == [2]
    for s in sampled:
        assert s.density.shape == s.sampled_coverage.shape == (2, 4)
        assert s.mean_density == pytest.approx(float(np.mean(s.density)), rel=1e-12)
        # Not vacuous: the heads of a layer differ.
        assert s.density.max() - s.density.min() > 1e-3 and np.ptp(s.sampled_coverage) > 1e-3
    assert fallback[0].density is None and fallback[0].mean_density == 1.0 and fallback[0].reason
    layer_min = [float(s.sampled_coverage.min()) for s in sampled]
    assert abs(layer_min[0] - layer_min[1]) > 1e-4  # ... and so do the layers' least coverages
    assert summary == {
        "layers": 3,
        "sample_attention_layers": 2,
        "sdpa_layers": sum(s.path == "sdpa" for s in stats.values()),
        "eager_layers": sum(s.path == "eager" for s in stats.values()),
        "band_layers": sum(s.path == "band" for s in stats.values()),
        "mean_density": pytest.approx(float(np.mean([np.mean(s.density) for s in sampled])), rel=1e-12),
        "min_sampled_coverage": pytest.approx(min(layer_min), rel=1e-12),
        "reasons": sorted({s.reason for s in fallback}),
    }
    assert summary["sdpa_layers"] + summary["eager_layers"] + summary["band_layers"] == 1


def _packed_kwargs(lens):
    cu = torch.tensor([0] + list(np.cumsum(lens)), dtype=torch.int32)
    positions = torch.cat([torch.arange(n) for n in lens])[None]
    return dict(position_ids=positions, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lens),
                max_length_k=max(lens))


@pytest.mark.parametrize("min_seq_len", [0, 10_000])
def test_packed_sequences_match_separate_runs(rng, min_seq_len):
    # Padding-free batches (transformers' cu_seq_lens kwargs): each sequence must attend only to itself, on the
    # sample_attention path (alpha = 1: the logits equal SDPA's on each sequence alone) and, with min_seq_len
    # above the total, on the SDPA fallback with its block-diagonal mask. transformers' own SDPA ignores the
    # kwargs (it would mix the sequences), so the reference runs each sequence separately.
    sat.configure(min_seq_len=min_seq_len)
    dense, sparse = _pair(_config("llama"))
    lens = [70, 1, 129]
    ids = _ids(rng, 1, sum(lens))
    want = torch.cat([_reference_run(dense, part).logits for part in torch.split(ids, lens, dim=1)], dim=1)
    sat.reset_stats()
    with torch.no_grad():
        got = sparse(ids, **_packed_kwargs(lens)).logits
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    for layer in sat.last_stats().values():
        if min_seq_len == 0:
            assert layer.path == "sample_attention" and layer.batch == 3 and layer.density.shape == (3, 4)
            assert np.all(layer.kept_columns[[0, 2]] == np.array(lens)[[0, 2], None])
        else:
            assert layer.path == "sdpa" and layer.reason == "short"


@pytest.mark.parametrize("use_cache", [True, False])
def test_packed_sequences_with_transformers_mask(rng, use_cache):
    # Without a cache transformers builds a mask for packed position_ids itself, and a sliding window (Mistral,
    # window 50 < 129) adds its own: the fallback applies both with the packing; the sequences stay apart.
    config = _config("mistral", sliding_window=50)
    dense, sparse = _pair(config)
    lens = [70, 1, 129]
    ids = _ids(rng, 1, sum(lens))
    want = torch.cat([_reference_run(dense, part, use_cache=use_cache).logits
                      for part in torch.split(ids, lens, dim=1)], dim=1)
    sat.reset_stats()
    with torch.no_grad():
        got = sparse(ids, use_cache=use_cache, **_packed_kwargs(lens)).logits
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_packed_min_seq_len_applies_to_the_longest_sequence(rng):
    sat.configure(min_seq_len=100)
    _, sparse = _pair(_config("llama"))
    for lens, path in (([60, 60], "sdpa"), ([20, 110], "sample_attention")):
        sat.reset_stats()
        with torch.no_grad():
            sparse(_ids(rng, 1, sum(lens)), **_packed_kwargs(lens))
        assert {s.path for s in sat.last_stats().values()} == {path}, lens


def test_packed_offsets_are_checked(rng):
    _, sparse = _pair(_config("llama"))
    ids = _ids(rng, 1, 30)
    cases = [
        (dict(cu_seq_lens_k=torch.tensor([0, 10, 35], dtype=torch.int32)), "this call has 30 queries and 30 keys"),
        (dict(cu_seq_lens_q=torch.tensor([0.0, 10.0, 30.0])), "must hold integers"),
        (dict(cu_seq_lens_q=torch.tensor([0, 20, 30]), cu_seq_lens_k=torch.tensor([0, 10, 30])), "more queries"),
        (dict(cu_seq_lens_q=torch.tensor([0, 30, 20, 30]), cu_seq_lens_k=torch.tensor([0, 30, 20, 30])),
         "not decrease"),
        (dict(cu_seq_lens_k=torch.tensor([0, 30])), "of one length"),
    ]
    for change, message in cases:
        kwargs = _packed_kwargs([10, 20])
        kwargs.update(change)
        with torch.no_grad(), pytest.raises(ValueError, match=message):
            sparse(ids, **kwargs)


def test_packed_sequences_compiled_fullgraph(rng):
    torch._dynamo.reset()
    _, sparse = _pair(_config("llama"))
    ids, kwargs = _ids(rng, 1, 60), _packed_kwargs([20, 40])
    with torch.no_grad():
        eager = sparse(ids, **kwargs).logits
        compiled = torch.compile(sparse, fullgraph=True, backend="aot_eager")
        # Not bitwise: with transformers 5.17 the traced model's other ops differ from eager's by ~1e-7.
        torch.testing.assert_close(compiled(ids, **kwargs).logits, eager, atol=1e-6, rtol=0)


@pytest.mark.parametrize("compiled", [False, True])
def test_packed_prefill_into_a_static_cache(rng, compiled):
    # A static cache hands keys (and the mask, where there is one: a sliding window of 100 > the packed 60)
    # with an empty tail past the packed keys; eager and compiled, both the sparse path (Llama) and the masked
    # fallback (Mistral) drop it and match the sequences run apart.
    torch._dynamo.reset()
    lens = [20, 40]
    for config in (_config("llama"), _config("mistral", sliding_window=100)):
        dense, sparse = _pair(config)
        ids = _ids(rng, 1, sum(lens))
        want = torch.cat([_reference_run(dense, part).logits for part in torch.split(ids, lens, dim=1)], dim=1)
        cache = transformers.StaticCache(config=sparse.config, max_cache_len=128)
        model = torch.compile(sparse, fullgraph=True, backend="aot_eager") if compiled else sparse
        with torch.no_grad():
            got = model(ids, past_key_values=cache, use_cache=True, **_packed_kwargs(lens)).logits
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
