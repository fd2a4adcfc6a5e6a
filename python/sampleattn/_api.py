"""The framework-neutral Python API over the C++ core (sampleattn._sampleattn).

Inputs are [batch, seq, heads, head_dim] tensors of any DLPack framework (NumPy, PyTorch CPU or CUDA,
CuPy, ...), read with zero copy whatever their (non-negative) strides. Outputs are allocated in the caller's
framework (torch in -> torch out, NumPy in -> NumPy out) on the input's device, and CUDA work runs on that
framework's current stream. An object that only implements the DLPack protocol (__dlpack__ and
__dlpack_device__) is imported with numpy.from_dlpack (CPU) or torch.from_dlpack (CUDA; CuPy without torch),
still without a copy; its outputs come back as NumPy arrays (CPU) or torch / CuPy tensors (CUDA). Bad input
raises sampleattn.Error (a ValueError), ValueError or TypeError naming the argument and the value: every
argument is checked here first where nanobind would answer with its generic "incompatible function arguments".

The library is inference-only: sample_attention, attend and dense_attention raise RuntimeError for torch
inputs that require grad while grad mode is on (run them under torch.no_grad() or torch.inference_mode()).
"""

from __future__ import annotations

import math
import operator
import sys
from typing import Any, Optional

from . import _sampleattn as _C

Error = _C.Error
Selection = _C.Selection
built_with_cuda: bool = _C.built_with_cuda

_BACKENDS = ("auto", "cpu", "cpu_reference", "cuda")
_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_DTYPES = "float32, float16 or bfloat16"
# DLPack device types (dlpack.h): read as host memory (kDLCPU, kDLCUDAHost), and kDLCUDA.
_DL_HOST = (1, 3)
_DL_CUDA = 2


def _torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_cuda(x: Any) -> bool:
    return _torch_tensor(x) and x.device.type == "cuda"


def _numpy_array(x: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(x, numpy.ndarray)


def _cupy_array(x: Any) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def _check_tensor(x: Any, name: str) -> None:
    if _torch_tensor(x) or _numpy_array(x) or _cupy_array(x):
        return
    if not (hasattr(x, "__dlpack__") or hasattr(x, "__array_interface__")):
        raise TypeError(
            f"{name} must be a DLPack tensor (NumPy, PyTorch, CuPy, ...) of shape [batch, seq, heads, head_dim], "
            f"not {type(x).__name__}"
        )


def _integer(name: str, value: Any, bounds: tuple = _INT64) -> int:
    """value as a Python int that fits the C++ parameter (int64 unless told), or an error naming it. The
    ranges that the settings must be in are the library's to check (its messages say them)."""
    try:
        result = operator.index(value)
    except TypeError:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
            raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
        try:
            as_float = float(value)
        except (TypeError, ValueError, OverflowError):
            raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
        if not math.isfinite(as_float) or as_float != math.floor(as_float):
            raise ValueError(f"{name} ({value!r}) must be an integer") from None
        result = int(as_float)
    lo, hi = bounds
    if not lo <= result <= hi:
        bits = 64 if bounds == _INT64 else 32
        raise ValueError(f"{name} ({result}) is out of range: it must fit in a signed {bits}-bit integer")
    return result


def _real(name: str, value: Any) -> float:
    """value as a Python float, or an error naming it (NaN passes: the library's range checks reject it)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} ({value!r}) is out of range for a float") from None
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}") from None


def _scale(scale: Any) -> Optional[float]:
    return None if scale is None else _real("scale", scale)


def _settings(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density) -> tuple:
    return (_real("alpha", alpha), _real("sample_ratio", sample_ratio), _real("window_ratio", window_ratio),
            _integer("min_window", min_window), _integer("sink_tokens", sink_tokens),
            _integer("dense_tail", dense_tail), _real("dense_head_density", dense_head_density))


def _threads(num_threads: Any) -> int:
    return _integer("num_threads", num_threads, _INT32)


def _torch_input(x: Any, name: str, grad: str) -> Any:
    import torch

    if x.is_nested:
        raise TypeError(f"{name} is a nested tensor: only dense (strided) tensors are supported")
    if x.layout != torch.strided:
        raise TypeError(f"{name} has layout {x.layout}: only dense (strided) tensors are supported "
                        f"(convert with {name}.to_dense())")
    if x.is_quantized:
        raise TypeError(f"{name}.dtype ({str(x.dtype).replace('torch.', '')}) is not supported: use {_DTYPES}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on device '{x.device}', which sampleattn does not support (only CPU and CUDA "
                         f"tensors)")
    if x.requires_grad:
        if grad == "raise" and torch.is_grad_enabled():
            raise RuntimeError(
                f"{name} requires grad, but sampleattn is inference-only (no autograd formula: the result would be "
                f"detached and its gradients silently lost); call it under torch.no_grad() or "
                f"torch.inference_mode(), or pass {name}.detach()"
            )
        x = x.detach()  # DLPack export refuses tensors that require grad
    # DLPack exports the raw memory: a lazy negated / conjugated view would be read with the wrong sign.
    if x.is_conj():
        x = x.resolve_conj()
    if x.is_neg():
        x = x.resolve_neg()
    return x


def _numpy_checks(x: Any, name: str) -> None:
    dtype = x.dtype
    if dtype.names is not None or (dtype.kind in "OSUVMm" and dtype.name != "bfloat16"):
        raise TypeError(f"{name}.dtype ({dtype}) is not supported: use {_DTYPES}")
    if not dtype.isnative:
        raise TypeError(f"{name}.dtype ({dtype.str}) has non-native byte order, which DLPack cannot carry: "
                        f"convert with {name}.astype({name}.dtype.newbyteorder('='))")


def _from_dlpack(x: Any, name: str) -> Any:
    """A bare DLPack producer as a NumPy array (host memory) or a torch / CuPy tensor (CUDA), without a copy."""
    if not hasattr(x, "__dlpack_device__"):
        raise TypeError(f"{name} ({type(x).__name__}) implements __dlpack__ but not __dlpack_device__")
    device_type = int(x.__dlpack_device__()[0])
    if device_type in _DL_HOST:
        import numpy as np

        try:
            return np.from_dlpack(x)
        except (TypeError, ValueError, BufferError, RuntimeError) as err:
            raise TypeError(f"{name} ({type(x).__name__}) could not be imported through DLPack: {err}") from None
    if device_type == _DL_CUDA:
        torch, cupy = sys.modules.get("torch"), sys.modules.get("cupy")
        if torch is not None:
            return torch.from_dlpack(x)
        if cupy is not None:
            return cupy.from_dlpack(x)
        raise TypeError(f"{name} ({type(x).__name__}) is a CUDA DLPack tensor, and neither torch nor CuPy is "
                        f"imported to allocate the outputs in: pass a torch or CuPy tensor")
    raise ValueError(f"{name} lives on DLPack device type {device_type}, which sampleattn does not support "
                     f"(only CPU and CUDA)")


def _as_input(x: Any, name: str, grad: str = "raise") -> Any:
    """Checks one tensor argument and returns what goes to the extension: torch tensors checked (layout, device,
    grad) and with their negative / conjugate bits resolved, NumPy dtypes checked, bare DLPack producers
    imported into NumPy / torch. grad: "raise" (a torch input that requires grad in grad mode is refused: the
    function returns a tensor without autograd) or "detach" (the result is no tensor, or the caller is the torch
    custom op, whose outputs raise on backward)."""
    _check_tensor(x, name)
    if _torch_tensor(x):
        return _torch_input(x, name, grad)
    if _numpy_array(x):
        _numpy_checks(x, name)
        return x
    if _cupy_array(x) or hasattr(x, "__array_namespace__"):
        return x  # it has a shape, a dtype and an allocator (_empty) of its own
    if hasattr(x, "__dlpack__"):
        x = _from_dlpack(x, name)
        if _numpy_array(x):
            _numpy_checks(x, name)
        return x
    import numpy as np

    x = np.asarray(x)  # __array_interface__ only
    _numpy_checks(x, name)
    return x


def _as_output(out: Any, grad: str = "raise") -> Any:
    """The `out` argument as handed to the extension (the caller gets its own object back)."""
    _check_tensor(out, "out")
    if _torch_tensor(out) and (out.is_neg() or out.is_conj()):
        raise ValueError("out has the negative or conjugate bit set (a lazy view such as x.conj().imag): values "
                         "written through it would read back negated; pass a plain tensor")
    out = _as_input(out, "out", grad)
    flags = getattr(out, "flags", None)
    if flags is not None and hasattr(flags, "writeable") and not flags.writeable:
        raise ValueError("out must be a writable tensor, but it is read-only")
    return out


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
    if _cupy_array(x):
        return int(sys.modules["cupy"].cuda.get_current_stream().ptr)
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
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ValueError(f"backend ({backend!r}) must be one of {', '.join(repr(b) for b in _BACKENDS)}")
    return backend


def _shape(x: Any) -> tuple:
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != 4:
        raise ValueError(f"tensors must have 4 dimensions [batch, seq, heads, head_dim], but one has shape {shape}")
    return shape


def _outputs(q: Any, out: Optional[Any], return_lse: bool):
    """(out as the caller gave it or a new tensor, out as handed to the extension, lse or None)."""
    b, s, h, d = _shape(q)
    if out is None:
        out = _empty(q, (b, s, h, d))
        out_view = out
    else:
        out_view = _as_output(out)
    lse = _empty(q, (b, h, s), float32=True) if return_lse else None
    return out, out_view, lse


def _result(out: Any, lse: Optional[Any], selection: Optional[Selection]):
    extra = tuple(x for x in (lse, selection) if x is not None)
    return (out, *extra) if extra else out


def _inputs(grad: str, **tensors: Any) -> tuple:
    return tuple(_as_input(x, name, grad) for name, x in tensors.items())


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
    Inference only: torch inputs that require grad raise RuntimeError in grad mode (use torch.no_grad()).
    """
    q, k, v = _inputs("raise", q=q, k=k, v=v)
    _check_backend(backend)
    settings = (bool(causal), _scale(scale),
                *_settings(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density))
    threads = _threads(num_threads)
    out, out_view, lse = _outputs(q, out, return_lse)
    with _DeviceGuard(q):
        if not return_selection and backend in ("auto", "cuda") and _torch_cuda(q) and _C.built_with_cuda:
            # Nothing has to come back to the host: the no-synchronisation path, workspace from torch's
            # caching allocator (stream-ordered), so the call can also be captured in a CUDA graph.
            import torch

            workspace = torch.empty(_C.cuda_workspace_size(q, k, *settings), dtype=torch.uint8, device=q.device)
            _C.cuda_sample_attention(q, k, v, out_view, lse, *settings, workspace, _stream(q))
            return _result(out, lse, None)
        selection = _C.sample_attention(q, k, v, out_view, lse, *settings, backend, threads, _stream(q))
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
    q, k = _inputs("detach", q=q, k=k)
    _check_backend(backend)
    settings = _settings(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density)
    threads = _threads(num_threads)
    with _DeviceGuard(q):
        return _C.select(q, k, bool(causal), _scale(scale), *settings, backend, threads, _stream(q))


def _check_selection(selection: Any) -> None:
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a sampleattn.Selection, not {type(selection).__name__}")


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
    q, k, v = _inputs("raise", q=q, k=k, v=v)
    _check_selection(selection)
    _check_backend(backend)
    scale, threads = _scale(scale), _threads(num_threads)
    out, out_view, lse = _outputs(q, out, return_lse)
    with _DeviceGuard(q):
        _C.attend(q, k, v, selection, out_view, lse, bool(selection.causal), scale, backend, threads, _stream(q))
    return _result(out, lse, None)


def window_attention(
    q: Any,
    k: Any,
    v: Any,
    window: int,
    *,
    causal: bool = True,
    scale: Optional[float] = None,
    return_lse: bool = False,
    out: Optional[Any] = None,
    backend: str = "auto",
    num_threads: int = 0,
):
    """Sliding-window attention, exact: causal row r keeps keys p(r) - window < j <= p(r) (non-causal:
    |j - p(r)| < window), at a cost that follows the band. On CUDA nothing is copied from the host, so the call
    can be captured in a CUDA graph."""
    q, k, v = _inputs("raise", q=q, k=k, v=v)
    _check_backend(backend)
    window = _integer("window", window)
    scale, threads = _scale(scale), _threads(num_threads)
    out, out_view, lse = _outputs(q, out, return_lse)
    with _DeviceGuard(q):
        _C.window_attention(q, k, v, window, out_view, lse, bool(causal), scale, backend, threads, _stream(q))
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
    q, k, v = _inputs("raise", q=q, k=k, v=v)
    _check_backend(backend)
    scale, threads = _scale(scale), _threads(num_threads)
    out, out_view, lse = _outputs(q, out, return_lse)
    with _DeviceGuard(q):
        _C.dense_attention(q, k, v, out_view, lse, bool(causal), scale, backend, threads, _stream(q))
    return _result(out, lse, None)


def _offsets(name: str, cu: Any) -> list:
    """cu_seqlens as a list of Python ints: a sequence of ints, or an integer numpy array / tensor on any device.
    Floats and bools are refused (a float32 offset above 2^24 would already be rounded)."""
    dtype = getattr(cu, "dtype", None)
    if dtype is not None:
        kind = getattr(dtype, "kind", None)
        if kind is None:  # torch
            kind = "b" if str(dtype) == "torch.bool" else ("f" if dtype.is_floating_point or dtype.is_complex else "i")
        if kind not in ("i", "u"):
            raise TypeError(f"{name} must hold integers, but its dtype is {dtype}")
        cu = cu.tolist()
    if isinstance(cu, (str, bytes, set, frozenset, dict)) or not hasattr(cu, "__iter__"):
        raise TypeError(f"{name} must be a sequence of n + 1 integer offsets, not {type(cu).__name__}")
    result = []
    for i, x in enumerate(cu):
        if isinstance(x, bool) or not hasattr(x, "__index__"):
            raise TypeError(f"{name}[{i}] must be an integer, not {type(x).__name__}")
        result.append(_integer(f"{name}[{i}]", x))
    return result


def _lse_by_head(lse: Any, cu_q: list):
    """The extension's per-sequence [q_heads, q_len] blocks as one [q_heads, total_q] array (FlashAttention's
    varlen layout), in lse's framework."""
    heads = int(lse.shape[1])
    spans = list(zip(cu_q[:-1], cu_q[1:]))
    if not spans:
        return lse[0]
    if _torch_tensor(lse):
        import torch

        flat = lse.reshape(-1)
        return torch.cat([flat[heads * a:heads * b].reshape(heads, b - a) for a, b in spans], dim=1)
    if hasattr(lse, "__array_namespace__"):
        xp = lse.__array_namespace__()
    else:
        xp = sys.modules[type(lse).__module__.split(".")[0]]  # numpy or cupy
    flat = xp.reshape(lse, (-1,))
    parts = [xp.reshape(flat[heads * a:heads * b], (heads, b - a)) for a, b in spans]
    return (getattr(xp, "concat", None) or xp.concatenate)(parts, axis=1)


def sample_attention_varlen(
    q: Any,
    k: Any,
    v: Any,
    cu_seqlens_q: Any,
    cu_seqlens_k: Any,
    *,
    alpha: float = 0.95,
    sample_ratio: float = 0.05,
    window_ratio: float = 0.08,
    sink_tokens: int = 0,
    causal: bool = True,
    scale: Optional[float] = None,
    return_lse: bool = False,
    return_selections: bool = False,
    min_window: int = 64,
    dense_tail: int = 0,
    dense_head_density: float = 1.0,
    out: Optional[Any] = None,
    backend: str = "auto",
    num_threads: int = 0,
):
    """sample_attention over a packed variable-length batch (FlashAttention's varlen form).

    q: [1, total_q, q_heads, head_dim]; k, v: [1, total_k, kv_heads, head_dim]; sequence i owns query rows
    cu_seqlens_q[i]:cu_seqlens_q[i + 1] and key rows cu_seqlens_k[i]:cu_seqlens_k[i + 1] (n + 1 offsets from 0,
    as a list, array or tensor) and is a prefill of its own: its queries are its last positions. Returns out
    like q; with return_lse also the float32 log-sum-exp [q_heads, total_q]; with return_selections also the
    list of per-sequence Selections (None where a sequence has no queries). Settings as in sample_attention.
    """
    q, k, v = _inputs("raise", q=q, k=k, v=v)
    _check_backend(backend)
    cu_q, cu_k = _offsets("cu_seqlens_q", cu_seqlens_q), _offsets("cu_seqlens_k", cu_seqlens_k)
    settings = (bool(causal), _scale(scale),
                *_settings(alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density))
    threads = _threads(num_threads)
    out, out_view, lse = _outputs(q, out, return_lse)
    with _DeviceGuard(q):
        if not return_selections and backend in ("auto", "cuda") and _torch_cuda(q) and _C.built_with_cuda:
            # As in sample_attention: nothing comes back to the host, so the no-synchronisation path, all
            # sequences on one workspace from torch's caching allocator.
            import torch

            size = _C.cuda_varlen_workspace_size(q, k, cu_q, cu_k, *settings)
            workspace = torch.empty(size, dtype=torch.uint8, device=q.device)
            _C.cuda_sample_attention_varlen(q, k, v, cu_q, cu_k, out_view, lse, *settings, workspace, _stream(q))
            return _result(out, None if lse is None else _lse_by_head(lse, cu_q), None)
        selections = _C.sample_attention_varlen(q, k, v, cu_q, cu_k, out_view, lse, *settings, backend, threads,
                                                _stream(q))
    selections = [s if s.batch > 0 else None for s in selections]
    return _result(out, None if lse is None else _lse_by_head(lse, cu_q),
                   selections if return_selections else None)


def dense_attention_varlen(
    q: Any,
    k: Any,
    v: Any,
    cu_seqlens_q: Any,
    cu_seqlens_k: Any,
    *,
    causal: bool = True,
    scale: Optional[float] = None,
    return_lse: bool = False,
    out: Optional[Any] = None,
    backend: str = "auto",
    num_threads: int = 0,
):
    """Exact attention over a packed variable-length batch (arguments and results as sample_attention_varlen)."""
    q, k, v = _inputs("raise", q=q, k=k, v=v)
    _check_backend(backend)
    cu_q, cu_k = _offsets("cu_seqlens_q", cu_seqlens_q), _offsets("cu_seqlens_k", cu_seqlens_k)
    scale, threads = _scale(scale), _threads(num_threads)
    out, out_view, lse = _outputs(q, out, return_lse)
    with _DeviceGuard(q):
        _C.dense_attention_varlen(q, k, v, cu_q, cu_k, out_view, lse, bool(causal), scale, backend, threads,
                                  _stream(q))
    return _result(out, None if lse is None else _lse_by_head(lse, cu_q), None)


def _rows(rows: Any) -> list:
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise TypeError(f"rows must be a sequence of query row indices, not {type(rows).__name__}")
    return [_integer(f"rows[{i}]", r) for i, r in enumerate(rows)]


def exact_metrics(q: Any, k: Any, v: Any, selection: Selection, rows=None, *, scale: Optional[float] = None,
                  num_rows: int = 64) -> dict:
    """Exact fp64 metrics of `selection` against dense attention on host tensors, per (batch, head):
    min_kept_mass (the paper's CRA), mean_kept_mass and rel_error of the sparse output, over `rows`
    (default: num_rows rows spread evenly, the last included). An empty `rows` raises sampleattn.Error."""
    q, k, v = _inputs("detach", q=q, k=k, v=v)
    _check_selection(selection)
    scale = _scale(scale)
    if rows is None:
        rows = _C.metric_rows(_shape(q)[1], _integer("num_rows", num_rows))
    return _C.exact_metrics(q, k, v, selection, _rows(rows), bool(selection.causal), scale)
