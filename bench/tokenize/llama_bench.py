#!/usr/bin/env python3
"""Encoding throughput of llama.cpp itself (through llama-cpp-python 0.3.36, vocab only) on
the same text: the reference whose ids Hearth reproduces. Prints one JSON line like
encode_bench's; `--ids-out` writes the ids.

Usage: llama_bench.py MODEL.gguf TEXT [--iters N] [--ids-out FILE]
"""
import argparse
import json
import time

from llama_cpp import Llama


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--ids-out")
    a = ap.parse_args()
    with open(a.text, encoding="utf-8") as f:
        data = f.read().encode("utf-8")
    llm = Llama(model_path=a.model, vocab_only=True, verbose=False)
    ids = llm.tokenize(data, add_bos=False, special=True)
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        llm.tokenize(data, add_bos=False, special=True)
        times.append(time.perf_counter() - t)
    times.sort()
    if a.ids_out:
        with open(a.ids_out, "w") as f:
            json.dump(ids, f, separators=(",", ":"))
    print(json.dumps({"bytes": len(data), "tokens": len(ids), "best_s": round(times[0], 4),
                      "mb_per_s": round(len(data) / times[0] / 1e6, 2)}))


if __name__ == "__main__":
    main()
