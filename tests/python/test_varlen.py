"""Packed variable-length batches (sample_attention_varlen, dense_attention_varlen) on the CPU backends, NumPy
and torch: each sequence's output rows, its columns of the [q_heads, total_q] log-sum-exp and its Selection
equal those of a call on that sequence alone; offsets as lists, arrays or tensors; bad offsets named."""

from __future__ import annotations

import numpy as np
import pytest

import sampleattn

LENS = [(40, 97), (0, 5), (17, 17), (1, 1), (64, 130)]  # (q_len, k_len) per sequence
HQ, HKV, D = 4, 2, 64
CONFIG = dict(alpha=0.9, min_window=8)


def _packed(rng, lens=LENS):
    qs = [(rng.standard_normal((1, sq, HQ, D)) * 2.0).astype(np.float32) for sq, _ in lens]
    ks = [rng.standard_normal((1, sk, HKV, D)).astype(np.float32) for _, sk in lens]
    vs = [rng.standard_normal((1, sk, HKV, D)).astype(np.float32) for _, sk in lens]
    cu_q = np.concatenate([[0], np.cumsum([sq for sq, _ in lens])]).astype(np.int64)
    cu_k = np.concatenate([[0], np.cumsum([sk for _, sk in lens])]).astype(np.int64)
    return qs, ks, vs, np.concatenate(qs, axis=1), np.concatenate(ks, axis=1), np.concatenate(vs, axis=1), cu_q, cu_k


@pytest.mark.parametrize("backend", ["cpu", "cpu_reference"])
def test_each_sequence_matches_its_own_call(rng, backend):
    qs, ks, vs, q, k, v, cu_q, cu_k = _packed(rng)
    out, lse, sels = sampleattn.sample_attention_varlen(q, k, v, cu_q, list(cu_k), return_lse=True,
                                                        return_selections=True, backend=backend, **CONFIG)
    assert out.shape == q.shape and lse.shape == (HQ, cu_q[-1]) and len(sels) == len(LENS)
    dense, dense_lse = sampleattn.dense_attention_varlen(q, k, v, cu_q, cu_k, return_lse=True, backend=backend)
    for i, (sq, _) in enumerate(LENS):
        rows = slice(cu_q[i], cu_q[i + 1])
        if sq == 0:
            assert sels[i] is None
            continue
        want, want_lse, want_sel = sampleattn.sample_attention(qs[i], ks[i], vs[i], return_lse=True,
                                                               return_selection=True, backend=backend, **CONFIG)
        np.testing.assert_array_equal(out[:, rows], want)
        np.testing.assert_array_equal(lse[:, rows], want_lse[0])
        assert sels[i].seq_q == sq and sels[i].density == want_sel.density
        for h in range(HQ):
            np.testing.assert_array_equal(sels[i].columns(0, h), want_sel.columns(0, h))
        want, want_lse = sampleattn.dense_attention(qs[i], ks[i], vs[i], return_lse=True, backend=backend)
        np.testing.assert_array_equal(dense[:, rows], want)
        np.testing.assert_array_equal(dense_lse[:, rows], want_lse[0])


def test_torch_inputs_and_tensor_offsets(rng):
    torch = pytest.importorskip("torch")
    qs, ks, vs, q, k, v, cu_q, cu_k = _packed(rng)
    out, lse = sampleattn.sample_attention_varlen(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v),
                                                  torch.from_numpy(cu_q), torch.from_numpy(cu_k), return_lse=True,
                                                  **CONFIG)
    assert isinstance(out, torch.Tensor) and isinstance(lse, torch.Tensor) and lse.shape == (HQ, int(cu_q[-1]))
    for i in (0, 4):
        rows = slice(int(cu_q[i]), int(cu_q[i + 1]))
        want, want_lse = sampleattn.sample_attention(qs[i], ks[i], vs[i], return_lse=True, **CONFIG)
        np.testing.assert_array_equal(out[:, rows].numpy(), want)
        np.testing.assert_array_equal(lse[:, rows].numpy(), want_lse[0])


@pytest.mark.parametrize("cu_q, cu_k, message", [
    ([0, 40, 57, 58, 122], [0, 97, 102, 119, 120, 250], "the same size"),
    ([1, 40, 40, 57, 58, 122], [0, 97, 102, 119, 120, 250], "cu_seqlens_q[0] (1) must be 0"),
    ([0, 40, 40, 57, 58, 121], [0, 97, 102, 119, 120, 250], "cu_seqlens_q ends at 121"),
    ([0, 40, 40, 57, 58, 122], [0, 97, 96, 119, 120, 250], "cu_seqlens_k[2] (96) is below"),
    ([0, 40, 50, 57, 58, 122], [0, 97, 102, 119, 120, 250], "sequence 1 has 10 queries but 5 keys"),
])
def test_bad_offsets_are_named(rng, cu_q, cu_k, message):
    _, _, _, q, k, v, _, _ = _packed(rng)
    with pytest.raises(sampleattn.Error, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        sampleattn.sample_attention_varlen(q, k, v, cu_q, cu_k)
    with pytest.raises(TypeError, match="cu_seqlens_q must be a sequence"):
        sampleattn.sample_attention_varlen(q, k, v, 5, cu_k)


def test_later_sequence_failure_writes_nothing(rng):
    _, _, _, q, k, v, cu_q, cu_k = _packed(rng)
    v[0, int(cu_k[-1]) - 1, 1, 3] = np.nan  # the last sequence's last key
    out = np.full(q.shape, 7.0, dtype=np.float32)
    with pytest.raises(sampleattn.Error, match="inputs must be finite"):
        sampleattn.sample_attention_varlen(q, k, v, cu_q, cu_k, out=out)
    assert (out == 7.0).all(), "no sequence may run when a later one cannot"


@pytest.mark.parametrize("bad, message", [
    (np.array([0.0, 40, 40, 57, 58, 122]), "must hold integers"),
    ([0, 40, 40.0, 57, 58, 122], r"cu_seqlens_q\[2\] must be an integer"),
    ([0, True, 40, 57, 58, 122], r"cu_seqlens_q\[1\] must be an integer"),
    ({0, 40, 57, 58, 122}, "must be a sequence"),
])
def test_offsets_must_be_integers(rng, bad, message):
    _, _, _, q, k, v, _, cu_k = _packed(rng)
    with pytest.raises(TypeError, match=message):
        sampleattn.sample_attention_varlen(q, k, v, bad, cu_k)


def test_batch_without_queries(rng):
    _, _, _, _, k, v, _, cu_k = _packed(rng)
    q = np.zeros((1, 0, HQ, D), dtype=np.float32)
    out, lse, sels = sampleattn.sample_attention_varlen(q, k, v, [0] * len(cu_k), cu_k, return_lse=True,
                                                        return_selections=True)
    assert out.shape == q.shape and lse.shape == (HQ, 0) and sels == [None] * (len(cu_k) - 1)


def test_torch_op_eager_and_compiled(rng):
    torch = pytest.importorskip("torch")
    _, _, _, q, k, v, cu_q, cu_k = _packed(rng)
    q, k, v, cu_q, cu_k = (torch.from_numpy(x) for x in (q, k, v, cu_q, cu_k))
    want = sampleattn.sample_attention_varlen(q, k, v, cu_q, cu_k, alpha=0.9)
    torch.testing.assert_close(torch.ops.sampleattn.sample_attention_varlen(q, k, v, cu_q, cu_k, 0.9), want, atol=0,
                               rtol=0)
    for op in (torch.ops.sampleattn.sample_attention_varlen, torch.ops.sampleattn.sample_attention_varlen_with_stats):
        torch.library.opcheck(op.default, (q, k, v, cu_q, cu_k, 0.9),
                              test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    out, stats = torch.ops.sampleattn.sample_attention_varlen_with_stats(q, k, v, cu_q, cu_k, 0.9)
    torch.testing.assert_close(out, want, atol=0, rtol=0)
    assert stats.shape == (len(LENS), HQ, 4) and stats.dtype == torch.float64
    _, sels = sampleattn.sample_attention_varlen(q, k, v, cu_q, cu_k, alpha=0.9, return_selections=True)
    for i, sel in enumerate(sels):
        if sel is None:  # a sequence without queries: density 0, coverage 1, no columns, window 0
            assert stats[i].tolist() == [[0.0, 1.0, 0.0, 0.0]] * HQ
        else:
            np.testing.assert_allclose(stats[i, :, 0].numpy(), sel.head_density[0])
            np.testing.assert_array_equal(stats[i, :, 2].numpy(), sel.kept_columns[0])
    torch._dynamo.reset()

    def layer(q, k, v, cu_q, cu_k):
        return torch.ops.sampleattn.sample_attention_varlen(q * 1.0, k, v, cu_q, cu_k, 0.9).sum(dim=-1)

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v, cu_q, cu_k), layer(q, k, v, cu_q, cu_k), atol=0, rtol=0)
