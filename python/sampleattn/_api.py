"""The framework-neutral Python API over the C++ core (sampleattn._sampleattn).

Inputs are [batch, seq, heads, head_dim] tensors of any DLPack framework (NumPy, PyTorch CPU or CUDA,
CuPy, ...), read with zero copy whatever their strides. Outputs are allocated in the caller's framework
(torch in -> torch out, NumPy in -> NumPy out) on the input's device, and CUDA work runs on that framework's
current stream. Bad input raises sampleattn.Error (a ValueError) or TypeError with the library's message.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from . import _sampleattn as _C

Error = _C.Error
Selection = _C.Selection
built_with_cuda: bool = _C.built_with_cuda

_BACKENDS = ("auto", "cpu", "cpu_reference", "cuda")


def _torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_cuda(x: Any) -> bool:
    return _torch_tensor(x) and x.device.type == "cuda"


def _check_tensor(x: Any, name: str) -> None:
    if _torch_tensor(x):
        return
    if not (hasattr(x, "__dlpack__") or hasattr(x, "__array_interface__")):
        raise TypeError(
            f"{name} must be a DLPack tensor (NumPy, PyTorch, CuPy, ...) of shape [batch, seq, heads, head_dim], "
            f"not {type(x).__name__}"
        )


def _as_input(x: Any) -> Any:
    # DLPack export refuses tensors that require grad; the kernels never build a graph anyway.
    if _torch_tensor(x) and x.requires_grad:
        return x.detach()
    return x


def _empty(like: Any, shape: tuple, float32: bool = False) -> Any:
    """An uninitialised array of `shape` in `like`'s framework and device (dtype: like's, or float32)."""
    if _torch_tensor(like):
        import torch

        return torch.empty(shape, dtype=torch.float32 if float32 else like.dtype, device=like.device)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(like, numpy.ndarray):
        return numpy.empty(shape, dtype=numpy.float32 if float32 else like.dtype)
    if hasattr(like, "__array_namespace__"):
        xp = like.__array_namespace__()
        dtype = xp.float32 if float32 else like.dtype
        try:
            return xp.empty(shape, dtype=dtype, device=like.device)
        except TypeError:
            return xp.empty(shape, dtype=dtype)
    import numpy as np

    return np.empty(shape, dtype=np.float32 if float32 else np.asarray(like).dtype)


def _stream(x: Any) -> int:
    """The caller's current CUDA stream for x's framework and device, as an integer; 0 on the CPU."""
    if _torch_tensor(x):
        if x.device.type != "cuda":
            return 0
        import torch

        return int(torch.cuda.current_stream(x.device).cuda_stream)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return int(cupy.cuda.get_current_stream().ptr)
    return 0


class _DeviceGuard:
    """Makes x's CUDA device current for the call (torch tensors), so the library's launches land there."""

    def __init__(self, x: Any):
        self._ctx = None
        if _torch_tensor(x) and x.device.type == "cuda":
            import torch

            self._ctx = torch.cuda.device(x.device)

    def __enter__(self):
        if self._ctx is not None:
            self._ctx.__enter__()

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False


def _check_backend(backend: str) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"backend ({backend!r}) must be one of {', '.join(repr(b) for b in _BACKENDS)}")
    return backend


def _shape(x: Any) -> tuple:
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != 4:
        raise ValueError(f"tensors must have 4 dimensions [batch, seq, heads, head_dim], but one has shape {shape}")
    return shape


def _outputs(q: Any, out: Optional[Any], return_lse: bool):
    b, s, h, d = _shape(q)
    if out is None:
        out = _empty(q, (b, s, h, d))
    else:
        _check_tensor(out, "out")
        flags = getattr(out, "flags", None)
        if flags is not None and hasattr(flags, "writeable") and not flags.writeable:
            raise ValueError("out must be a writable tensor, but it is read-only")
    lse = _empty(q, (b, h, s), float32=True) if return_lse else None
    return out, lse


def _result(out: Any, lse: Optional[Any], selection: Optional[Selection]):
    extra = tuple(x for x in (lse, selection) if x is not None)
    return (out, *extra) if extra else out


def sample_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    alpha: float = 0.95,
    sample_ratio: float = 0.05,
    window_ratio: float = 0.08,
    sink_tokens: int = 0,
    causal: bool = True,
    scale: Optional[float] = None,
    return_lse: bool = False,
    return_selection: bool = False,
    min_window: int = 64,
    dense_tail: int = 0,
    dense_head_density: float = 1.0,
    out: Optional[Any] = None,
    backend: str = "auto",
    num_threads: int = 0,
):
    """SampleAttention (SPEC.md variant A): select per head the columns that carry `alpha` of the sampled
    attention mass, then attend over local window + those columns.

    q: [batch, seq_q, q_heads, head_dim]; k, v: [batch, seq_k, kv_heads, head_dim] with q_heads % kv_heads
    == 0 and seq_q <= seq_k (queries are the last seq_q positions). bf16 / fp16 / fp32 (fp32 on the CPU).
    Returns out [batch, seq_q, q_heads, head_dim] in q's framework and dtype; with return_lse also the
    float32 log-sum-exp [batch, q_heads, seq_q]; with return_selection also the Selection (per-head
    columns, density and sampled coverage). `out` may be given to write into an existing tensor.
    dense_head_density (ours, in (0, 1]): a head whose mask keeps at least that fraction of its visible entries
    keeps every column and runs as plain attention (faster than sparse attention over nearly every entry; it
    only adds attention mass); 1 (default) = off, the paper's method.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_tensor(x, name)
    _check_backend(backend)
    q, k, v = _as_input(q), _as_input(k), _as_input(v)
    out, lse = _outputs(q, out, return_lse)
    settings = (bool(causal), None if scale is None else float(scale), float(alpha), float(sample_ratio),
                float(window_ratio), int(min_window), int(sink_tokens), int(dense_tail), float(dense_head_density))
    with _DeviceGuard(q):
        if not return_selection and backend in ("auto", "cuda") and _torch_cuda(q) and _C.built_with_cuda:
            # Nothing has to come back to the host: the no-synchronisation path, workspace from torch's
            # caching allocator (stream-ordered), so the call can also be captured in a CUDA graph.
            import torch

            workspace = torch.empty(_C.cuda_workspace_size(q, k, *settings), dtype=torch.uint8, device=q.device)
            _C.cuda_sample_attention(q, k, v, out, lse, *settings, workspace, _stream(q))
            return _result(out, lse, None)
        selection = _C.sample_attention(q, k, v, out, lse, *settings, backend, int(num_threads), _stream(q))
    return _result(out, lse, selection if return_selection else None)


def select(
    q: Any,
    k: Any,
    *,
    alpha: float = 0.95,
    sample_ratio: float = 0.05,
    window_ratio: float = 0.08,
    sink_tokens: int = 0,
    causal: bool = True,
    scale: Optional[float] = None,
    min_window: int = 64,
    dense_tail: int = 0,
    dense_head_density: float = 1.0,
    backend: str = "auto",
    num_threads: int = 0,
) -> Selection:
    """Stages 1 and 2 only: the Selection that sample_attention would use (a host object)."""
    _check_tensor(q, "q")
    _check_tensor(k, "k")
    _check_backend(backend)
    q, k = _as_input(q), _as_input(k)
    with _DeviceGuard(q):
        return _C.select(
            q, k, bool(causal), None if scale is None else float(scale), float(alpha), float(sample_ratio),
            float(window_ratio), int(min_window), int(sink_tokens), int(dense_tail), float(dense_head_density), backend,
            int(num_threads),
            _stream(q),
        )


def attend(
    q: Any,
    k: Any,
    v: Any,
    selection: Selection,
    *,
    scale: Optional[float] = None,
    return_lse: bool = False,
    out: Optional[Any] = None,
    backend: str = "auto",
    num_threads: int = 0,
):
    """Sparse attention over the mask `selection` describes (causality is the selection's)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_tensor(x, name)
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a sampleattn.Selection, not {type(selection).__name__}")
    _check_backend(backend)
    q, k, v = _as_input(q), _as_input(k), _as_input(v)
    out, lse = _outputs(q, out, return_lse)
    with _DeviceGuard(q):
        _C.attend(q, k, v, selection, out, lse, bool(selection.causal), None if scale is None else float(scale),
                  backend, int(num_threads), _stream(q))
    return _result(out, lse, None)


def dense_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = True,
    scale: Optional[float] = None,
    return_lse: bool = False,
    out: Optional[Any] = None,
    backend: str = "auto",
    num_threads: int = 0,
):
    """Exact attention (causal: bottom-right aligned, query row r at key position seq_k - seq_q + r)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_tensor(x, name)
    _check_backend(backend)
    q, k, v = _as_input(q), _as_input(k), _as_input(v)
    out, lse = _outputs(q, out, return_lse)
    with _DeviceGuard(q):
        _C.dense_attention(q, k, v, out, lse, bool(causal), None if scale is None else float(scale), backend,
                           int(num_threads), _stream(q))
    return _result(out, lse, None)


def exact_metrics(q: Any, k: Any, v: Any, selection: Selection, rows=None, *, scale: Optional[float] = None,
                  num_rows: int = 64) -> dict:
    """Exact fp64 metrics of `selection` against dense attention on host tensors, per (batch, head):
    min_kept_mass (the paper's CRA), mean_kept_mass and rel_error of the sparse output, over `rows`
    (default: num_rows rows spread evenly, the last included)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_tensor(x, name)
    q, k, v = _as_input(q), _as_input(k), _as_input(v)
    if rows is None:
        rows = _C.metric_rows(_shape(q)[1], int(num_rows))
    return _C.exact_metrics(q, k, v, selection, [int(r) for r in rows], bool(selection.causal),
                            None if scale is None else float(scale))
