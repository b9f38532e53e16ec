#!/usr/bin/env python3
"""Prints the resources a Hearth replica needs for a GGUF model, for the Deployment in
deploy/kubernetes/base/hearth.yaml:

    resources.py MODEL.gguf --ctx 8192 [--threads 2] [--cache-type-k f16] [--cache-type-v f16]
                 [--hearth target/release/hearth]

The rule (memory request = limit, so the pod is never throttled into swap-like reclaim
and the scheduler reserves what it uses):

    weights   the tensor bytes (`hearth inspect --json`: tensor_bytes); `hearth serve`
              copies them into anonymous memory (transparent huge pages), all of which
              counts against the container's limit
    KV pool   --ctx tokens x bytes per token, where bytes per token is
              n_layer x (K bytes(n_head_kv x key_length) + V bytes(n_head_kv x value_length)),
              as crates/models/src/kv_cache.rs (KvTypes::bytes_per_token) computes it; with
              DeepSeek-2's latent attention, K is the latent row (kv_lora_rank + rope
              dimensions) and V nothing
    overhead  256 MiB (runtime, HTTP, scratch buffers of a 512-token step, the tokenizer)
    margin    10 % of the sum, rounded up to a multiple of 64 MiB

Measured for the rule (2026-12-05, Gemma 3 270M Q4_K_M, --ctx 8192, --parallel 4, -t 2):
235 MiB of weights + 144 MiB of KV; resident 439 MiB once loaded, 470 MiB at its peak
under 4 streams of 1,400-token prompts; the rule gives 704 MiB.

CPU: whole CPUs equal to --threads (requests = limits), so that the compute threads are
not throttled by a CFS quota in the middle of a step; with the static CPU manager policy
they get cores of their own.
"""

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

MIB = 1 << 20
OVERHEAD = 256 * MIB
MARGIN = 0.10
# Bytes of n stored elements per KV cache type (crates/kernels/src/ops/attention.rs, KvType::bytes).
KV_BYTES = {"f32": lambda n: 4 * n, "f16": lambda n: 2 * n, "q8_0": lambda n: n + 2 * (n // 32)}


def metadata(info):
    return {m["key"]: m.get("value") for m in info["metadata"]}


def kv_bytes_per_token(meta, k_type, v_type):
    arch = meta["general.architecture"]

    def key(name, default=None):
        return meta.get(f"{arch}.{name}", default)

    n_layer = key("block_count") - key("nextn_predict_layers", 0)
    n_head = key("attention.head_count")
    n_head_kv = key("attention.head_count_kv", n_head)
    n_embd = key("embedding_length")
    head_k = key("attention.key_length", n_embd // n_head)
    head_v = key("attention.value_length", n_embd // n_head)
    if arch == "deepseek2":
        n_rot = key("rope.dimension_count", head_k)
        k_row, v_row = key("attention.kv_lora_rank") + n_rot, 0
    else:
        k_row, v_row = n_head_kv * head_k, n_head_kv * head_v
    return n_layer * (KV_BYTES[k_type](k_row) + KV_BYTES[v_type](v_row))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ctx", type=int, required=True, help="the KV pool in tokens (hearth serve --ctx)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-type-k", default="f16", choices=sorted(KV_BYTES))
    ap.add_argument("--cache-type-v", default="f16", choices=sorted(KV_BYTES))
    ap.add_argument("--hearth", default=str(Path(__file__).resolve().parents[2] / "target/release/hearth"))
    args = ap.parse_args()
    out = subprocess.run([args.hearth, "inspect", "--json", args.model], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"hearth inspect failed: {out.stderr.strip()}")
    info = json.loads(out.stdout)
    meta = metadata(info)
    weights = info["tensor_bytes"]
    per_token = kv_bytes_per_token(meta, args.cache_type_k, args.cache_type_v)
    kv = per_token * args.ctx
    total = (weights + kv + OVERHEAD) * (1 + MARGIN)
    memory_mib = math.ceil(total / MIB / 64) * 64
    print(f"# {Path(args.model).name}: {meta.get('general.architecture')}, "
          f"weights {weights / MIB:.0f} MiB, KV {per_token} bytes/token x {args.ctx} = {kv / MIB:.0f} MiB "
          f"({args.cache_type_k}/{args.cache_type_v}), overhead {OVERHEAD // MIB} MiB, margin {MARGIN:.0%}")
    print("resources:")
    for part in ("requests", "limits"):
        print(f"  {part}:")
        print(f'    cpu: "{args.threads}"')
        print(f"    memory: {memory_mib}Mi")


if __name__ == "__main__":
    main()
