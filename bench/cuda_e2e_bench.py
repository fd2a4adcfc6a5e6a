#!/usr/bin/env python3
"""End-to-end CUDA benchmark and SDPA cross-check of sampleattn (device side; issue 3).

Drives the library through bench/cuda_e2e_capi.cpp (ctypes) on PyTorch tensors, in one process:
  --check   dense attention and alpha = 1 SampleAttention against PyTorch SDPA (cuDNN backend), bf16/fp16,
            GQA, head_dim 64/96/128/256, within the dtype's tolerance (src/core/tolerance.h); exit code 1 on failure.
  --bench   H200, bf16, Hq 32, Hkv 8, d 128 (--head-dim), causal, on the structured generator (include/sampleattn/workload.h):
            selection (stages 1 + 2) vs SDPA cuDNN (the faster of its native-GQA and pre-expanded forms, nothing
            but the attention call timed; in order, then alternately: alternating_ms), our dense
            kernel, sample_attention end to end with its density and exact CRA on sampled rows,
            FlexAttention given the same mask (--flex), and the worst case (uniform attention: q = 0)
            against our dense kernel. Each case prints its floor
            (FLOPs over the measured ceilings in ANCHORS.md) beside the time. JSON goes to --out.
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

MATMUL_TFLOPS = 740.0  # ANCHORS.md: bf16 8192^3 matrix product on this H200
COPY_TBS = 4.1
TOL = {torch.bfloat16: 1.6e-2, torch.float16: 2e-3}  # src/core/tolerance.h: max |out - ref| / max |v|


class SampleAttn:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.err = ctypes.create_string_buffer(2048)

    @staticmethod
    def _shape(q, k, v=None, out=None):
        B, Sq, Hq, d = q.shape
        sizes = (ctypes.c_int64 * 6)(B, Sq, k.shape[1], Hq, k.shape[2], d)
        st = []
        for t in (q, k, v if v is not None else k, out if out is not None else q):
            st += list(t.stride())
        return sizes, (ctypes.c_int64 * 16)(*st), 0 if q.dtype == torch.bfloat16 else 1

    @staticmethod
    def _config(cfg):
        keys = ("alpha", "sample_ratio", "window_ratio", "min_window", "sink_tokens", "dense_tail", "dense_head_density")
        defaults = dict(alpha=0.95, sample_ratio=0.05, window_ratio=0.08, min_window=64, sink_tokens=0, dense_tail=0,
                        dense_head_density=1.0)
        defaults.update(cfg or {})
        return (ctypes.c_double * len(keys))(*[float(defaults[k]) for k in keys])

    def _ok(self, rc):
        if rc != 0:
            raise RuntimeError(self.err.value.decode())

    @staticmethod
    def _p(t):
        return ctypes.c_void_p(t.data_ptr() if t is not None else 0)

    @staticmethod
    def _stream():
        return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def workspace(self, q, k, cfg=None, causal=True):
        sizes, strides, dt = self._shape(q, k)
        n = ctypes.c_uint64(0)
        self._ok(self.lib.sa_workspace_size(self._p(q), self._p(k), sizes, strides, dt, int(causal),
                                            self._config(cfg), ctypes.byref(n), self.err, 2048))
        return torch.empty(n.value, dtype=torch.uint8, device="cuda")

    def sample_attention(self, q, k, v, out, lse, ws, cfg=None, causal=True):
        sizes, strides, dt = self._shape(q, k, v, out)
        self._ok(self.lib.sa_sample_attention(self._p(q), self._p(k), self._p(v), self._p(out), self._p(lse), sizes,
                                              strides, dt, int(causal), self._config(cfg), self._p(ws),
                                              ctypes.c_uint64(ws.numel()), self._stream(), self.err, 2048))

    def select(self, q, k, ws, cfg=None, causal=True):
        sizes, strides, dt = self._shape(q, k)
        self._ok(self.lib.sa_select(self._p(q), self._p(k), sizes, strides, dt, int(causal), self._config(cfg),
                                    self._p(ws), ctypes.c_uint64(ws.numel()), self._stream(), self.err, 2048))

    def dense(self, q, k, v, out, lse=None, causal=True):
        sizes, strides, dt = self._shape(q, k, v, out)
        self._ok(self.lib.sa_dense(self._p(q), self._p(k), self._p(v), self._p(out), self._p(lse), sizes, strides,
                                   dt, int(causal), self._stream(), self.err, 2048))

    def selection(self, q, k, ws, cfg=None, causal=True):
        sizes, strides, dt = self._shape(q, k)
        bh = q.shape[0] * q.shape[2]
        sk = k.shape[1]
        counts = np.zeros(bh, np.int64)
        idx = np.zeros(bh * sk, np.int32)
        window = np.zeros(bh, np.int64)
        kept = np.zeros(bh, np.int64)
        visible = np.zeros(bh, np.int64)
        cov = np.zeros(bh, np.float64)
        P = lambda a: a.ctypes.data_as(ctypes.c_void_p)
        self._ok(self.lib.sa_selection(self._p(q), self._p(k), sizes, strides, dt, int(causal), self._config(cfg),
                                       self._p(ws), ctypes.c_uint64(ws.numel()), self._stream(), P(counts), P(idx),
                                       P(window), P(kept), P(visible), P(cov), self.err, 2048))
        return dict(counts=counts, indices=idx.reshape(bh, sk), window=window, kept=kept, visible=visible,
                    coverage=cov)

    def workload(self, S, Hq, Hkv, d, seed=1, mix=0):
        q = np.empty((1, S, Hq, d), np.uint16)
        k = np.empty((1, S, Hkv, d), np.uint16)
        v = np.empty((1, S, Hkv, d), np.uint16)
        P = lambda a: a.ctypes.data_as(ctypes.c_void_p)
        self._ok(self.lib.sa_workload(ctypes.c_int64(S), ctypes.c_int64(Hq), ctypes.c_int64(Hkv), ctypes.c_int64(d),
                                      ctypes.c_uint64(seed), ctypes.c_int(mix), P(q), P(k), P(v), self.err, 2048))
        to = lambda a: torch.from_numpy(a.view(np.int16)).cuda().view(torch.bfloat16)
        return to(q), to(k), to(v)


def time_ms(fn, reps, warmup=1):
    """Median device time of one call of fn (ms): reps calls enqueued back to back, each between two CUDA
    events, one synchronisation at the end (as triton.testing.do_bench). The GPU stays busy, so the host's
    share of a call (Python, ctypes, the library's argument checks and launches) is hidden wherever it is
    shorter than the call's device time, as it is in a model's prefill; enqueue_ms measures it on its own.
    The same for every kernel compared (SDPA, FlexAttention, ours)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in events:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return float(np.median([a.elapsed_time(b) for a, b in events]))


ALT_ROUNDS = 4


def alternating_ms(fn_a, reps_a, fn_b, reps_b, rounds=ALT_ROUNDS):
    """Medians over `rounds` rounds of time_ms(fn_a) and time_ms(fn_b), the two taking turns to go first, so
    that both see the same clock and temperature (the single-order figures time whatever runs later on a GPU
    warmed by what ran before)."""
    a, b = [], []
    for i in range(rounds):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            if which == 0:
                a.append(time_ms(fn_a, reps_a))
            else:
                b.append(time_ms(fn_b, reps_b))
    return float(np.median(a)), float(np.median(b))


def enqueue_ms(fn, reps=5):
    """Median host time (ms) for fn to return, the GPU idle before each call."""
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    torch.cuda.synchronize()
    return float(np.median(times))


def sdpa(q, k, v, backend, causal=True):
    """q [B, S, Hq, d], k/v [B, S, Hkv, d] -> [B, S, Hq, d]; K/V expanded to Hq heads outside the kernel."""
    g = q.shape[2] // k.shape[2]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if g > 1:
        kt, vt = kt.repeat_interleave(g, dim=1), vt.repeat_interleave(g, dim=1)
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).transpose(1, 2)


def cudnn_form(q, k, v, form):
    """SDPA cuDNN's causal attention as a callable: form "gqa" (enable_gqa on the [B, S, H, d] views of q [B, S,
    Hq, d], k/v [B, S, Hkv, d]) or "expanded" (K/V expanded to Hq heads here, once, outside any timing)."""
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if form == "expanded":
        g = q.shape[2] // k.shape[2]
        kt, vt = kt.repeat_interleave(g, dim=1), vt.repeat_interleave(g, dim=1)

    def call():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=form == "gqa")

    return call


def cudnn_baselines(q, k, v, reps):
    """SDPA cuDNN's causal attention on q [B, S, Hq, d], k/v [B, S, Hkv, d] in its two GQA forms, nothing but
    the attention call timed, the two alternately: "gqa" (enable_gqa on the [B, S, H, d] views) and "expanded"
    (K/V expanded to Hq heads once, outside the timing, as a model without GQA would hold them). Returns
    ({form: ms}, the faster form's callable, its name): the faster form is the baseline every ratio is taken
    against. The callable holds the expanded K/V when that form wins: drop it with the case."""
    times, fns = {}, {}
    for name in ("gqa", "expanded"):
        fn = cudnn_form(q, k, v, name)
        try:
            fn()
            fns[name] = fn
        except RuntimeError as e:  # a form this build's cuDNN lacks: recorded, the other one stands
            times[name + "_error"] = str(e)[:200]
    if len(fns) == 2:  # timed alternately: the one timed first would meet a cooler GPU (NOTES.md, 11th session)
        times["gqa"], times["expanded"] = alternating_ms(fns["gqa"], reps, fns["expanded"], reps)
    else:
        times.update({name: time_ms(fn, reps) for name, fn in fns.items()})
    best = min((t, name) for name, t in times.items() if not name.endswith("_error"))[1]
    return times, fns[best], best


def check(sa):
    ok = True
    cases = [(4096, 8, 2, 128, torch.bfloat16, True), (2048, 4, 4, 64, torch.float16, True),
             (1537, 8, 1, 128, torch.bfloat16, True), (1000, 4, 2, 64, torch.bfloat16, False),
             (2049, 8, 2, 96, torch.bfloat16, True), (1537, 4, 1, 256, torch.float16, True)]
    seed = int(os.environ.get("SAMPLEATTN_TEST_SEED", time.time()))
    print(f"check seed {seed} (SAMPLEATTN_TEST_SEED={seed} repeats it)")
    g = torch.Generator(device="cuda").manual_seed(seed)
    for S, Hq, Hkv, d, dt, causal in cases:
        q = torch.randn(1, S, Hq, d, device="cuda", dtype=dt, generator=g)
        k = torch.randn(1, S, Hkv, d, device="cuda", dtype=dt, generator=g)
        v = torch.randn(1, S, Hkv, d, device="cuda", dtype=dt, generator=g)
        ref = sdpa(q, k, v, SDPBackend.CUDNN_ATTENTION, causal).float()
        vmax = v.abs().max().item()
        out = torch.full_like(q, float("nan"))
        sa.dense(q, k, v, out, causal=causal)
        e_dense = (out.float() - ref).abs().max().item()
        out2 = torch.full_like(q, float("nan"))
        ws = sa.workspace(q, k, dict(alpha=1.0), causal)
        sa.sample_attention(q, k, v, out2, None, ws, dict(alpha=1.0), causal)
        e_one = (out2.float() - ref).abs().max().item()
        tol = TOL[dt] * vmax
        good = e_dense <= tol and e_one <= tol  # NaN compares False
        ok &= good
        print(f"check S={S} Hq={Hq} Hkv={Hkv} d={d} {str(dt)[6:]} causal={causal}: dense err {e_dense:.2e}, "
              f"alpha=1 err {e_one:.2e}, tol {tol:.2e} vs SDPA cuDNN: {'ok' if good else 'FAIL'}")
    return ok


def kept_mask_rows(sel, rows, S, Hq, window):
    """bool [Hq, len(rows), S]: band + kept columns + causality for the given rows (Sq == Sk)."""
    cols = torch.zeros(Hq, S, dtype=torch.bool, device="cuda")
    for h in range(Hq):
        c = torch.from_numpy(sel["indices"][h, : sel["counts"][h]].astype(np.int64)).cuda()
        cols[h, c] = True
    r = torch.tensor(rows, device="cuda")[:, None]
    j = torch.arange(S, device="cuda")[None, :]
    band = (j <= r) & (j > r - window)
    return (band[None] | cols[:, None, :]) & (j <= r)[None], cols


def exact_metrics(q, k, v, out, sel, window, nrows=64):
    """Exact kept mass (CRA = its min) and relative error of `out` vs dense attention, on nrows rows, fp32."""
    S, Hq, d, Hkv = q.shape[1], q.shape[2], q.shape[3], k.shape[2]
    rows = [(i + 1) * S // nrows - 1 for i in range(nrows)]
    mask, _ = kept_mask_rows(sel, rows, S, Hq, window)
    g = Hq // Hkv
    kf = k[0].float().repeat_interleave(g, dim=1).transpose(0, 1)  # [Hq, S, d]
    vf = v[0].float().repeat_interleave(g, dim=1).transpose(0, 1)
    qr = q[0, rows].float().transpose(0, 1)  # [Hq, R, d]
    s = qr @ kf.transpose(1, 2) / math.sqrt(d)  # [Hq, R, S]
    r = torch.tensor(rows, device="cuda")[:, None]
    s = s.masked_fill(torch.arange(S, device="cuda")[None, :] > r, float("-inf"))
    p = torch.softmax(s, dim=-1)
    kept = (p * mask).sum(-1)  # [Hq, R]
    dense_o = p @ vf
    ours = out[0, rows].float().transpose(0, 1)
    rel = ((ours - dense_o).norm() / dense_o.norm()).item()
    return kept.min().item(), kept.mean().item(), rel


def flex_time(q, k, v, sel, window, reps):
    fn, setup = flex_fn(q, k, v, sel, window)
    return time_ms(fn, reps), setup


def flex_fn(q, k, v, sel, window):
    """FlexAttention (compiled) given the mask of `sel`, as a callable, run once; and its setup time (s)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    S, Hq = q.shape[1], q.shape[2]
    _, cols = kept_mask_rows(sel, [0], S, Hq, window)

    def mask_mod(b, h, qi, ki):
        return (ki <= qi) & ((qi - ki < window) | cols[h, ki])

    t0 = time.time()
    bm = create_block_mask(mask_mod, 1, Hq, S, S, device="cuda", _compile=True)
    fa = torch.compile(flex_attention, dynamic=False)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    fn = lambda: fa(qt, kt, vt, block_mask=bm, enable_gqa=True)
    fn()
    torch.cuda.synchronize()
    return fn, time.time() - t0


def kernel_profile(fn):
    """Per-kernel device time (ms) of one call of fn, through the PyTorch profiler (CUPTI)."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None)
        if t is None:
            t = getattr(e, "cuda_time_total", 0.0)
        if t > 0:
            rows.append((e.key[:60], t / 1000.0 / max(1, e.count)))
    return sorted(rows, key=lambda x: -x[1])


MIXES = {"default": 0, "no-dense": 1}  # head profile mixes of bench/cuda_e2e_capi.cpp sa_workload


def bench(sa, lengths, flex_lengths, reps, mixes=("default",), on_case=lambda results: None, d=128):
    """Every (length, head mix) case; on_case(results) after each one (the JSON is written as it grows)."""
    Hq, Hkv = 32, 8
    results = []
    for S, mix in [(S, m) for S in lengths for m in mixes]:
        print(f"== S={S}  (Hq {Hq}, Hkv {Hkv}, d {d}, bf16, causal, structured workload, {mix} head mix)", flush=True)
        t0 = time.time()
        q, k, v = sa.workload(S, Hq, Hkv, d, seed=7, mix=MIXES[mix])
        print(f"   workload generated in {time.time() - t0:.1f} s", flush=True)
        r = 3 if S > 65536 else reps
        dense_flops = 4.0 * S * S * d * Hq / 2
        stamps = {"cudnn": time.time()}  # wall clock at each phase's start (matched to a clock log)
        cudnn_forms, cudnn_fn, cudnn_name = cudnn_baselines(q, k, v, r)
        t_cudnn = cudnn_forms[cudnn_name]
        out = torch.empty_like(q)
        stamps["dense"] = time.time()
        t_dense = time_ms(lambda: sa.dense(q, k, v, out), r)
        cfg = {}
        ws = sa.workspace(q, k, cfg)
        stamps["selection"] = time.time()
        t_sel = time_ms(lambda: sa.select(q, k, ws, cfg), max(r, 5))
        t_sel_host = enqueue_ms(lambda: sa.select(q, k, ws, cfg))
        stamps["alternating"] = time.time()
        t_cudnn_alt, t_sel_alt = alternating_ms(cudnn_fn, r, lambda: sa.select(q, k, ws, cfg), max(r, 5))
        out.fill_(float("nan"))
        stamps["sample_attention"] = time.time()
        t_e2e = time_ms(lambda: sa.sample_attention(q, k, v, out, None, ws, cfg), r)
        stamps["end"] = time.time()
        sel = sa.selection(q, k, ws, cfg)
        prof = kernel_profile(lambda: sa.sample_attention(q, k, v, out, None, ws, cfg))
        print("   kernels: " + "; ".join(f"{name} {ms:.3f} ms" for name, ms in prof), flush=True)
        window = int(sel["window"][0])
        density = sel["kept"].sum() / sel["visible"].sum()
        n = max(1, math.ceil(0.05 * S - 1e-9 * 0.05 * S))
        sel_flops = 2 * 2.0 * d * Hq * sum((i + 1) * S // n for i in range(n))
        kept_flops = 4.0 * d * float(sel["kept"].sum())
        cra_min, cra_mean, rel = exact_metrics(q, k, v, out, sel, window)
        # The same with dense_head_density 0.75 (ours): heads keeping >= 75% of their entries run dense. After
        # the default case's metrics: out and the workspace now hold this run's results.
        dhr = dict(cfg, dense_head_density=0.75)
        t_e2e_dhr = time_ms(lambda: sa.sample_attention(q, k, v, out, None, ws, dhr), r)
        sel_dhr = sa.selection(q, k, ws, dhr)
        cra_min_dhr, cra_mean_dhr, rel_dhr = exact_metrics(q, k, v, out, sel_dhr, window)
        case = dict(seq=S, head_mix=mix, kernels_ms={name: ms for name, ms in prof}, q_heads=Hq, kv_heads=Hkv, head_dim=d, dtype="bf16",
                    sdpa_cudnn_ms=t_cudnn, sdpa_cudnn_form=cudnn_name, sdpa_cudnn_forms_ms=cudnn_forms,
                    wall_stamps=stamps, ours_dense_ms=t_dense, selection_ms=t_sel, selection_enqueue_ms=t_sel_host,
                    sample_attention_ms=t_e2e,
                    selection_pct_of_cudnn=100 * t_sel / t_cudnn, speedup_vs_cudnn=t_cudnn / t_e2e,
                    sdpa_cudnn_alternating_ms=t_cudnn_alt, selection_alternating_ms=t_sel_alt,
                    selection_pct_of_cudnn_alternating=100 * t_sel_alt / t_cudnn_alt,
                    sample_attention_dhd075_ms=t_e2e_dhr, speedup_vs_cudnn_dhd075=t_cudnn / t_e2e_dhr,
                    density_dhd075=float(sel_dhr["kept"].sum() / sel_dhr["visible"].sum()),
                    exact_cra_min_dhd075=cra_min_dhr, exact_kept_mass_mean_dhd075=cra_mean_dhr,
                    rel_error_vs_dense_dhd075=rel_dhr,
                    density=float(density), min_sampled_coverage=float(sel["coverage"].min()),
                    exact_cra_min=cra_min, exact_kept_mass_mean=cra_mean, rel_error_vs_dense=rel, window=window,
                    floor_dense_ms=dense_flops / MATMUL_TFLOPS / 1e9, floor_selection_ms=sel_flops / MATMUL_TFLOPS / 1e9,
                    floor_sample_attention_ms=(sel_flops + kept_flops) / MATMUL_TFLOPS / 1e9,
                    selection_tflops=sel_flops / t_sel / 1e9)
        print(f"   SDPA cuDNN {t_cudnn:8.2f} ms ({cudnn_name}; forms {json.dumps(cudnn_forms)}) | ours dense "
              f"{t_dense:8.2f} ms (floor {case['floor_dense_ms']:.2f})")
        print(f"   selection  {t_sel:8.2f} ms = {case['selection_pct_of_cudnn']:.1f}% of cuDNN (floor "
              f"{case['floor_selection_ms']:.2f} ms, {case['selection_tflops']:.0f} TFLOP/s) target <= 8%; host "
              f"enqueue {t_sel_host:.3f} ms")
        print(f"   timed alternately ({ALT_ROUNDS} rounds): selection {t_sel_alt:.2f} ms, cuDNN {t_cudnn_alt:.2f} ms: "
              f"{case['selection_pct_of_cudnn_alternating']:.1f}%")
        print(f"   sample_attention {t_e2e:8.2f} ms (floor {case['floor_sample_attention_ms']:.2f}) = "
              f"{case['speedup_vs_cudnn']:.2f}x vs cuDNN; density {density:.4f}, exact CRA (min kept mass, 64 rows) "
              f"{cra_min:.4f}, mean {cra_mean:.4f}, rel err vs dense {rel:.2e}, min sampled coverage "
              f"{case['min_sampled_coverage']:.4f}", flush=True)
        print(f"   with dense_head_density 0.75: sample_attention {t_e2e_dhr:8.2f} ms = {t_cudnn / t_e2e_dhr:.2f}x vs "
              f"cuDNN; density {case['density_dhd075']:.4f}, exact CRA {cra_min_dhr:.4f}, mean {cra_mean_dhr:.4f}, "
              f"rel err vs dense {rel_dhr:.2e}", flush=True)
        if S in flex_lengths:
            try:
                t_flex, setup = flex_time(q, k, v, sel, window, r)
                case.update(flex_same_mask_ms=t_flex, flex_setup_s=setup, speedup_vs_flex=t_flex / t_e2e)
                print(f"   FlexAttention same mask {t_flex:8.2f} ms (setup {setup:.0f} s) -> ours "
                      f"{t_flex / t_e2e:.2f}x faster (target >= 3x at 128K)", flush=True)
                t_flex_dhr, _ = flex_time(q, k, v, sel_dhr, window, r)
                case.update(flex_same_mask_dhd075_ms=t_flex_dhr, speedup_vs_flex_dhd075=t_flex_dhr / t_e2e_dhr)
                print(f"   with dense_head_density 0.75: FlexAttention same mask {t_flex_dhr:8.2f} ms -> ours "
                      f"{t_flex_dhr / t_e2e_dhr:.2f}x faster", flush=True)
            except Exception as e:  # report and go on: the rest of the run still counts
                case["flex_error"] = repr(e)[:300]
                print(f"   FlexAttention failed: {case['flex_error']}", flush=True)
        # Worst case: uniform attention (q = 0: every visible key equally likely) against our dense kernel.
        if mix != mixes[0]:
            results.append(case)
            on_case(results)
            del q, k, v, out, ws, cudnn_fn
            torch.cuda.empty_cache()
            continue
        # Three settings: the defaults (alpha 0.95 keeps ~95% of the columns), dense_head_density 0.75 (such heads
        # run dense), and alpha 1 (literally nothing to skip: every column kept).
        qz = torch.zeros_like(q)
        t_uni_dense = time_ms(lambda: sa.dense(qz, k, v, out), r)
        case.update(uniform_dense_ms=t_uni_dense)
        for tag, ucfg in (("uniform", cfg), ("uniform_dhd075", dict(cfg, dense_head_density=0.75)),
                          ("uniform_alpha1", dict(cfg, alpha=1.0))):
            t_uni = time_ms(lambda: sa.sample_attention(qz, k, v, out, None, ws, ucfg), r)
            # Also timed alternately with our dense kernel: under the power cap the SM clock follows what ran
            # just before, so the in-order ratio carries that drift (bench/NOTES.md, eleventh session).
            t_dense_alt, t_uni_alt = alternating_ms(lambda: sa.dense(qz, k, v, out), r,
                                                    lambda: sa.sample_attention(qz, k, v, out, None, ws, ucfg), r)
            usel = sa.selection(qz, k, ws, ucfg)
            case.update({f"{tag}_sample_attention_ms": t_uni, f"{tag}_ratio_vs_dense": t_uni / t_uni_dense,
                         f"{tag}_alternating_ms": {"dense": t_dense_alt, "sample_attention": t_uni_alt},
                         f"{tag}_ratio_vs_dense_alternating": t_uni_alt / t_dense_alt,
                         f"{tag}_density": float(usel["kept"].sum() / usel["visible"].sum()), f"{tag}_config": ucfg})
            print(f"   {tag}: sample_attention {t_uni:8.2f} ms vs ours dense {t_uni_dense:8.2f} ms = "
                  f"{t_uni / t_uni_dense:.3f}x (target <= 1.10); alternately {t_uni_alt:.2f} / {t_dense_alt:.2f} ms = "
                  f"{t_uni_alt / t_dense_alt:.3f}x; density {case[f'{tag}_density']:.3f} ({ucfg})", flush=True)
        results.append(case)
        on_case(results)
        del q, k, v, out, ws, qz, cudnn_fn
        torch.cuda.empty_cache()
    return results


def profile_call(sa, what, S, mix):
    """One call of `what` (cudnn-gqa, cudnn-expanded, selection, sample-attention, flex: FlexAttention given
    sample_attention's mask; uniform and uniform-dense: the worst case, sample_attention and our dense kernel on
    q = 0) on the structured workload
    inside the NVTX range "m", after a warm-up outside it: for a profiler that counts the call's kernel cycles
    (ncu --nvtx --nvtx-include m/), which do not depend on the clock the power limit sets."""
    q, k, v = sa.workload(S, 32, 8, 128, seed=7, mix=MIXES[mix])
    out = torch.empty_like(q)
    cfg = {}
    ws = sa.workspace(q, k, cfg)
    if what.startswith("uniform"):
        q = torch.zeros_like(q)  # every visible key equally likely: little to skip
    if what == "flex":
        sa.select(q, k, ws, cfg)  # selection() reads the selection from the workspace
        sel = sa.selection(q, k, ws, cfg)
        fn, _ = flex_fn(q, k, v, sel, int(sel["window"][0]))
    elif what.startswith("cudnn-"):
        fn = cudnn_form(q, k, v, what[len("cudnn-"):])
    else:
        call = "sample-attention" if what == "uniform" else what  # on the zeroed q
        fn = {"selection": lambda: sa.select(q, k, ws, cfg),
              "sample-attention": lambda: sa.sample_attention(q, k, v, out, None, ws, cfg),
              "uniform-dense": lambda: sa.dense(q, k, v, out)}[call]
    fn()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("m")
    fn()
    torch.cuda.nvtx.range_pop()
    torch.cuda.synchronize()
    print(json.dumps({"profiled": what, "seq": S, "mix": mix}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--lengths", default="32768,131072")
    ap.add_argument("--flex", default="", help="lengths at which to time FlexAttention, e.g. 131072")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mixes", default="default", help="head profile mixes, e.g. default,no-dense")
    ap.add_argument("--out", default="")
    ap.add_argument("--head-dim", type=int, default=128, help="--bench head_dim (64, 96, 128 or 256)")
    ap.add_argument("--commit", default=os.environ.get("SAMPLEATTN_COMMIT", "unknown"))
    ap.add_argument("--profile-call", default="",
                    help="only one call of cudnn-gqa, cudnn-expanded, selection, sample-attention, flex, uniform or "
                         "uniform-dense (first of --lengths and --mixes) inside the NVTX range m, for ncu")
    a = ap.parse_args()
    sa = SampleAttn(a.lib)
    if a.profile_call:
        profile_call(sa, a.profile_call, int(a.lengths.split(",")[0]), a.mixes.split(",")[0])
        return
    ok = True
    if a.check:
        ok = check(sa)
    if a.bench:
        lengths = [int(x) for x in a.lengths.split(",") if x]
        flex = [int(x) for x in a.flex.split(",") if x]
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()

        def write(cases):
            doc = dict(gpu=torch.cuda.get_device_name(), nvidia_smi=smi, torch=torch.__version__,
                       date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), commit=a.commit,
                       ceilings=dict(matmul_bf16_tflops=MATMUL_TFLOPS, copy_tbs=COPY_TBS, source="ANCHORS.md"),
                       timing="median of per-call CUDA events, calls enqueued back to back (time_ms)",
                       cases=cases)
            if a.out:
                with open(a.out, "w") as f:
                    json.dump(doc, f, indent=1)

        bench(sa, lengths, flex, a.reps, [m for m in a.mixes.split(",") if m], write, a.head_dim)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
