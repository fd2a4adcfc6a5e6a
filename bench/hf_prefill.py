#!/usr/bin/env python3
"""Device benchmark: prefill time of a Llama-3-8B-shaped transformers model (hidden 4096, 32 query heads,
8 KV heads, head_dim 128, MLP 14336, vocab 128256; random bf16 weights, `--layers` decoder layers) with
attn_implementation="sample_attention" against "sdpa", at each `--seq` length, and the measured density.

Random weights give nearly uniform attention, so little can be skipped: the result shows that the drop-in
runs at real sizes, what the selection overhead is, and what density it reaches on such inputs.
Timing: model.model (no lm_head over all tokens: at 128K its logits alone would take 33 GB) then lm_head
on the last position, use_cache=False, CUDA events around each forward, median of `--repeat` after one
warm-up. Also times one attention layer in isolation (sampleattn vs SDPA) on the model's own q/k/v shapes.
Writes JSON to --out (GPU, driver, torch/transformers versions, every case) and prints a table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import transformers

import sampleattn
import sampleattn.transformers as sat


def llama3_8b_config(layers: int) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rope_theta=500000.0, rms_norm_eps=1e-5,
    )


def timed(fn, repeat: int):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), times


def set_impl(model, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name


def prefill_as(model, impl, ids):
    """One prefill with `impl`, checked to have run it: sdpa must leave no sample_attention stats, and
    sample_attention must have sampled every layer (the prompts here are all above min_seq_len)."""
    set_impl(model, impl)
    sat.reset_stats()
    out = prefill(model, ids)
    sampled = sat.summary()["sample_attention_layers"]
    expected = model.config.num_hidden_layers if impl == "sample_attention" else 0
    if sampled != expected:
        raise RuntimeError(f"{impl} prefill ran sample_attention in {sampled} layers, expected {expected}")
    return out


def prefill(model, ids):
    hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
    return model.lm_head(hidden[:, -1:])


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def attention_only(seq: int, repeat: int):
    """One layer's attention on Llama-3-8B shapes, default settings: SDPA against sampleattn's
    sample_attention, and the parts of it (select alone, attend alone, sampleattn's dense kernel), with the
    output's relative error against SDPA at the default alpha and at alpha = 1."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, 32, seq, 128, generator=gen, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, seq, 128, generator=gen, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 8, seq, 128, generator=gen, device="cuda", dtype=torch.bfloat16)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    row = {"seq": seq}
    row["sdpa_ms"], _ = timed(sdpa, repeat)
    row["sample_attention_ms"], _ = timed(lambda: sampleattn.sample_attention(qt, kt, vt), repeat)
    row["select_ms"], _ = timed(lambda: sampleattn.select(qt, kt), repeat)
    sel = sampleattn.select(qt, kt)
    row["attend_ms"], _ = timed(lambda: sampleattn.attend(qt, kt, vt, sel), repeat)
    row["sampleattn_dense_ms"], _ = timed(lambda: sampleattn.dense_attention(qt, kt, vt), repeat)
    want = sdpa().transpose(1, 2)
    out, sel = sampleattn.sample_attention(qt, kt, vt, return_selection=True)
    row.update(speedup=row["sdpa_ms"] / row["sample_attention_ms"], density=sel.density,
               min_sampled_coverage=sel.min_sampled_coverage, rel_error_vs_sdpa=rel(out, want),
               rel_error_alpha1_vs_sdpa=rel(sampleattn.sample_attention(qt, kt, vt, alpha=1.0), want),
               rel_error_dense_vs_sdpa=rel(sampleattn.dense_attention(qt, kt, vt), want))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, nargs="+", default=[32768, 131072])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    torch.manual_seed(0)
    sat.register(min_seq_len=8192)
    config = llama3_8b_config(args.layers)
    t0 = time.time()
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa",
                                                              dtype=torch.bfloat16).eval()
    build_s = time.time() - t0
    gpu = torch.cuda.get_device_name()
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip()
    result = {
        "benchmark": "hf_prefill", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "gpu": gpu, "driver": driver, "torch": torch.__version__, "transformers": transformers.__version__,
        "commit": os.environ.get("SAMPLEATTN_COMMIT", "unknown"),
        "model": "Llama-3-8B shape, random bf16 weights", "layers": args.layers,
        "settings": sat.settings(), "model_build_s": build_s, "cases": [], "attention_only": [],
    }
    print(f"{gpu} driver {driver}; {args.layers} layers; model built in {build_s:.1f} s", flush=True)
    for seq in args.seq:
        ids = torch.randint(0, config.vocab_size, (1, seq), device="cuda")
        row = {"seq": seq}
        with torch.no_grad():
            for impl in ("sdpa", "sample_attention"):
                prefill_as(model, impl, ids)  # also the warm-up
                ms, all_ms = timed(lambda: prefill(model, ids), args.repeat)
                row[f"{impl}_ms"], row[f"{impl}_runs_ms"] = ms, all_ms
                if impl == "sample_attention":
                    summary = sat.summary()
                    row.update(mean_density=summary["mean_density"],
                               min_sampled_coverage=summary["min_sampled_coverage"],
                               sampled_layers=summary["sample_attention_layers"],
                               per_layer_density=[s.mean_density for _, s in sorted(sat.last_stats().items())])
            # dense_head_density 0.75 (ours): heads keeping >= 75% of their entries run dense.
            sat.configure(dense_head_density=0.75)
            ms, all_ms = timed(lambda: prefill(model, ids), args.repeat)
            row.update(sample_attention_dhd075_ms=ms, sample_attention_dhd075_runs_ms=all_ms,
                       mean_density_dhd075=sat.summary()["mean_density"])
            sat.configure(dense_head_density=1.0)
            want = prefill_as(model, "sdpa", ids).float()
            got = prefill_as(model, "sample_attention", ids).float()
            sat.configure(alpha=1.0)  # keeps every column with mass: must agree with sdpa to bf16 rounding
            got_alpha1 = prefill_as(model, "sample_attention", ids).float()
            sat.configure(alpha=0.95)
        row["speedup"] = row["sdpa_ms"] / row["sample_attention_ms"]
        row["last_logits_rel_diff"] = rel(got, want)
        row["last_logits_rel_diff_alpha1"] = rel(got_alpha1, want)
        result["cases"].append(row)
        print(f"seq {seq}: sdpa {row['sdpa_ms']:.1f} ms, sample_attention {row['sample_attention_ms']:.1f} ms "
              f"({row['speedup']:.2f}x), density {row['mean_density']:.3f}, min coverage "
              f"{row['min_sampled_coverage']:.3f}, last-token logits rel diff {row['last_logits_rel_diff']:.3g} "
              f"(alpha 1: {row['last_logits_rel_diff_alpha1']:.3g}); dense_head_density 0.75: "
              f"{row['sample_attention_dhd075_ms']:.1f} ms ({row['sdpa_ms'] / row['sample_attention_dhd075_ms']:.2f}x), "
              f"density {row['mean_density_dhd075']:.3f}", flush=True)
        del ids
        torch.cuda.empty_cache()
        a = attention_only(seq, args.repeat)
        result["attention_only"].append(a)
        print(f"  one attention layer: sdpa {a['sdpa_ms']:.2f} ms, sample_attention {a['sample_attention_ms']:.2f} ms "
              f"({a['speedup']:.2f}x; select {a['select_ms']:.2f}, attend {a['attend_ms']:.2f}, sampleattn dense "
              f"{a['sampleattn_dense_ms']:.2f}), density {a['density']:.3f}, rel error vs sdpa "
              f"{a['rel_error_vs_sdpa']:.3g} (alpha 1: {a['rel_error_alpha1_vs_sdpa']:.3g}, dense: "
              f"{a['rel_error_dense_vs_sdpa']:.3g})", flush=True)
        if args.out:  # written after every length, so a run cut short still leaves its numbers
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
