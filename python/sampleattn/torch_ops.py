"""PyTorch custom operators, so that torch.compile traces SampleAttention without graph breaks.

    torch.ops.sampleattn.sample_attention(q, k, v, alpha, sample_ratio, window_ratio, sink_tokens, causal, scale,
                                          dense_head_density)
        -> out [batch, seq_q, q_heads, head_dim], contiguous, q's dtype and device
    torch.ops.sampleattn.sample_attention_with_stats(...same...) -> (out, stats)
        stats: float64 [batch, q_heads, 4] on the CPU: density, sampled coverage, kept columns, window
        (what the transformers integration reports per layer).

    torch.ops.sampleattn.sample_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, alpha, sample_ratio,
                                                 window_ratio, sink_tokens, causal, scale, dense_head_density)
        -> out [1, total_q, q_heads, head_dim]: the packed variable-length form (sample_attention_varlen);
        the offsets are int64 tensors, read on the host (keep them on the CPU: a CUDA tensor costs a sync).
    torch.ops.sampleattn.sample_attention_varlen_with_stats(...same...) -> (out, stats)
        stats: float64 [n_sequences, q_heads, 4] on the CPU, as above per sequence (a sequence without queries:
        density 0, sampled coverage 1, no columns, window 0).

    torch.ops.sampleattn.window_attention(q, k, v, window, causal, scale)
        -> out [batch, seq_q, q_heads, head_dim]: exact sliding-window attention (window_attention).

Each op has a fake (meta) implementation giving the output shapes, which is all torch.compile needs. The
ops have no autograd formula: they serve inference (prefill); backward through them raises.
Importing this module registers the ops; `import sampleattn` does so whenever torch is importable.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _api

_STATS_FIELDS = ("density", "sampled_coverage", "kept_columns", "window")


def _stats_tensor(selection) -> torch.Tensor:
    import numpy as np

    fields = (selection.head_density, selection.sampled_coverage, selection.kept_columns, selection.window)
    return torch.from_numpy(np.stack([np.asarray(f, dtype=np.float64) for f in fields], axis=-1))


def _run(q, k, v, alpha, sample_ratio, window_ratio, sink_tokens, causal, scale, dense_head_density, with_selection):
    # Without the selection, CUDA tensors take the no-synchronisation path (nothing comes back to the host).
    # The op's outputs raise on backward (no autograd formula is registered), so inputs that require grad are
    # detached here rather than refused as the plain function refuses them; _api resolves neg/conj views.
    q, k, v = q.detach(), k.detach(), v.detach()
    return _api.sample_attention(
        q, k, v, alpha=alpha, sample_ratio=sample_ratio, window_ratio=window_ratio, sink_tokens=sink_tokens,
        causal=causal, scale=scale, dense_head_density=dense_head_density, return_selection=with_selection,
    )


@torch.library.custom_op("sampleattn::sample_attention", mutates_args=())
def sample_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: float = 0.95,
    sample_ratio: float = 0.05,
    window_ratio: float = 0.08,
    sink_tokens: int = 0,
    causal: bool = True,
    scale: Optional[float] = None,
    dense_head_density: float = 1.0,
) -> torch.Tensor:
    return _run(q, k, v, alpha, sample_ratio, window_ratio, sink_tokens, causal, scale, dense_head_density, False)


@sample_attention.register_fake
def _sample_attention_fake(q, k, v, alpha=0.95, sample_ratio=0.05, window_ratio=0.08, sink_tokens=0, causal=True,
                           scale=None, dense_head_density=1.0):
    return q.new_empty(q.shape)


@torch.library.custom_op("sampleattn::window_attention", mutates_args=())
def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    causal: bool = True,
    scale: Optional[float] = None,
) -> torch.Tensor:
    return _api.window_attention(q.detach(), k.detach(), v.detach(), window, causal=causal, scale=scale)


@window_attention.register_fake
def _window_attention_fake(q, k, v, window, causal=True, scale=None):
    return q.new_empty(q.shape)


@torch.library.custom_op("sampleattn::sample_attention_with_stats", mutates_args=())
def sample_attention_with_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: float = 0.95,
    sample_ratio: float = 0.05,
    window_ratio: float = 0.08,
    sink_tokens: int = 0,
    causal: bool = True,
    scale: Optional[float] = None,
    dense_head_density: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    out, selection = _run(q, k, v, alpha, sample_ratio, window_ratio, sink_tokens, causal, scale, dense_head_density,
                          True)
    return out, _stats_tensor(selection)


@sample_attention_with_stats.register_fake
def _sample_attention_with_stats_fake(q, k, v, alpha=0.95, sample_ratio=0.05, window_ratio=0.08, sink_tokens=0,
                                      causal=True, scale=None, dense_head_density=1.0):
    batch, heads = q.shape[0], q.shape[2]
    return q.new_empty(q.shape), q.new_empty((batch, heads, len(_STATS_FIELDS)), dtype=torch.float64, device="cpu")


def _run_varlen(q, k, v, cu_q, cu_k, alpha, sample_ratio, window_ratio, sink_tokens, causal, scale,
                dense_head_density, with_selections):
    return _api.sample_attention_varlen(
        q.detach(), k.detach(), v.detach(), cu_q, cu_k, alpha=alpha, sample_ratio=sample_ratio,
        window_ratio=window_ratio, sink_tokens=sink_tokens, causal=causal, scale=scale,
        dense_head_density=dense_head_density, return_selections=with_selections,
    )


@torch.library.custom_op("sampleattn::sample_attention_varlen", mutates_args=())
def sample_attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    alpha: float = 0.95,
    sample_ratio: float = 0.05,
    window_ratio: float = 0.08,
    sink_tokens: int = 0,
    causal: bool = True,
    scale: Optional[float] = None,
    dense_head_density: float = 1.0,
) -> torch.Tensor:
    return _run_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, alpha, sample_ratio, window_ratio, sink_tokens, causal,
                       scale, dense_head_density, False)


@sample_attention_varlen.register_fake
def _sample_attention_varlen_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, alpha=0.95, sample_ratio=0.05,
                                  window_ratio=0.08, sink_tokens=0, causal=True, scale=None, dense_head_density=1.0):
    return q.new_empty(q.shape)


def _varlen_stats(selections, heads: int) -> torch.Tensor:
    empty = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64).expand(1, heads, 4)
    parts = [empty if sel is None else _stats_tensor(sel) for sel in selections]
    return torch.cat(parts) if parts else torch.empty((0, heads, 4), dtype=torch.float64)


@torch.library.custom_op("sampleattn::sample_attention_varlen_with_stats", mutates_args=())
def sample_attention_varlen_with_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    alpha: float = 0.95,
    sample_ratio: float = 0.05,
    window_ratio: float = 0.08,
    sink_tokens: int = 0,
    causal: bool = True,
    scale: Optional[float] = None,
    dense_head_density: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    out, selections = _run_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, alpha, sample_ratio, window_ratio,
                                  sink_tokens, causal, scale, dense_head_density, True)
    return out, _varlen_stats(selections, q.shape[2])


@sample_attention_varlen_with_stats.register_fake
def _sample_attention_varlen_with_stats_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, alpha=0.95, sample_ratio=0.05,
                                             window_ratio=0.08, sink_tokens=0, causal=True, scale=None,
                                             dense_head_density=1.0):
    sequences = cu_seqlens_q.shape[0] - 1
    return q.new_empty(q.shape), q.new_empty((sequences, q.shape[2], len(_STATS_FIELDS)), dtype=torch.float64,
                                             device="cpu")
