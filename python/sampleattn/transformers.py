"""Hugging Face transformers drop-in: attn_implementation="sample_attention".

    import sampleattn.transformers
    sampleattn.transformers.register(min_seq_len=8192)          # once, before loading the model
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="sample_attention")
    model(**inputs)
    sampleattn.transformers.last_stats()                         # per layer: what was skipped

Works for every model whose attention layers call transformers' AttentionInterface (Llama, Mistral,
Qwen2, ...). Routing, per attention call:
- SampleAttention for causal prefills of at least `min_seq_len` query tokens that carry no mask;
- Band attention (exact: the window and nothing else, through the sparse kernels, cost O(S w)) for the causal
  sliding-window layers of a prefill without padding, in the models known to hand their window to the attention
  function (Gemma 2 / 3 / 3n / 4, Mistral, Mixtral, Qwen2 / 3, Phi-3, GPT-OSS, ...: _WINDOW_PASSING_MODELS). For
  those the mask builder skips the sliding mask where it would skip a causal one, as flash_attention_2's does,
  and every other path below applies the window itself (stats: path "band", reason "sliding_window"; in grad
  mode SDPA with the window as a mask).
- PyTorch SDPA (transformers' own sdpa path, the mask honoured) otherwise: short prompts, decoding, any
  padding or custom mask, non-causal layers, position biases, training dropout, or a dtype (float64, ...) /
  head size that the backend does not cover. A mask is never dropped: whenever one reaches the attention
  function, dense attention applies it (and a window the builder skipped is applied here, see above).
- The model's own eager attention function for layers with attention sinks (GPT-OSS: the module's `sinks`,
  passed as `s_aux`), on every call (prefill and decoding): neither SDPA nor the sparse kernels apply sinks,
  and the model's eager function does (stats: path "eager", reason "attention_sinks"). Where the model has no
  such function, the first forward raises ValueError.
- Softcapping raises ValueError (SDPA cannot apply it; some transformers releases would silently drop it).
The mask builder registered with the implementation is transformers' sdpa one, wrapped: it hands no mask at
all for a plain causal prefill without padding (and for the sliding-window layers above), and a materialised
mask in every other case.
- Packed sequences (padding-free batches: the cu_seq_lens_q / cu_seq_lens_k kwargs of a batch-1 call, which
  transformers' own SDPA and eager paths ignore) run per sequence (sample_attention_varlen; stats: one row per
  sequence with queries) when no mask comes with them and the longest sequence reaches min_seq_len; otherwise
  the fallback applies the block-diagonal mask that keeps the sequences apart, combined with the mask
  transformers built (without a cache it builds the packing itself; sliding windows). Decoding after a packed
  prefill is not supported (ValueError when the offsets still come with the call).

Inference only: a forward pass in grad mode works, but backward through a layer that ran SampleAttention
raises (the op has no autograd formula); layers that fell back to SDPA or eager attention stay differentiable.
"""

from __future__ import annotations

import sys
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

    path: "sample_attention", "band" (a sliding-window layer: its window only, exact), "sdpa" or "eager"
    (attention sinks: the model's own eager function); reason: why that path was used ("" on the sample_attention
    path).
    density, sampled_coverage, kept_columns, window: [batch, q_heads] arrays (sample_attention path only):
    kept / visible causal entries, the fraction of the sampled rows' mass the mask keeps, the number of
    selected key columns and the local window per head. For a packed batch (cu_seq_lens kwargs) on the
    sample_attention path, batch counts its sequences with queries and the arrays have a row for each.
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
_CUDA_HEAD_DIMS = (64, 96, 128, 256)
# head_dim 256 needs this much shared memory a thread block where it runs the sm_80-class kernel (src/cuda/
# attention_launch.cu: 160 KiB plus the kernel's static arrays); GPUs of compute capability 8.6 / 8.9 / 12.x give
# less (99 KiB), and the call would fail there.
_D256_SMEM_BYTES = 163840 + 2048
_smem_ok: dict = {}
_warned: set = set()


def _cuda_head_dim_runs(device: "torch.device", head_dim: int) -> bool:
    """Whether the CUDA backend has a kernel for head_dim on `device`."""
    if head_dim not in _CUDA_HEAD_DIMS:
        return False
    if head_dim != 256:
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _smem_ok:
        props = torch.cuda.get_device_properties(index)
        optin = getattr(props, "shared_memory_per_block_optin", None)
        _smem_ok[index] = (optin >= _D256_SMEM_BYTES if optin is not None
                           else props.minor == 0 and props.major in (8, 9, 10))
    return _smem_ok[index]


def _count(name: str, value: Any) -> int:
    """A non-negative integer that fits int64 (min_seq_len, sink_tokens)."""
    result = _api._integer(name, value)
    if result < 0:
        raise ValueError(f"{name} ({value}) must be >= 0")
    return result


def _unit(name: str, value: Any, closed_low: bool) -> float:
    """A number in (0, 1] (closed_low False) or [0, 1]; NaN is rejected."""
    number = _api._real(name, value)
    ok = (0.0 <= number <= 1.0) if closed_low else (0.0 < number <= 1.0)
    if not ok:
        raise ValueError(f"{name} ({value}) must be in {'[0, 1]' if closed_low else '(0, 1]'}")
    return number


# The ranges of include/sampleattn/config.h (src/core/problem.cpp, check_config), checked when they are set:
# an invalid setting must fail here, not make every later call fall back to SDPA.
_CHECKS = {
    "min_seq_len": lambda v: _count("min_seq_len", v),
    "alpha": lambda v: _unit("alpha", v, closed_low=False),
    "sample_ratio": lambda v: _unit("sample_ratio", v, closed_low=False),
    "window_ratio": lambda v: _unit("window_ratio", v, closed_low=True),
    "sink_tokens": lambda v: _count("sink_tokens", v),
    "dense_head_density": lambda v: _unit("dense_head_density", v, closed_low=False),
}


def _validated(settings: Dict[str, Any]) -> Dict[str, Any]:
    unknown = set(settings) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
    return {name: _CHECKS[name](value) for name, value in settings.items()}


def configure(**settings: Any) -> Dict[str, Any]:
    """Changes the routing threshold and SampleAttention's hyperparameters for every registered model:
    min_seq_len (default 8192; integer >= 0), alpha (0.95; in (0, 1]), sample_ratio (0.05; in (0, 1]),
    window_ratio (0.08; in [0, 1]), sink_tokens (0; integer >= 0), dense_head_density (1.0; in (0, 1]: see
    sampleattn.sample_attention). Every setting is checked before any is applied: ValueError (TypeError for a
    non-number) names the setting and the value. Returns the settings now in force."""
    _settings.update(_validated(settings))
    return dict(_settings)


def settings() -> Dict[str, Any]:
    return dict(_settings)


def register(name: str = NAME, **settings: Any) -> None:
    """Registers attn_implementation=`name` with transformers' AttentionInterface (and its mask builder
    with AttentionMaskInterface), then applies `settings` as configure() does. Call before from_pretrained
    / from_config; calling again only updates the settings."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    checked = _validated(settings)  # nothing is registered with a bad setting
    AttentionInterface.register(name, sample_attention_forward)
    AttentionMaskInterface.register(name, _mask_builder)
    configure(**checked)


# Models whose sliding-window layers hand their window to the attention function (the call's `sliding_window`,
# or the module's attribute), and whose full layers do not: checked against SDPA with transformers' own masks on
# transformers 5.17 and 5.24. Other models (PhiMoE, BLT, Doge, ... rely on the mask alone) keep the mask.
_WINDOW_PASSING_MODELS = frozenset({
    "mistral", "mixtral", "ministral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "starcoder2", "gemma2",
    "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "gemma4", "gemma4_text", "cohere2", "olmo3", "smollm3",
    "minimax", "dots1", "modernbert-decoder", "gpt_oss",
})


def _mask_builder(*args, **kwargs):
    """transformers' sdpa mask builder, except that a causal sliding-window mask (local_size = the config's
    sliding_window; not a chunked or bidirectional one) of a model in _WINDOW_PASSING_MODELS is skipped where the
    plain causal mask would be (no padding, a prefill or one query row): the attention function then applies the
    window itself."""
    from transformers.masking_utils import sdpa_mask

    config, local = kwargs.get("config"), kwargs.get("local_size")
    if (local is not None and config is not None and local == getattr(config, "sliding_window", None)
            and getattr(config, "model_type", None) in _WINDOW_PASSING_MODELS
            and getattr(config, "attention_chunk_size", None) is None and kwargs.get("allow_is_causal_skip", True)
            and not kwargs.get("allow_is_bidirectional_skip", False)):
        kwargs = dict(kwargs, local_size=None)  # sdpa_mask reads it only to decide whether to skip
    return sdpa_mask(*args, **kwargs)


def last_stats(prefill: bool = False) -> Dict[Any, LayerStats]:
    """Per-layer stats of the last forward pass, keyed by layer index (module.layer_idx). With
    prefill=True: of the last pass over more than one query token (the prompt of a generate() call)."""
    return _recorder.snapshot(prefill)


def summary(prefill: bool = False) -> Dict[str, Any]:
    """The last forward pass in one dict: layers on each path (sample_attention, sdpa, eager), mean density
    and least sampled coverage of the sampled layers, and why the fallbacks ran where they did."""
    stats = last_stats(prefill)
    sampled = [s for s in stats.values() if s.path == NAME]
    return {
        "layers": len(stats),
        "sample_attention_layers": len(sampled),
        "sdpa_layers": sum(s.path == "sdpa" for s in stats.values()),
        "eager_layers": sum(s.path == "eager" for s in stats.values()),
        "band_layers": sum(s.path == "band" for s in stats.values()),
        "mean_density": float(np.mean([s.mean_density for s in sampled])) if sampled else 1.0,
        "min_sampled_coverage": float(min(s.sampled_coverage.min() for s in sampled)) if sampled else 1.0,
        "reasons": sorted({s.reason for s in stats.values() if s.reason}),
    }


def reset_stats() -> None:
    _recorder.clear()


# What the kernels cover on any device (src/core: f32 on the CPU only; CUDA: _CUDA_DTYPES).
_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _has_sinks(kwargs) -> bool:
    return kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None


def _fallback_reason(module, query, key, value, attention_mask, dropout, is_causal, kwargs) -> str:
    q_len, k_len = query.shape[2], key.shape[2]
    # First what no path but a model's own can apply, whatever the shape of the call.
    if kwargs.get("softcap") is not None:
        return "softcap"
    if _has_sinks(kwargs):
        return "attention_sinks"
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
    if kwargs.get("position_bias") is not None:
        return "position_bias"
    if kwargs.get("output_attentions", False):
        return "output_attentions"
    if query.shape[-1] != key.shape[-1] or key.shape[-1] != value.shape[-1]:
        return "head_dim"
    if query.dtype not in _DTYPES:
        return f"unsupported dtype: {str(query.dtype).replace('torch.', '')}"
    if key.dtype != query.dtype or value.dtype != query.dtype:
        return f"mixed dtypes: {query.dtype}, {key.dtype}, {value.dtype}"
    if query.is_cuda and (query.dtype not in _CUDA_DTYPES or not _cuda_head_dim_runs(query.device, query.shape[-1])):
        return f"unsupported on CUDA: {query.dtype}, head_dim {query.shape[-1]}"
    return ""


def _layer_key(module) -> Any:
    layer = getattr(module, "layer_idx", None)
    return layer if layer is not None else id(module)


def _record_fallback(module, query, key, path, reason) -> None:
    if not torch.compiler.is_compiling():
        _recorder.record(LayerStats(layer=_layer_key(module), path=path, reason=reason, batch=query.shape[0],
                                    q_heads=query.shape[1], seq_q=query.shape[2], seq_k=key.shape[2]))


def _sdpa(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, reason):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _record_fallback(module, query, key, "sdpa", reason)
    if reason == "softcap":
        # SDPA cannot softcap. transformers 5.24 raises for it, older releases (5.17, seen on the device)
        # silently drop it: raise here, whatever the version, rather than return uncapped attention.
        raise ValueError("sample_attention: softcap (attention logit softcapping) is not supported, and the SDPA "
                         "fallback cannot apply it either; use attn_implementation='eager' or 'flex_attention'")
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def _uses_sinks(function) -> bool:
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    names = set(code.co_names) | set(code.co_varnames) | {c for c in code.co_consts if isinstance(c, str)}
    return bool(names & {"sinks", "s_aux"})


def _model_eager_attention(module):
    """The eager attention function of the module's modeling file (transformers' convention: each modeling_*.py
    defines `eager_attention_forward`, the default of ALL_ATTENTION_FUNCTIONS.get_interface), provided that it
    reads the sinks; None otherwise."""
    for cls in type(module).__mro__:
        function = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None)
        if callable(function) and _uses_sinks(function):
            return function
    return None


def _eager_mask(query, key, attention_mask, is_causal):
    """The mask the sdpa mask builder handed (None, boolean or additive) as the additive float mask that
    eager attention functions add to their logits, with SDPA's semantics (no mask and more than one query row
    under is_causal: causal, aligned top-left, as SDPA and transformers' sdpa path apply it)."""
    q_len, k_len = query.shape[2], key.shape[2]
    if attention_mask is None:
        if not (is_causal and q_len > 1):
            return None
        keep = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()[None, None]
    elif attention_mask.dtype == torch.bool:
        keep = attention_mask
    else:
        return attention_mask
    zero = torch.zeros((), dtype=query.dtype, device=query.device)
    return torch.where(keep, zero, torch.finfo(query.dtype).min)


def _eager(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, reason):
    function = _model_eager_attention(module)
    if function is None:
        raise ValueError(
            f"sample_attention: {type(module).__name__} has attention sinks (s_aux), which neither the sparse "
            f"kernels nor the SDPA fallback apply, and its modeling file has no eager attention function that "
            f"reads them; use attn_implementation='eager'"
        )
    _record_fallback(module, query, key, "eager", reason)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    mask = _eager_mask(query, key, attention_mask, causal)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    return function(module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs)


def _sliding_window(module, kwargs) -> Optional[int]:
    """The layer's sliding window: the call's `sliding_window` where the call passes one (None included: EXAONE 4
    passes None on its full layers, whose modules carry the config's window), else, for the models of
    _WINDOW_PASSING_MODELS (Qwen2-MoE keeps it there), the module's own attribute; None for full attention (also
    for a window <= 0)."""
    if "sliding_window" in kwargs:
        window = kwargs["sliding_window"]
    elif getattr(getattr(module, "config", None), "model_type", None) in _WINDOW_PASSING_MODELS:
        window = getattr(module, "sliding_window", None)
    else:
        window = None
    return int(window) if window is not None and int(window) > 0 else None


def _band_mask(q_len: int, k_len: int, window: int, device) -> torch.Tensor:
    """Boolean [1, 1, q_len, k_len]: query i (at key position k_len - q_len + i) keeps keys p - window < j <= p."""
    pos_q = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
    pos_k = torch.arange(k_len, device=device)[None, :]
    return ((pos_k <= pos_q) & (pos_k > pos_q - window))[None, None]


def _band_forward(module, query, key, value, window, scaling):
    """The window alone, exact, through window_attention (the sparse kernels over a band-only selection)."""
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    batch, seq_q, heads = q.shape[0], q.shape[1], q.shape[2]
    out = _api.window_attention(q, k, v, window, scale=scaling)
    _recorder.record(LayerStats(layer=_layer_key(module), path="band", reason="sliding_window", batch=batch,
                                q_heads=heads, seq_q=seq_q, seq_k=k.shape[1]))
    return out, None


def _packed_offsets(query, key, kwargs):
    """(cu_q, cu_k) as int64 CPU tensors when the call carries more than one packed sequence (transformers'
    padding-free kwargs cu_seq_lens_q / cu_seq_lens_k, which its SDPA and eager paths ignore); None otherwise.
    Checks them (outside torch.compile, where their values are not known) and that the call is the prefill of
    the whole packed batch."""
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None:
        return None
    if torch.as_tensor(cu_q).numel() <= 2 and torch.as_tensor(cu_k).numel() <= 2:
        return None  # one sequence: the plain path, as if the offsets were not there

    def host_offsets(name, cu):  # one copy per layer (a synchronisation when the offsets are on a GPU)
        cu = torch.as_tensor(cu)
        if cu.dtype.is_floating_point or cu.dtype.is_complex or cu.dtype == torch.bool:
            raise ValueError(f"sample_attention: {name} must hold integers, not {cu.dtype}")
        return cu.to("cpu", torch.int64)

    same = cu_k is cu_q
    cu_q = host_offsets("cu_seq_lens_q", cu_q)
    cu_k = cu_q if same else host_offsets("cu_seq_lens_k", cu_k)
    if cu_q.dim() != 1 or cu_q.shape != cu_k.shape:
        raise ValueError(f"sample_attention: cu_seq_lens_q and cu_seq_lens_k must be 1-D and of one length, not "
                         f"{tuple(cu_q.shape)} and {tuple(cu_k.shape)}")
    if query.shape[0] != 1:
        raise ValueError(f"sample_attention: packed sequences (cu_seq_lens_q / cu_seq_lens_k) need a batch-1 call, "
                         f"not batch {query.shape[0]}")
    if torch.compiler.is_compiling():
        return cu_q, cu_k
    lq, lk = cu_q.diff(), cu_k.diff()
    if int(cu_q[0]) != 0 or int(cu_k[0]) != 0 or bool((lq < 0).any()) or bool((lk < 0).any()):
        raise ValueError(f"sample_attention: cu_seq_lens_q {cu_q.tolist()} and cu_seq_lens_k {cu_k.tolist()} must "
                         f"start at 0 and not decrease")
    if bool((lq > lk).any()):
        raise ValueError(f"sample_attention: a packed sequence has more queries than keys (cu_seq_lens_q "
                         f"{cu_q.tolist()}, cu_seq_lens_k {cu_k.tolist()})")
    if int(cu_q[-1]) != query.shape[2] or int(cu_k[-1]) > key.shape[2]:
        raise ValueError(
            f"sample_attention: packed sequences (cu_seq_lens_q ending at {int(cu_q[-1])}, cu_seq_lens_k at "
            f"{int(cu_k[-1])}) are supported for the prefill of the whole packed batch, but this call has "
            f"{query.shape[2]} queries and {key.shape[2]} keys (decoding after a packed prefill is not)")
    return cu_q, cu_k


def _packed_mask(cu_q, cu_k, causal: bool, device, window: Optional[int] = None) -> torch.Tensor:
    """Boolean [1, 1, total_q, total_k]: each sequence's queries see their own sequence's keys (causally: up to
    their position, a sequence's queries being its last positions; with `window`, only the last `window` of
    those). Built on `device`."""
    cu_q, cu_k = cu_q.to(device), cu_k.to(device)
    lq, lk = cu_q.diff(), cu_k.diff()
    seq_q = torch.repeat_interleave(torch.arange(len(lq), device=device), lq)
    seq_k = torch.repeat_interleave(torch.arange(len(lk), device=device), lk)
    keep = seq_q[:, None] == seq_k[None, :]
    if causal:
        pos_q = torch.arange(len(seq_q), device=device) - cu_q[seq_q] + (lk - lq)[seq_q]
        pos_k = torch.arange(len(seq_k), device=device) - cu_k[seq_k]
        keep &= pos_k[None, :] <= pos_q[:, None]
        if window is not None:
            keep &= pos_k[None, :] > pos_q[:, None] - window
    return keep[None, None]


def _with_packing(attention_mask, packing):
    """The packing mask combined with the mask transformers handed (None, boolean or additive)."""
    if attention_mask is None:
        return packing
    if attention_mask.dtype == torch.bool:
        return attention_mask & packing
    return attention_mask.masked_fill(~packing, torch.finfo(attention_mask.dtype).min)


def _packed_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, reason, packed,
                    window):
    """Packed sequences: SampleAttention per sequence (sample_attention_varlen), or the fallback with the
    block-diagonal mask that keeps the sequences apart (combined with transformers' mask when it built one:
    without a cache it builds the packing itself, and sliding windows; where it built none, a sliding `window`
    that bites joins the block-diagonal mask)."""
    cu_q, cu_k = packed
    compiling = torch.compiler.is_compiling()
    # A static cache's empty tail: the keys (and the mask's columns) past the packed keys. Compiled, their count
    # is known only where the offsets are one tensor for queries and keys (a prefill: as many keys as queries).
    if compiling:
        keys = query.shape[2] if cu_k is cu_q else key.shape[2]
    else:
        keys = int(cu_k[-1])
    if key.shape[2] > keys:
        key, value = key[:, :, :keys], value[:, :, :keys]
        if attention_mask is not None:
            attention_mask = attention_mask[..., :keys]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # min_seq_len applies to the longest sequence, not to the packed total (compiled: transformers'
    # max_length_q, a plain int, where it comes with the offsets).
    longest = kwargs.get("max_length_q") if compiling else int(cu_q.diff().max())
    if not reason and isinstance(longest, int) and longest < int(_settings["min_seq_len"]):
        reason = "short"
    band = attention_mask is None and causal and window is not None
    if band and not compiling:
        band = int(cu_k.diff().max()) > window
    if band and not reason:
        reason = "sliding_window"
    if reason or attention_mask is not None:
        mask = _with_packing(attention_mask, _packed_mask(cu_q, cu_k, causal, query.device, window if band else None))
        if reason == "attention_sinks":
            return _eager(module, query, key, value, mask, dropout, scaling, False, kwargs, reason)
        return _sdpa(module, query, key, value, mask, dropout, scaling, False, kwargs, reason or "attention_mask")
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    args = (float(_settings["alpha"]), float(_settings["sample_ratio"]), float(_settings["window_ratio"]),
            int(_settings["sink_tokens"]), True, None if scaling is None else float(scaling),
            float(_settings["dense_head_density"]))
    if torch.compiler.is_compiling():
        return torch.ops.sampleattn.sample_attention_varlen(q, k, v, cu_q, cu_k, *args), None
    try:
        out, stats = torch.ops.sampleattn.sample_attention_varlen_with_stats(q, k, v, cu_q, cu_k, *args)
    except _api.Error as err:
        message = str(err)
        if message not in _warned:
            _warned.add(message)
            warnings.warn(f"sampleattn: falling back to SDPA: {message}", RuntimeWarning, stacklevel=3)
        return _sdpa(module, query, key, value, _packed_mask(cu_q, cu_k, True, query.device), dropout, scaling,
                     False, kwargs, f"unsupported: {message}")
    stats = stats[cu_q.diff() > 0]  # sequences without queries add no row
    _recorder.record(LayerStats(layer=_layer_key(module), path=NAME, reason="", batch=stats.shape[0],
                                q_heads=q.shape[2], seq_q=q.shape[1], seq_k=k.shape[1], _raw=stats.detach()))
    return out, None


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
    window = _sliding_window(module, kwargs)
    packed = _packed_offsets(query, key, kwargs)
    if packed is not None:
        return _packed_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs,
                               "" if reason == "attention_mask" else reason, packed, window)
    q_len = query.shape[2]
    # A sliding window and no mask: the mask builder skipped the window (or none was built), so it is applied
    # here, on every path. With several query rows and more keys than queries (no mask: a static cache's empty
    # tail, see below) the rows are the first q_len keys.
    band = attention_mask is None and causal and window is not None
    if band and q_len > 1 and key.shape[2] > q_len:
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    band = band and key.shape[2] > window
    # The sparse kernels are inference only: in grad mode the band goes to SDPA as a mask (exact, differentiable).
    grad = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)
    if band and not reason and not grad and torch.compiler.is_compiling():
        # Inside a compiled graph: the op (traced through its fake implementation); no stats recorded.
        q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        return torch.ops.sampleattn.window_attention(q, k, v, window, True, scaling), None
    if band and (reason or grad):
        mask = _band_mask(q_len, key.shape[2], window, query.device)
        if reason == "attention_sinks":
            return _eager(module, query, key, value, mask, dropout, scaling, False, kwargs, reason)
        return _sdpa(module, query, key, value, mask, dropout, scaling, False, kwargs,
                     reason or ("sliding_window, grad mode" if grad else "sliding_window"))
    if band:
        try:
            return _band_forward(module, query, key, value, window, scaling)
        except _api.Error as err:
            message = str(err)
            if message not in _warned:
                _warned.add(message)
                warnings.warn(f"sampleattn: falling back to SDPA: {message}", RuntimeWarning, stacklevel=2)
            return _sdpa(module, query, key, value, _band_mask(q_len, key.shape[2], window, query.device), dropout,
                         scaling, False, kwargs, f"unsupported: {message}")
    if reason == "attention_sinks":
        return _eager(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, reason)
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
                                q_heads=q.shape[2], seq_q=q.shape[1], seq_k=k.shape[1], _raw=stats.detach()))
    return out, None
