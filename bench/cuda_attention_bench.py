#!/usr/bin/env python3
"""Device benchmark of the CUDA attention kernels (src/cuda/attention.h) against PyTorch SDPA.

Drives run_attention on PyTorch tensors through the C entry point in bench/cuda_attention_capi.cpp (one
shared library per kernel variant, --lib NAME=PATH, the first is the primary), on the same inputs and in
the same run as SDPA's cuDNN and flash backends. Cases (issue 3): H200, bf16, Hq 32, Hkv 8, d 128, causal,
S in 8K / 32K / 128K (--head-dim: the same cases at another head_dim):
  dense      ours vs SDPA cuDNN and flash; our output checked against cuDNN's within the bf16 tolerance;
  sparse     window + random columns at kept densities ~5/10/20/50%: effective TFLOP/s over kept entries;
  minference window 8% + 1024 random columns per head: time vs cuDNN dense (targets 2.81x / 3.79x);
  uniform    window 8% + 95% of the columns (what uniform attention selects): time vs our dense kernel;
  checks     sparse outputs on sampled rows against an fp32 masked softmax in PyTorch, also at 1M tokens.
Each timing is the median of several runs with L2 flushed before each (a 256 MiB write), CUDA events
around the kernel only; kernel variants (--lib) are timed in interleaved rounds (time_interleaved), and each
sparse case with the primary's dense kernel in the same rounds (eff_vs_dense_paired: both at the same clock).
Writes one JSON file (GPU, driver, date, commit, every case) and prints a table.
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

PEAK_TFLOPS = 740.0  # measured bf16 8192^3 product on this H200 (ANCHORS.md)
PEAK_TBPS = 4.1  # measured device-to-device copy
BF16_TOL = 1.6e-2  # src/core/tolerance.h: max |out - ref| / max |v|


class Kernel:
    """ctypes wrapper of sa_attention (bench/cuda_attention_capi.cpp)."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        f = self.lib.sa_attention
        vp, i64 = ctypes.c_void_p, ctypes.c_int64
        f.argtypes = [vp, vp, vp, vp, vp, vp, vp, ctypes.c_int, ctypes.c_float, ctypes.c_int,
                      vp, vp, vp, vp, vp, i64, i64, i64, vp, ctypes.c_char_p, ctypes.c_int]
        f.restype = ctypes.c_int
        self.fn = f
        self.err = ctypes.create_string_buffer(512)

    def __call__(self, q, k, v, out, lse=None, causal=True, sel=None, scale=None):
        strides = (ctypes.c_int64 * 16)(*q.stride(), *k.stride(), *v.stride(), *out.stride())
        b, sq, hq, d = q.shape
        sizes = (ctypes.c_int64 * 6)(b, sq, k.shape[1], hq, k.shape[2], d)
        dtype = 0 if q.dtype == torch.bfloat16 else 1
        scale = 1.0 / math.sqrt(d) if scale is None else scale
        ptr = lambda t: None if t is None else t.data_ptr()
        s = sel or {}
        rc = self.fn(ptr(q), ptr(k), ptr(v), ptr(out), ptr(lse), strides, sizes, dtype, scale, int(causal),
                     ptr(s.get("window")), ptr(s.get("indices")), ptr(s.get("offsets")), ptr(s.get("counts")),
                     ptr(s.get("bitmap")), s.get("words", 0), s.get("dense_tail", 0), s.get("w", 0),
                     torch.cuda.current_stream().cuda_stream, self.err, 512)
        if rc != 0:
            raise RuntimeError(self.err.value.decode())


def make_selection(bh, seq, window, ncols, gen):
    """Window `window` and `ncols` distinct random columns per head (sorted), as device arrays + bitmap."""
    dev = "cuda"
    ncols = min(ncols, seq)
    cols = torch.stack([torch.randperm(seq, device=dev, generator=gen)[:ncols] for _ in range(bh)])
    cols = cols.sort(dim=1).values
    words = (seq + 31) // 32
    bitmap = torch.zeros(bh, words, dtype=torch.int64, device=dev)
    bitmap.scatter_add_(1, cols // 32, torch.ones_like(cols) << (cols % 32))
    bitmap = torch.where(bitmap >= 2**31, bitmap - 2**32, bitmap).to(torch.int32)
    return {
        "window": torch.full((bh,), window, dtype=torch.int32, device=dev),
        "indices": cols.to(torch.int32).reshape(-1).contiguous(),
        "offsets": torch.arange(bh, dtype=torch.int64, device=dev) * ncols,
        "counts": torch.full((bh,), ncols, dtype=torch.int32, device=dev),
        "bitmap": bitmap.contiguous(),
        "words": words,
        "dense_tail": 0,
        "cols": cols,
        "w": window,
    }


def kept_entries(seq, window, cols):
    """Causal, Sq = Sk = seq: band entries + column entries outside the band, summed over heads."""
    w = min(window, seq)
    band = w * (w + 1) // 2 + (seq - w) * w
    col_part = torch.clamp(seq - cols.to(torch.int64) - w, min=0).sum().item()
    return band * cols.shape[0] + col_part


def flush_buffer():
    return torch.empty(256 * 1024 * 1024 // 4, dtype=torch.float32, device="cuda")


def time_interleaved(fns, flush, reps, warmup=1):
    """Median ms of each of `fns`, timed in rounds: each round runs every fn once after an L2 flush, in an
    order rotated by one per round, so that drift over the rounds (clocks, temperature) and the position
    after another kernel fall on every fn alike (variants of one kernel are compared in one call)."""
    times = [[] for _ in fns]
    for r in range(warmup + reps):
        for k in range(len(fns)):
            i = (k + r) % len(fns)
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fns[i]()
            end.record()
            torch.cuda.synchronize()
            if r >= warmup:
                times[i].append(start.elapsed_time(end))
    return [sorted(t)[len(t) // 2] for t in times]


def time_ms(fn, flush, reps, warmup=1):
    return time_interleaved([fn], flush, reps, warmup)[0]


def sdpa_fn(q, k, v, backend, causal=True):
    """SDPA on [B, S, H, D] tensors (transposed views); GQA through enable_gqa, else expanded K/V."""
    from torch.nn.attention import sdpa_kernel

    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    group = q.shape[2] // k.shape[2]

    def run_gqa():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=True)

    try:
        run_gqa()
        torch.cuda.synchronize()
        return run_gqa, "enable_gqa"
    except Exception:
        ke = kt.repeat_interleave(group, dim=1)
        ve = vt.repeat_interleave(group, dim=1)

        def run_expanded():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, ke, ve, is_causal=causal)

        run_expanded()
        torch.cuda.synchronize()
        return run_expanded, "expanded"


def check_rows(q, k, v, out, lse, sel, causal, rows, heads):
    """Sparse outputs on sampled rows vs an fp32 masked softmax (band | kept column, visible)."""
    sq, sk, hq, hkv = q.shape[1], k.shape[1], q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[3])
    worst, worst_lse, vmax = 0.0, 0.0, 0.0
    rows_t = torch.tensor(rows, device="cuda", dtype=torch.int64)
    pos = sk - sq + rows_t
    j = torch.arange(sk, device="cuda")
    for h in heads:
        kvh = h // (hq // hkv)
        kf, vf = k[0, :, kvh].float(), v[0, :, kvh].float()
        vmax = max(vmax, vf.abs().max().item())
        s = (q[0, rows_t, h].float() @ kf.T) * scale
        colmask = torch.zeros(sk, dtype=torch.bool, device="cuda")
        colmask[sel["cols"][h].long()] = True
        w = sel["w"]
        dist = j[None, :] - pos[:, None]
        band = (dist > -w) & (dist <= 0) if causal else (dist > -w) & (dist < w)
        keep = band | colmask[None, :]
        if causal:
            keep &= dist <= 0
        s = s.masked_fill(~keep, float("-inf"))
        ref_lse = torch.logsumexp(s, dim=1)
        ref = torch.softmax(s, dim=1) @ vf
        got = out[0, rows_t, h].float()
        got_lse = lse[0, h, rows_t]
        # A NaN difference would lose every max() comparison and read as 0: unwritten rows count as inf.
        worst = max(worst, (got - ref).abs().max().item() if torch.isfinite(got).all() else float("inf"))
        worst_lse = max(worst_lse,
                        (got_lse - ref_lse).abs().max().item() if torch.isfinite(got_lse).all() else float("inf"))
    return worst / vmax, worst_lse


def run(args):
    torch.manual_seed(args.seed)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(args.seed)
    kernels = [(name, Kernel(path)) for name, path in (s.split("=", 1) for s in args.lib)]
    primary_name, primary = kernels[0]
    from torch.nn.attention import SDPBackend

    flush = flush_buffer()
    results = {"cases": [], "checks": []}
    hq, hkv, d, dt = 32, 8, args.head_dim, torch.bfloat16

    def log(msg):
        print(msg, flush=True)

    def new_qkv(seq, b=1, hq=hq, hkv=hkv, d=d, dtype=dt):
        q = torch.randn(b, seq, hq, d, device="cuda", dtype=dtype, generator=gen)
        k = torch.randn(b, seq, hkv, d, device="cuda", dtype=dtype, generator=gen)
        v = torch.randn(b, seq, hkv, d, device="cuda", dtype=dtype, generator=gen)
        return q, k, v

    def floor_ms(flops, nbytes):
        return max(flops / (PEAK_TFLOPS * 1e12), nbytes / (PEAK_TBPS * 1e12)) * 1e3

    dense_tflops = {}

    def one_length(seq):
        reps = args.reps or (3 if seq >= 65536 else 5)
        q, k, v = new_qkv(seq)
        out = torch.full_like(q, float("nan"))
        lse = torch.full((1, hq, seq), float("nan"), device="cuda")
        flops = 4.0 * seq * seq * d * hq / 2
        nbytes = 2 * (q.numel() * 2 + k.numel() + v.numel())
        case = {"kind": "dense", "seq": seq, "hq": hq, "hkv": hkv, "d": d, "dtype": "bf16", "causal": True,
                "flops": flops, "floor_ms": floor_ms(flops, nbytes)}
        for backend_name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            try:
                fn, how = sdpa_fn(q, k, v, backend)
                case[f"sdpa_{backend_name}_ms"] = time_ms(fn, flush, reps)
                case[f"sdpa_{backend_name}_gqa"] = how
                if backend_name == "cudnn":
                    ref = fn().transpose(1, 2)
            except Exception as e:  # a backend missing on this build: recorded, not fatal
                case[f"sdpa_{backend_name}_error"] = str(e)[:200]
        for name, kern in kernels:
            out.fill_(float("nan"))
            kern(q, k, v, out, lse)
            torch.cuda.synchronize()
            if "sdpa_cudnn_ms" in case:
                err = ((out.float() - ref.float()).abs().max() / v.float().abs().max()).item()
                case[f"{name}_err_vs_cudnn"] = err
                results["checks"].append({"what": f"dense {seq} {name} vs cudnn", "err": err, "tol": BF16_TOL,
                                          "ok": bool(err <= BF16_TOL)})
            else:  # the check could not run: recorded as failed, never left out
                results["checks"].append({"what": f"dense {seq} {name} vs cudnn", "ok": False,
                                          "error": "no SDPA cuDNN reference"})
        fns = [lambda kern=kern: kern(q, k, v, out, lse) for _, kern in kernels]
        for (name, _), ms in zip(kernels, time_interleaved(fns, flush, reps)):
            case[f"{name}_ms"] = ms
            case[f"{name}_tflops"] = flops / ms / 1e9
        dense_tflops[seq] = case[f"{primary_name}_tflops"]
        results["cases"].append(case)
        log(json.dumps(case))
        if "sdpa_cudnn_ms" in case:
            del ref

        # Sparse: synthetic densities, then the MInference comparison mask, primary kernel (and the others
        # on the MInference mask).
        sparse_specs = [(f"density~{t:.2f}", *density_spec(seq, t)) for t in (0.05, 0.10, 0.20, 0.50)]
        sparse_specs.append(("minference w8%+1024", math.ceil(0.08 * seq), 1024))
        # What uniform attention selects (alpha 0.95 needs ~95% of the columns): the worst case of issue 3.
        sparse_specs.append(("uniform-like w8%+95%", math.ceil(0.08 * seq), math.ceil(0.95 * seq)))
        for label, w, ncols in sparse_specs:
            sel = make_selection(hq, seq, w, ncols, gen)
            kept = kept_entries(seq, w, sel["cols"])
            density = kept / (hq * seq * (seq + 1) / 2)
            sflops = 4.0 * kept * d
            scase = {"kind": "sparse", "label": label, "seq": seq, "window": w, "columns": ncols,
                     "density": density, "kept_flops": sflops,
                     "floor_ms": floor_ms(sflops, nbytes)}
            runners = kernels
            for name, kern in runners:
                out.fill_(float("nan"))
                lse.fill_(float("nan"))
                kern(q, k, v, out, lse, sel=sel)
                torch.cuda.synchronize()
                rows = sorted({0, 1, seq // 3, seq // 2 + 5, seq - 129, seq - 2, seq - 1})
                err, err_lse = check_rows(q, k, v, out, lse, sel, True, rows, [0, 5, hq - 1])
                ok = err <= BF16_TOL and err_lse <= 2e-3
                results["checks"].append({"what": f"sparse {seq} {label} {name} rows", "err": err,
                                          "err_lse": err_lse, "ok": bool(ok)})
            # The primary's dense kernel runs in the same rounds (the last fn), so that eff_vs_dense_paired compares
            # the two at the same clock: under the power cap the SM clock follows what ran before (NOTES.md).
            fns = [lambda kern=kern: kern(q, k, v, out, lse, sel=sel) for _, kern in runners]
            fns.append(lambda: primary(q, k, v, out, lse))
            times = time_interleaved(fns, flush, reps)
            for (name, _), ms in zip(runners, times):
                scase[f"{name}_ms"] = ms
                scase[f"{name}_eff_tflops"] = sflops / ms / 1e9
            scase["paired_dense_ms"] = times[-1]
            scase["eff_vs_dense"] = scase[f"{primary_name}_eff_tflops"] / dense_tflops[seq]
            scase["eff_vs_dense_paired"] = scase[f"{primary_name}_eff_tflops"] / (flops / times[-1] / 1e9)
            if "sdpa_cudnn_ms" in case:
                scase["speedup_vs_cudnn"] = case["sdpa_cudnn_ms"] / scase[f"{primary_name}_ms"]
            results["cases"].append(scase)
            log(json.dumps(scase))
            del sel
        del q, k, v, out, lse
        torch.cuda.empty_cache()

    for seq in args.seqs:
        try:
            one_length(seq)
        except Exception as e:  # recorded; the remaining lengths still run
            results["checks"].append({"what": f"length {seq}", "ok": False, "error": repr(e)[:500]})
            log(f"length {seq} failed: {e!r}")
        torch.cuda.empty_cache()

    # Other dense shapes at 32K: head_dim 64 (bf16) and fp16 at head_dim 128, primary kernel only.
    for dd, dtype, tag in ((64, torch.bfloat16, "bf16"), (128, torch.float16, "f16")) if d == 128 else ():
        seq = 32768
        q, k, v = new_qkv(seq, d=dd, dtype=dtype)
        out = torch.empty_like(q)
        flops = 4.0 * seq * seq * dd * hq / 2
        case = {"kind": "dense", "seq": seq, "hq": hq, "hkv": hkv, "d": dd, "dtype": tag, "causal": True,
                "flops": flops}
        ref = None
        for backend_name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            try:
                fn, _ = sdpa_fn(q, k, v, backend)
                case[f"sdpa_{backend_name}_ms"] = time_ms(fn, flush, 5)
                if backend_name == "cudnn":
                    ref = fn().transpose(1, 2)
            except Exception as e:
                case[f"sdpa_{backend_name}_error"] = str(e)[:200]
        what = f"dense 32K d{dd} {tag} vs cudnn"
        if ref is None:  # the check could not run: recorded as failed, never left out
            results["checks"].append({"what": what, "ok": False, "error": "no SDPA cuDNN reference"})
        else:
            out.fill_(float("nan"))
            primary(q, k, v, out)
            err = ((out.float() - ref.float()).abs().max() / v.float().abs().max()).item()
            tol = BF16_TOL if tag == "bf16" else 2e-3
            results["checks"].append({"what": what, "err": err, "tol": tol, "ok": bool(err <= tol)})
            del ref
        case[f"{primary_name}_ms"] = time_ms(lambda: primary(q, k, v, out), flush, 5)
        case[f"{primary_name}_tflops"] = flops / case[f"{primary_name}_ms"] / 1e9
        results["cases"].append(case)
        log(json.dumps(case))
        del q, k, v, out
        torch.cuda.empty_cache()

    # 1M tokens, Hq 32: q holds 2^32 elements, so element offsets pass 2^31 (int64 addressing); sparse
    # (window 1% + 512 columns), one run, checked on sampled rows of the first and last heads.
    if args.million:
        seq = 1 << 20
        q, k, v = new_qkv(seq)
        out = torch.full_like(q, float("nan"))
        lse = torch.full((1, hq, seq), float("nan"), device="cuda")
        sel = make_selection(hq, seq, math.ceil(0.01 * seq), 512, gen)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        primary(q, k, v, out, lse, sel=sel)
        end.record()
        torch.cuda.synchronize()
        kept = kept_entries(seq, sel["w"], sel["cols"])
        rows = [0, 77, seq // 2, seq - 4097, seq - 1]
        err, err_lse = check_rows(q, k, v, out, lse, sel, True, rows, [0, 17, hq - 1])
        ms = start.elapsed_time(end)
        results["checks"].append({"what": "sparse 1M rows", "err": err, "err_lse": err_lse,
                                  "ok": bool(err <= BF16_TOL and err_lse <= 2e-3), "ms": ms,
                                  "density": kept / (hq * seq * (seq + 1) / 2),
                                  "eff_tflops": 4.0 * kept * d / ms / 1e9})
        del q, k, v, out, lse, sel
        torch.cuda.empty_cache()
    return results


def density_spec(seq, target):
    """(window, columns) of the synthetic selection at ~`target` density, 60% of its entries in the window."""
    f = 1.0 - math.sqrt(1.0 - 0.6 * target)
    ncols = int((target - (2 * f - f * f)) / ((1 - f) ** 2) * seq)
    return max(1, math.ceil(f * seq)), max(1, ncols)


def profile_one(args):
    """Two launches of the primary kernel for a profiler: dense 8K, then window 8% + 1024 columns at 32K
    (--profile-one), the 5%-density selections at 8K and 32K (--profile-small), or the selections of the
    --profile-density list (0: dense) at each of --seqs."""
    gen = torch.Generator(device="cuda")
    gen.manual_seed(args.seed)
    kern = Kernel(args.lib[0].split("=", 1)[1])
    if args.profile_density:
        densities = [float(x) for x in args.profile_density.split(",")]
        cases = [(seq, density_spec(seq, t) if t > 0 else None) for seq in args.seqs for t in densities]
    elif args.profile_small:
        cases = [(seq, density_spec(seq, 0.05)) for seq in (8192, 32768)]
    else:
        cases = [(8192, None), (32768, (math.ceil(0.08 * 32768), 1024))]
    for seq, spec in cases:
        q = torch.randn(1, seq, 32, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        k = torch.randn(1, seq, 8, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn(1, seq, 8, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        out = torch.empty_like(q)
        sel = make_selection(32, seq, spec[0], spec[1], gen) if spec else None
        kern(q, k, v, out, sel=sel)
        torch.cuda.synchronize()
        kept = kept_entries(seq, spec[0], sel["cols"]) if spec else 32 * seq * (seq + 1) // 2
        print(json.dumps({"profiled": seq, "window": spec[0] if spec else None, "kept_entries": kept,
                          "flops": 4.0 * kept * 128}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", action="append", required=True, help="NAME=path/to/libsa_attn.so (first: primary)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seqs", type=int, nargs="+", default=[8192, 32768, 131072])
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--head-dim", type=int, default=128, help="head_dim of the main cases (64, 96, 128 or 256)")
    ap.add_argument("--reps", type=int, default=0, help="timed runs per case (default 3 at 64K and above, else 5)")
    ap.add_argument("--million", action="store_true", help="also the 1M-token sparse check")
    ap.add_argument("--profile-one", action="store_true",
                    help="only launch the primary kernel on dense 8K and sparse 32K (for ncu) and exit")
    ap.add_argument("--profile-small", action="store_true",
                    help="only launch the primary kernel on the 5%%-density selections at 8K and 32K and exit")
    ap.add_argument("--profile-density", default="",
                    help="only launch the primary kernel on the selections of these densities (comma-separated; 0 = "
                         "dense) at each of --seqs and exit")
    ap.add_argument("--commit", default=os.environ.get("SAMPLEATTN_COMMIT", "unknown"))
    args = ap.parse_args()
    if args.profile_one or args.profile_small or args.profile_density:
        profile_one(args)
        return
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        driver = "unknown"
    res = run(args)
    res.update({"gpu": props.name, "sm_count": props.multi_processor_count, "driver": driver,
                "torch": torch.__version__,
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "commit": args.commit, "libs": args.lib,
                "ceilings": {"bf16_tflops": PEAK_TFLOPS, "copy_tbps": PEAK_TBPS}})
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    names = [s.split("=", 1)[0] for s in args.lib]
    print("\nkind    seq     label                 density  cudnn   flash   " + "  ".join(f"{n:>8}" for n in names)
          + "  TFLOP/s  floor  eff/dense  paired  x_cudnn")
    for c in res["cases"]:
        label = c["label"] if "label" in c else f"d{c['d']} {c['dtype']}"
        print(f"{c['kind']:7} {c['seq']:7} {label:21} "
              f"{c.get('density', 1.0):7.3f} {c.get('sdpa_cudnn_ms', float('nan')):7.2f} "
              f"{c.get('sdpa_flash_ms', float('nan')):7.2f} "
              + "  ".join(f"{c.get(n + '_ms', float('nan')):8.2f}" for n in names)
              + f"  {c.get(names[0] + '_tflops', c.get(names[0] + '_eff_tflops', float('nan'))):7.0f}"
              f"  {c.get('floor_ms', float('nan')):6.2f}  {c.get('eff_vs_dense', float('nan')):6.2f}"
              f"  {c.get('eff_vs_dense_paired', float('nan')):6.2f}"
              f"  {c.get('speedup_vs_cudnn', float('nan')):6.2f}")
    bad = [c for c in res["checks"] if not c["ok"]]
    for c in res["checks"]:
        print("check", "OK  " if c["ok"] else "FAIL", json.dumps(c))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
