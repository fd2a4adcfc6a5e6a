"""sampleattn: SampleAttention (adaptive structured sparse attention) for long-prompt LLM prefill.

    import sampleattn
    out = sampleattn.sample_attention(q, k, v)            # q, k, v: [batch, seq, heads, head_dim]
    out, sel = sampleattn.sample_attention(q, k, v, return_selection=True)
    sel.head_density, sel.sampled_coverage               # per (batch, head): what was kept

Any DLPack tensor works (NumPy, PyTorch CPU or CUDA, CuPy), read with zero copy; the output comes back in
the input's framework (NumPy / torch for an object that only implements __dlpack__). Inference only: torch
inputs that require grad raise RuntimeError in grad mode (use torch.no_grad()). With torch installed,
`torch.ops.sampleattn.sample_attention` is registered (usable under torch.compile);
`sampleattn.transformers.register()` adds attn_implementation="sample_attention".
Set SAMPLEATTN_NO_TORCH=1 to skip importing torch here.
"""

import os as _os

# torch first, when present: its CUDA runtime is then the one the extension shares in this process.
_torch = None
if _os.environ.get("SAMPLEATTN_NO_TORCH", "0") != "1":
    try:
        import torch as _torch
    except ImportError:
        _torch = None

from ._api import (  # noqa: E402
    Error,
    Selection,
    attend,
    built_with_cuda,
    dense_attention,
    dense_attention_varlen,
    exact_metrics,
    sample_attention,
    sample_attention_varlen,
    select,
    window_attention,
)

__version__ = "0.1.0"
__all__ = [
    "Error",
    "Selection",
    "attend",
    "built_with_cuda",
    "dense_attention",
    "dense_attention_varlen",
    "exact_metrics",
    "sample_attention",
    "sample_attention_varlen",
    "select",
    "window_attention",
]

if _torch is not None:
    from . import torch_ops  # noqa: F401,E402  (registers torch.ops.sampleattn.*)
