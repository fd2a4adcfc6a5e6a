"""Hugging Face transformers drop-in: attn_implementation="sample_attention".

    import sampleattn.transformers
    sampleattn.transformers.register(min_seq_len=8192)          # once, before loading the model
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="sample_attention")
    model(**inputs)
    sampleattn.transformers.last_stats()                         # per layer: what was skipped

Works for every model whose attention layers call transformers' AttentionInterface (Llama, Mistral,
Qwen2, ...). Routing, per attention call:
- SampleAttention for causal prefills of at least `min_seq_len` query tokens that carry no mask;
- PyTorch SDPA (transformers' own sdpa path, the mask honoured) otherwise: short prompts, decoding, any
  padding or custom mask, non-causal layers, sliding windows that bite, attention sinks, position biases,
  training dropout, or a dtype/head size that the backend does not cover. A mask is never dropped: whenever
  one reaches the attention function, dense attention applies it. Softcapping raises ValueError (SDPA cannot
  apply it; some transformers releases would silently drop it).
The mask builder registered with the implementation is transformers' sdpa one: it hands no mask at all
for a plain causal prefill without padding, and a materialised mask in every other case.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch

from . import _api
from . import torch_ops  # noqa: F401  (registers torch.ops.sampleattn.*)

NAME = "sample_attention"

_DEFAULTS = {
    "min_seq_len": 8192,
    "alpha": 0.95,
    "sample_ratio": 0.05,
    "window_ratio": 0.08,
    "sink_tokens": 0,
    "dense_head_density": 1.0,
}
_settings: Dict[str, Any] = dict(_DEFAULTS)


@dataclass
class LayerStats:
    """What one attention layer did in the last forward pass.

    path: "sample_attention" or "sdpa"; reason: why SDPA was used ("" on the sample_attention path).
    density, sampled_coverage, kept_columns, window: [batch, q_heads] arrays (sample_attention path only):
    kept / visible causal entries, the fraction of the sampled rows' mass the mask keeps, the number of
    selected key columns and the local window per head.
    """

    layer: Any
    path: str
    reason: str
    batch: int
    q_heads: int
    seq_q: int
    seq_k: int
    density: Optional[np.ndarray] = None
    sampled_coverage: Optional[np.ndarray] = None
    kept_columns: Optional[np.ndarray] = None
    window: Optional[np.ndarray] = None
    _raw: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def mean_density(self) -> float:
        return 1.0 if self.density is None else float(self.density.mean())


class _Recorder:
    """Per-layer stats of the current forward pass; a layer seen twice starts a new pass. The last pass
    that had a prompt of more than one token is kept too, so that the prefill of a generate() call can be
    read after its decoding steps."""

    def __init__(self):
        self._lock = threading.Lock()
        self._current: Dict[Any, LayerStats] = {}
        self._last_prefill: Dict[Any, LayerStats] = {}

    def record(self, entry: LayerStats) -> None:
        with self._lock:
            if entry.layer in self._current:
                if any(e.seq_q > 1 for e in self._current.values()):
                    self._last_prefill = self._current
                self._current = {}
            self._current[entry.layer] = entry

    def snapshot(self, prefill: bool) -> Dict[Any, LayerStats]:
        with self._lock:
            current = self._current
            if prefill and not any(e.seq_q > 1 for e in current.values()):
                current = self._last_prefill
            current = dict(current)
        for entry in current.values():
            if entry._raw is not None and entry.density is None:
                raw = entry._raw.numpy()
                entry.density = raw[..., 0].copy()
                entry.sampled_coverage = raw[..., 1].copy()
                entry.kept_columns = raw[..., 2].astype(np.int64)
                entry.window = raw[..., 3].astype(np.int64)
        return current

    def clear(self) -> None:
        with self._lock:
            self._current = {}
            self._last_prefill = {}


_recorder = _Recorder()

# What the CUDA backend has kernels for (src/cuda/backend.cpp, check_device_inputs). Checked here first so that
# the common fallbacks cost no exception; anything else the backend rejects is caught below.
_CUDA_DTYPES = (torch.bfloat16, torch.float16)
_CUDA_HEAD_DIMS = (64, 128)
_warned: set = set()


def configure(**settings: Any) -> Dict[str, Any]:
    """Changes the routing threshold and SampleAttention's hyperparameters for every registered model:
    min_seq_len (default 8192), alpha (0.95), sample_ratio (0.05), window_ratio (0.08), sink_tokens (0),
    dense_head_density (1.0: see sampleattn.sample_attention).
    Returns the settings now in force."""
    unknown = set(settings) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
    if "min_seq_len" in settings and int(settings["min_seq_len"]) < 0:
        raise ValueError(f"min_seq_len ({settings['min_seq_len']}) must be >= 0")
    if "alpha" in settings and not 0.0 < float(settings["alpha"]) <= 1.0:
        raise ValueError(f"alpha ({settings['alpha']}) must be in (0, 1]")
    if "dense_head_density" in settings and not 0.0 < float(settings["dense_head_density"]) <= 1.0:
        raise ValueError(f"dense_head_density ({settings['dense_head_density']}) must be in (0, 1]")
    _settings.update(settings)
    return dict(_settings)


def settings() -> Dict[str, Any]:
    return dict(_settings)


def register(name: str = NAME, **settings: Any) -> None:
    """Registers attn_implementation=`name` with transformers' AttentionInterface (and its mask builder
    with AttentionMaskInterface), then applies `settings` as configure() does. Call before from_pretrained
    / from_config; calling again only updates the settings."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, sample_attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)
    configure(**settings)


def last_stats(prefill: bool = False) -> Dict[Any, LayerStats]:
    """Per-layer stats of the last forward pass, keyed by layer index (module.layer_idx). With
    prefill=True: of the last pass over more than one query token (the prompt of a generate() call)."""
    return _recorder.snapshot(prefill)


def summary(prefill: bool = False) -> Dict[str, Any]:
    """The last forward pass in one dict: layers on each path, mean density and least sampled coverage
    of the sampled layers, and why SDPA ran where it did."""
    stats = last_stats(prefill)
    sampled = [s for s in stats.values() if s.path == NAME]
    return {
        "layers": len(stats),
        "sample_attention_layers": len(sampled),
        "sdpa_layers": len(stats) - len(sampled),
        "mean_density": float(np.mean([s.mean_density for s in sampled])) if sampled else 1.0,
        "min_sampled_coverage": float(min(s.sampled_coverage.min() for s in sampled)) if sampled else 1.0,
        "reasons": sorted({s.reason for s in stats.values() if s.reason}),
    }


def reset_stats() -> None:
    _recorder.clear()


def _fallback_reason(module, query, key, value, attention_mask, dropout, is_causal, kwargs) -> str:
    q_len, k_len = query.shape[2], key.shape[2]
    if attention_mask is not None:
        return "attention_mask"
    if not is_causal:
        return "non-causal"
    if q_len <= 1:
        return "decode"
    if q_len < int(_settings["min_seq_len"]):
        return "short"
    if dropout and getattr(module, "training", False):
        return "dropout"
    window = kwargs.get("sliding_window")
    if window is not None and k_len > int(window):
        return "sliding_window"
    if kwargs.get("softcap") is not None:
        return "softcap"
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        return "attention_sinks"
    if kwargs.get("position_bias") is not None:
        return "position_bias"
    if kwargs.get("output_attentions", False):
        return "output_attentions"
    if query.shape[-1] != key.shape[-1] or key.shape[-1] != value.shape[-1]:
        return "head_dim"
    if query.is_cuda and (query.dtype not in _CUDA_DTYPES or query.shape[-1] not in _CUDA_HEAD_DIMS):
        return f"unsupported on CUDA: {query.dtype}, head_dim {query.shape[-1]}"
    return ""


def _layer_key(module) -> Any:
    layer = getattr(module, "layer_idx", None)
    return layer if layer is not None else id(module)


def _sdpa(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, reason):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not torch.compiler.is_compiling():
        _recorder.record(LayerStats(layer=_layer_key(module), path="sdpa", reason=reason, batch=query.shape[0],
                                    q_heads=query.shape[1], seq_q=query.shape[2], seq_k=key.shape[2]))
    if reason == "softcap":
        # SDPA cannot softcap. transformers 5.24 raises for it, older releases (5.17, seen on the device)
        # silently drop it: raise here, whatever the version, rather than return uncapped attention.
        raise ValueError("sample_attention: softcap (attention logit softcapping) is not supported, and the SDPA "
                         "fallback cannot apply it either; use attn_implementation='eager' or 'flex_attention'")
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def sample_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    is_causal: Optional[bool] = None,
    **kwargs,
):
    """transformers attention function. query [batch, q_heads, seq_q, d]; key, value [batch, kv_heads,
    seq_k, d] (the cache included). Returns (out [batch, seq_q, q_heads, d], None)."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    reason = _fallback_reason(module, query, key, value, attention_mask, dropout, causal, kwargs)
    if reason:
        return _sdpa(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, reason)

    # No mask and causal with seq_q > 1: SDPA would apply is_causal, aligned top-left (query i sees keys
    # 0..i). When seq_k > seq_q that only happens for a prefill into a static cache whose tail is empty,
    # so the same rows are the first seq_q keys with our bottom-right alignment.
    q_len = query.shape[2]
    if key.shape[2] > q_len:
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    args = (float(_settings["alpha"]), float(_settings["sample_ratio"]), float(_settings["window_ratio"]),
            int(_settings["sink_tokens"]), True, None if scaling is None else float(scaling),
            float(_settings["dense_head_density"]))
    if torch.compiler.is_compiling():
        # Inside a compiled graph: the op alone (traced through its fake implementation); no stats are
        # recorded, since that is a host-side effect that would break the graph.
        return torch.ops.sampleattn.sample_attention(q, k, v, *args), None
    try:
        out, stats = torch.ops.sampleattn.sample_attention_with_stats(q, k, v, *args)
    except _api.Error as err:
        # The backend rejected this case before writing anything (say, a head size without a kernel):
        # dense attention gives the exact answer, and the stats say why it ran.
        message = str(err)
        if message not in _warned:
            _warned.add(message)
            warnings.warn(f"sampleattn: falling back to SDPA: {message}", RuntimeWarning, stacklevel=2)
        return _sdpa(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs,
                     f"unsupported: {message}")
    _recorder.record(LayerStats(layer=_layer_key(module), path=NAME, reason="", batch=q.shape[0],
                                q_heads=q.shape[2], seq_q=q.shape[1], seq_k=k.shape[1], _raw=stats))
    return out, None
