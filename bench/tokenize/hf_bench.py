#!/usr/bin/env python3
"""Encoding throughput of Hugging Face `tokenizers` on the same text and vocabulary.

Builds a `tokenizers.Tokenizer` from a GGUF file's byte-level BPE vocabulary: its tokens
and merges, the pre-tokenizer regex the model's tokenizer.json uses (the one llama.cpp's
table names in its comments for that `tokenizer.ggml.pre`), GPT-2's byte mapping, and its
control tokens as special tokens. Times `encode` of the whole text (single-threaded: one
sequence) and prints one JSON line like encode_bench's; `--ids-out` writes the ids.

Usage: hf_bench.py MODEL.gguf TEXT [--iters N] [--ids-out FILE]
"""
import argparse
import json
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers  # noqa: E402

CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
PATTERNS = {
    "llama-bpe": CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "gpt-2": None,  # ByteLevel's own regex
}
PATTERNS["deepseek-r1-qwen"] = PATTERNS["qwen2"]

# Tokens llama.cpp treats as control tokens by their text whatever their stored type (its
# end-of-generation and fill-in-the-middle lists), so special-token text is cut out of
# the input the same way on both sides.
LLAMA_CPP_CONTROL_TEXTS = {
    "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
    "<|end_of_text|>", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<|fim_prefix|>",
    "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|fim_repo|>", "<|repo_name|>", "<|file_sep|>",
}


def field(r, key):
    f = r.fields[key]
    if f.types[0].name == "ARRAY":
        return [bytes(f.parts[i]).decode("utf-8") if f.types[-1].name == "STRING" else f.parts[i][0] for i in f.data]
    return f.contents()


def build(path: str):
    r = GGUFReader(path)
    tokens = field(r, "tokenizer.ggml.tokens")
    types = [int(t) for t in field(r, "tokenizer.ggml.token_type")]
    merges = []
    for m in field(r, "tokenizer.ggml.merges"):
        pos = m.find(" ", 1)
        if pos > 0:
            merges.append((m[:pos], m[pos + 1:]))
    pre = field(r, "tokenizer.ggml.pre")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=(pre == "llama-bpe"))
    tok = tokenizers.Tokenizer(bpe)
    pattern = PATTERNS[pre]
    if pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    specials = [
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types)
        if ty in (3, 4) or t in LLAMA_CPP_CONTROL_TEXTS
    ]
    tok.add_special_tokens(specials)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--ids-out")
    a = ap.parse_args()
    with open(a.text, encoding="utf-8") as f:
        text = f.read()
    t0 = time.perf_counter()
    tok = build(a.model)
    load_s = time.perf_counter() - t0
    ids = tok.encode(text, add_special_tokens=False).ids
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        tok.encode(text, add_special_tokens=False)
        times.append(time.perf_counter() - t)
    times.sort()
    if a.ids_out:
        with open(a.ids_out, "w") as f:
            json.dump(ids, f, separators=(",", ":"))
    nbytes = len(text.encode("utf-8"))
    print(json.dumps({
        "bytes": nbytes, "tokens": len(ids), "load_s": round(load_s, 3), "best_s": round(times[0], 4),
        "median_s": round(times[len(times) // 2], 4), "mb_per_s": round(nbytes / times[0] / 1e6, 2),
        "tokenizers": tokenizers.__version__,
    }))


if __name__ == "__main__":
    main()
