"""PyTorch CUDA tensors (device machine): the package against PyTorch SDPA and against SDPA given the
selection's mask, on the caller's stream, under torch.compile, and the transformers drop-in in bf16.
Skipped where torch has no GPU or the extension was built without the CUDA backend."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sampleattn  # noqa: E402
import spec_reference as ref  # noqa: E402
from selection_check import check_selection  # noqa: E402

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and sampleattn.built_with_cuda),
                                reason="needs a CUDA device and a CUDA build of sampleattn")

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}
# (batch, seq_q, seq_k, q_heads, kv_heads, head_dim)
SHAPES = [(1, 1024, 1024, 32, 8, 128), (2, 1025, 1025, 8, 1, 64), (1, 257, 4097, 4, 4, 128), (1, 17, 17, 2, 2, 64),
          (1, 300, 1025, 8, 2, 96), (1, 200, 1025, 4, 1, 256)]


def _skip_without_kernel(head_dim):
    import sampleattn.transformers as sat

    if not sat._cuda_head_dim_runs(torch.device("cuda"), head_dim):
        pytest.skip(f"head_dim {head_dim}: this GPU gives a block too little shared memory")


def _qkv(gen, shape, dtype, bhsd=True):
    b, sq, sk, hq, hkv, d = shape
    _skip_without_kernel(d)

    def draw(s, h, scale):
        dims = (b, h, s, d) if bhsd else (b, s, h, d)
        x = (torch.randn(dims, generator=gen, device="cuda") * scale).to(dtype)
        return x.transpose(1, 2) if bhsd else x

    return draw(sq, hq, 2.0), draw(sk, hkv, 1.0), draw(sk, hkv, 1.0)


def _sdpa(q, k, v, mask=None, causal=True):
    """SDPA in fp32 on [batch, seq, heads, dim] views; bottom-right causal alignment via an explicit mask."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    if mask is None and causal:
        mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(sk - sq)
    qf, kf, vf = (x.float().transpose(1, 2) for x in (q, k, v))
    kf, vf = kf.repeat_interleave(hq // hkv, 1), vf.repeat_interleave(hq // hkv, 1)
    return torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask).transpose(1, 2)


def _selection_mask(sel, device):
    masks = [[torch.from_numpy(ref.mask_of(sel.seq_q, sel.seq_k, int(sel.window[b, h]), sel.columns(b, h),
                                           sel.causal)) for h in range(sel.heads)] for b in range(sel.batch)]
    return torch.stack([torch.stack(m) for m in masks]).to(device)


def _close(out, want, v, name):
    tol = ref.tolerance(name)[0]
    assert torch.isfinite(out).all()
    err = (out.float() - want).abs().max().item() / v.float().abs().max().item()
    assert err <= tol, f"max error {err:.3g} x max|v| > {tol}"


def _rounding_check(out, q, k, v, name, mask=None):
    """The per-row rounding check of tests/support/row_check.h against attention in fp64: per element
    |out - ref| <= u |ref| + 6 u max|v| spread + 1e-6 max|v|, spread = ||p||_2 / ||p||_1 of the row, u the unit
    roundoff of the format. Sharper than the max-abs tolerance where rows spread over many keys."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    if mask is None:
        mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(sk - sq)
    qd, kd, vd = (x.double().transpose(1, 2) for x in (q, k, v))
    kd, vd = kd.repeat_interleave(hq // hkv, 1), vd.repeat_interleave(hq // hkv, 1)
    s = (qd @ kd.transpose(-1, -2) / math.sqrt(d)).masked_fill(~mask, float("-inf"))
    lse = s.logsumexp(-1, keepdim=True)
    assert torch.isfinite(lse).all(), "every row keeps at least one key here"
    want = (s - lse).exp() @ vd
    spread = (0.5 * (2 * s).logsumexp(-1, keepdim=True) - lse).exp()
    u, vmax = ref.rounding(name), vd.abs().max()
    allowance = u * want.abs() + 6 * u * vmax * spread + 1e-6 * vmax
    ratio = ((out.double().transpose(1, 2) - want).abs() / allowance).max().item()
    assert ratio <= 1.0, f"error {ratio:.3g} x the rounding allowance"


@pytest.fixture
def gen():
    return torch.Generator(device="cuda").manual_seed(20261129)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_alpha_one_and_dense_match_sdpa(gen, shape, name):
    q, k, v = _qkv(gen, shape, DTYPES[name])
    want = _sdpa(q, k, v)
    out = sampleattn.sample_attention(q, k, v, alpha=1.0)
    assert out.is_cuda and out.dtype == q.dtype and out.shape == q.shape
    dense = sampleattn.dense_attention(q, k, v)
    _close(out, want, v, name)
    _close(dense, want, v, name)
    _rounding_check(out, q, k, v, name)
    _rounding_check(dense, q, k, v, name)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[:3] + SHAPES[4:], ids=lambda s: "x".join(map(str, s)))
def test_sparse_output_matches_sdpa_with_the_selection_mask(gen, shape, name):
    q, k, v = _qkv(gen, shape, DTYPES[name], bhsd=shape[0] == 1)
    out, lse, sel = sampleattn.sample_attention(q, k, v, alpha=0.9, return_lse=True, return_selection=True)
    assert sel.density < 1.0 and sel.min_sampled_coverage >= 0.9 - 1e-3
    mask = _selection_mask(sel, q.device)
    _close(out, _sdpa(q, k, v, mask=mask), v, name)
    _rounding_check(out, q, k, v, name, mask=mask)
    # The log-sum-exp over the kept entries, from the same scores in fp32.
    scores = (q.float().transpose(1, 2) @ k.float().transpose(1, 2).repeat_interleave(q.shape[2] // k.shape[2], 1)
              .transpose(-1, -2)) / math.sqrt(q.shape[3])
    want_lse = scores.masked_fill(~mask, float("-inf")).logsumexp(-1)
    assert (lse - want_lse).abs().max().item() <= ref.tolerance(name)[1] * 4


def test_select_attend_and_cpu_agree(gen):
    q, k, v = _qkv(gen, (1, 512, 512, 8, 2, 128), torch.bfloat16)
    sel_gpu = sampleattn.select(q, k, alpha=0.9)
    sel_cpu = sampleattn.select(q.cpu(), k.cpu(), alpha=0.9)
    assert (sel_gpu.window == sel_cpu.window).all()
    # Both selections against the fp64 SPEC on the same (bf16-rounded) inputs, by the rule the NumPy tests use
    # (selection_check.check_selection): in every head, a column that is in one set only must tie the stage-2
    # boundary within 1e-5 of the total score; window, coverage and counts must match. One wrong head fails.
    q64, k64 = (x.float().cpu().numpy() for x in (q, k))
    for sel in (sel_cpu, sel_gpu):
        check_selection(sel, q64, k64, dict(alpha=0.9))
    for h in range(8):  # and so GPU and CPU differ only in such ties
        want = ref.select_head(q64, k64, 0, h, alpha=0.9, sample_ratio=0.05, window_ratio=0.08, min_window=64,
                               sink_tokens=0, dense_tail=0, causal=True, scale=1.0 / math.sqrt(128))
        gpu, cpu = np.asarray(sel_gpu.columns(0, h)), np.asarray(sel_cpu.columns(0, h))
        diff = np.setxor1d(gpu, cpu)
        tie = 1e-5 * want.colscore.sum()
        assert np.all(np.abs(want.colscore[diff] - want.boundary) <= tie), (h, diff)
    out = sampleattn.attend(q, k, v, sel_gpu)
    _close(out, _sdpa(q, k, v, mask=_selection_mask(sel_gpu, q.device)), v, "bf16")


def test_runs_on_the_callers_stream(gen):
    q0, k, v = _qkv(gen, (1, 2048, 2048, 8, 8, 128), torch.bfloat16)
    want = sampleattn.sample_attention(q0 * 0.5, k, v, alpha=1.0)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        q = q0 * 0.5  # produced on the side stream: the kernels must be ordered after it
        out = sampleattn.sample_attention(q, k, v, alpha=1.0)
    side.synchronize()
    torch.testing.assert_close(out, want, atol=0, rtol=0)


def test_no_selection_path_is_graph_capturable_and_equal(gen):
    # Without return_selection nothing comes back to the host: the call can be captured in a CUDA graph
    # (a host synchronisation inside the capture would raise). alpha = 1 makes the selection unique, so the
    # replay must equal the path that downloads the selection.
    q, k, v = _qkv(gen, (1, 1536, 2048, 8, 2, 128), torch.bfloat16)
    want, sel = sampleattn.sample_attention(q, k, v, alpha=1.0, return_selection=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        sampleattn.sample_attention(q, k, v, alpha=1.0)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = sampleattn.sample_attention(q, k, v, alpha=1.0)
    captured.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, want, atol=0, rtol=0)
    assert sel.density > 0


def test_window_attention_matches_sdpa_and_is_graph_capturable(gen):
    # The band selection is built on the device: nothing comes from the host, so the call can be captured.
    q, k, v = _qkv(gen, (1, 1536, 2048, 8, 2, 128), torch.bfloat16)
    window = 300
    pos = torch.arange(1536, device="cuda")[:, None] + (2048 - 1536)
    j = torch.arange(2048, device="cuda")[None, :]
    want = _sdpa(q, k, v, mask=(j > pos - window) & (j <= pos))
    eager = sampleattn.window_attention(q, k, v, window)
    torch.testing.assert_close(eager.float(), want, atol=2e-2, rtol=0)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = sampleattn.window_attention(q, k, v, window)
    captured.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, eager, atol=0, rtol=0)


def test_bad_input_on_cuda(gen):
    q, k, v = _qkv(gen, (1, 64, 64, 4, 2, 64), torch.bfloat16)
    with pytest.raises(sampleattn.Error, match=r"k\.device"):
        sampleattn.sample_attention(q, k.cpu(), v)
    with pytest.raises(sampleattn.Error, match=r"k\.dtype"):
        sampleattn.sample_attention(q, k.half(), v)


def test_torch_compile_cuda(gen):
    torch._dynamo.reset()

    # alpha = 1 keeps the check about the op: inductor may reorder the float sum, so the two differ in rounding.
    def layer(q, k, v):
        return torch.ops.sampleattn.sample_attention(q, k, v, 1.0).float().sum(-1)

    q, k, v = _qkv(gen, (1, 1024, 1024, 8, 2, 128), torch.bfloat16)
    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), layer(q, k, v), atol=1e-3, rtol=1e-4)


def _bf16_logits(config, ids):
    """Logits of the SDPA model and of the sample_attention model (same random weights, bf16, on the GPU; alpha 1,
    min_seq_len 0), and the per-layer stats of the latter."""
    transformers = pytest.importorskip("transformers")
    import sampleattn.transformers as sat

    saved = sat.settings()
    sat.register(min_seq_len=0, alpha=1.0)
    try:
        torch.manual_seed(0)
        # One config object per model: from_config writes config._attn_implementation into it, so a shared
        # config would make the reference run sample_attention too.
        with torch.device("cuda"):
            dense = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="sdpa",
                                                                  dtype=torch.bfloat16).eval()
            sparse = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config),
                                                                   attn_implementation="sample_attention",
                                                                   dtype=torch.bfloat16).eval()
        assert dense.config._attn_implementation == "sdpa"
        sparse.load_state_dict(dense.state_dict())
        with torch.no_grad():
            sat.reset_stats()
            a = dense(ids).logits.float()
            assert sat.last_stats() == {}, "the reference model ran sample_attention"
            b = sparse(ids).logits.float()
        return a, b, sat.last_stats()
    finally:
        sat.configure(**saved)


_MODEL = dict(vocab_size=1000, hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=8192)


@pytest.mark.parametrize("family,head_dim", [("llama", 128), ("qwen2", 128), ("llama", 96), ("llama", 256)])
def test_transformers_bf16_alpha_one_matches_sdpa(family, head_dim):
    transformers = pytest.importorskip("transformers")
    _skip_without_kernel(head_dim)
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[family]
    extra = {} if head_dim == 512 // 4 else {"head_dim": head_dim}  # other kernel instances than 128's
    a, b, stats = _bf16_logits(cls(**_MODEL, **extra), torch.randint(0, 1000, (1, 3000), device="cuda"))
    assert [s.path for s in stats.values()] == ["sample_attention"] * 2
    rel = ((a - b).norm() / a.norm()).item()
    assert rel < 1e-2, f"relative logit error {rel:.3g}"


@pytest.mark.parametrize("family", ["mistral", "gemma3"])
def test_transformers_sliding_layers_band_path(family):
    # Sliding-window layers of a long prefill run their window alone through the CUDA kernels (path "band"); the
    # logits match the SDPA model's (its own masks), the full layers at alpha 1 as in the test above.
    transformers = pytest.importorskip("transformers")
    if family == "mistral":
        config = transformers.MistralConfig(**_MODEL, sliding_window=256)
    else:
        config = transformers.Gemma3TextConfig(**_MODEL, head_dim=128, sliding_window=256,
                                               layer_types=["sliding_attention", "full_attention"])
    a, b, stats = _bf16_logits(config, torch.randint(0, 1000, (1, 3000), device="cuda"))
    paths = [s.path for s in stats.values()]
    assert "band" in paths and all(p in ("band", "sample_attention") for p in paths), paths
    rel = ((a - b).norm() / a.norm()).item()
    assert rel < 1e-2, f"relative logit error {rel:.3g}"


def test_generate_16k_prompt_default_settings():
    transformers = pytest.importorskip("transformers")
    import sampleattn.transformers as sat

    sat.register()
    saved = sat.settings()
    sat.configure(min_seq_len=8192, alpha=0.95, sample_ratio=0.05, window_ratio=0.08, sink_tokens=0)
    try:
        config = transformers.LlamaConfig(vocab_size=1000, hidden_size=512, intermediate_size=1024,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=32768)
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sample_attention",
                                                                  dtype=torch.bfloat16).eval()
        prompt = torch.randint(0, 1000, (1, 16384), device="cuda")
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=8, do_sample=False)
        assert out.shape == (1, 16384 + 8)
        prefill = sat.last_stats(prefill=True)
        assert {s.path for s in prefill.values()} == {"sample_attention"}
        assert all(s.seq_q == 16384 for s in prefill.values())
        assert {s.reason for s in sat.last_stats().values()} == {"decode"}
    finally:
        sat.configure(**saved)


def test_varlen_matches_per_sequence_calls(gen):
    lens = [(300, 300), (0, 9), (64, 1025), (1, 1)]
    qs = [(torch.randn(1, sq, 8, 128, generator=gen, device="cuda") * 2).to(torch.bfloat16) for sq, _ in lens]
    ks = [torch.randn(1, sk, 2, 128, generator=gen, device="cuda").to(torch.bfloat16) for _, sk in lens]
    vs = [torch.randn(1, sk, 2, 128, generator=gen, device="cuda").to(torch.bfloat16) for _, sk in lens]
    cu_q = torch.tensor([0] + [sum(sq for sq, _ in lens[:i + 1]) for i in range(len(lens))], device="cuda")
    cu_k = torch.tensor([0] + [sum(sk for _, sk in lens[:i + 1]) for i in range(len(lens))], device="cuda")
    out, lse, sels = sampleattn.sample_attention_varlen(torch.cat(qs, 1), torch.cat(ks, 1), torch.cat(vs, 1), cu_q,
                                                        cu_k, return_lse=True, return_selections=True)
    assert out.is_cuda and lse.shape == (8, int(cu_q[-1])) and sels[1] is None
    # Without selections the no-synchronisation path runs (one workspace, stream order): the same bits.
    out2, lse2 = sampleattn.sample_attention_varlen(torch.cat(qs, 1), torch.cat(ks, 1), torch.cat(vs, 1), cu_q.cpu(),
                                                    cu_k.cpu(), return_lse=True)
    assert torch.equal(out2, out) and torch.equal(lse2, lse)
    for i, (sq, _) in enumerate(lens):
        if sq == 0:
            continue
        rows = slice(int(cu_q[i]), int(cu_q[i + 1]))
        want, want_lse = sampleattn.sample_attention(qs[i], ks[i], vs[i], return_lse=True)
        assert torch.equal(out[:, rows], want) and torch.equal(lse[:, rows], want_lse[0])
        _rounding_check(out[:, rows], qs[i], ks[i], vs[i], "bf16", mask=_selection_mask(sels[i], out.device))


def _same_gpu_model(a, b):
    pa, pb = torch.cuda.get_device_properties(a), torch.cuda.get_device_properties(b)
    return (pa.name, pa.major, pa.minor, pa.multi_processor_count) == (pb.name, pb.major, pb.minor,
                                                                        pb.multi_processor_count)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device(gen):
    """Tensors on cuda:1 while cuda:0 is current: every entry point runs on cuda:1, on that device's current
    stream, and gives the bits the same call gives on cuda:0 (the CUDA path is deterministic)."""
    if not _same_gpu_model(0, 1):
        pytest.skip("cuda:0 and cuda:1 are different GPU models")
    q, k, v = _qkv(gen, (1, 1024, 1280, 8, 2, 128), torch.bfloat16)
    want, want_lse, want_sel = sampleattn.sample_attention(q, k, v, return_lse=True, return_selection=True)
    want_dense = sampleattn.dense_attention(q, k, v)
    q1, k1, v1 = (x.to("cuda:1") for x in (q, k, v))
    assert torch.cuda.current_device() == 0
    side = torch.cuda.Stream(device="cuda:1")
    side.wait_stream(torch.cuda.current_stream("cuda:1"))
    with torch.cuda.stream(side):
        out, lse = sampleattn.sample_attention(q1, k1, v1, return_lse=True)  # no-synchronisation path
        out_sel, sel = sampleattn.sample_attention(q1, k1, v1, return_selection=True)
        dense = sampleattn.dense_attention(q1, k1, v1)
        op = torch.ops.sampleattn.sample_attention(q1, k1, v1, 0.95)
        attended = sampleattn.attend(q1, k1, v1, want_sel)
    side.synchronize()
    assert torch.cuda.current_device() == 0
    for got in (out, lse, out_sel, dense, op, attended):
        assert got.device == q1.device
    for got, ref_ in ((out, want), (lse, want_lse), (out_sel, want), (dense, want_dense), (op, want),
                      (attended, want)):
        assert torch.equal(got.cpu(), ref_.cpu())
    for h in range(8):
        assert np.array_equal(np.asarray(sel.columns(0, h)), np.asarray(want_sel.columns(0, h)))
    with pytest.raises(sampleattn.Error, match=r"k\.device"):
        sampleattn.sample_attention(q1, k, v1)
