#!/usr/bin/env python3
"""llama.cpp's speed on a GGUF, measured the way llama-bench measures it.

Uses llama-cpp-python's low-level API only: `llama_decode` on batches of token ids, no
logits copied into Python, flash attention on, `swa_full` off, a context of exactly
n_depth + n_prompt + n_gen cells. One pp test decodes `n_prompt` tokens in one batch; one
tg test decodes `n_gen` single tokens (llama-bench's tg128). Each test runs once as
warm-up, then `reps` timed times.

With `-d N` (llama-bench's `-d/--n-depth`) each test starts with N random tokens in the
cache: they are decoded once per context, in batches of up to 512, untimed, and before
each run the cache is cut back to them (`llama_memory_seq_rm` from position N), as
llama-bench restores its saved depth state before each run. Without it, every run
starts from an empty cache. `--cache-type-k/-v` set the cache types (f32, f16, q8_0;
llama.cpp's default is f16).

Prints one JSON object per line per (test, threads), with llama-bench's field names
(model_filename, n_batch, n_ubatch, n_threads, n_prompt, n_gen, n_depth, type_k, type_v,
avg_ns, stddev_ns, avg_ts, stddev_ts, samples_ns, samples_ts) and "engine": "llama.cpp".

    python3 llama_cpp_bench.py MODEL.gguf [-p 512] [-n 128] [-d 0] [-t 1,2] [-r 5]
        [--cache-type-k f16] [--cache-type-v f16]

OMP_WAIT_POLICY is left as the caller sets it; unset is what llama-bench runs with (its
OpenMP threads spin a while between graph nodes, then sleep). On a quiet 2-core Zen 5
that is llama.cpp's best setting for generation at 2 threads (68 t/s for Gemma 3 270M
tg128, against 42 with OMP_WAIT_POLICY=passive); on a machine busy with other work,
spinning threads steal the cores and passive does better.

llama-cpp-python compiles llama.cpp when pip installs it; GGML_NATIVE (-march=native) is
on by default for such builds unless SOURCE_DATE_EPOCH is set. To be sure:
    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install --no-binary llama-cpp-python --no-cache-dir llama-cpp-python
The script prints llama.cpp's system info (the SIMD features it was built with) on stderr.
"""

import argparse
import ctypes
import json
import random
import statistics
import sys
import time

import llama_cpp as L  # noqa: E402


@L.llama_log_callback
def _QUIET(level, text, user_data):
    """Drops llama.cpp's log lines: this script's output is its JSON lines."""


# ggml's type ids (ggml.h `enum ggml_type`) of the cache types this script offers.
CACHE_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}

# Most tokens per decode call when filling the depth (llama.cpp's default n_ubatch).
DEPTH_BATCH = 512


def make_context(model, n_ctx, n_batch, threads, type_k, type_v):
    p = L.llama_context_default_params()
    p.n_ctx = n_ctx
    p.n_batch = n_batch
    p.n_ubatch = min(n_batch, 512)
    p.n_threads = threads
    p.n_threads_batch = threads
    p.flash_attn_type = 1  # LLAMA_FLASH_ATTN_TYPE_ENABLED
    p.swa_full = False
    p.type_k = CACHE_TYPES[type_k]
    p.type_v = CACHE_TYPES[type_v]
    p.no_perf = True
    ctx = L.llama_init_from_model(model, p)
    if not ctx:
        sys.exit("llama.cpp could not create a context")
    return ctx


def make_batch(tokens, pos0):
    """`tokens` as one batch at positions pos0.., logits for the last only."""
    n = len(tokens)
    batch = L.llama_batch_init(n, 0, 1)
    for i, tok in enumerate(tokens):
        batch.token[i] = tok
        batch.pos[i] = pos0 + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1 if i == n - 1 else 0
    batch.n_tokens = n
    return batch


def fill_depth(ctx, n_depth, n_vocab, rng):
    """Empties the cache and decodes `n_depth` random tokens into sequence 0."""
    L.llama_memory_clear(L.llama_get_memory(ctx), True)
    tokens = [rng.randrange(n_vocab) for _ in range(n_depth)]
    for start in range(0, n_depth, DEPTH_BATCH):
        batch = make_batch(tokens[start:start + DEPTH_BATCH], start)
        try:
            if L.llama_decode(ctx, batch) != 0:
                sys.exit("llama_decode failed while filling the depth")
        finally:
            L.llama_batch_free(batch)
    L.llama_synchronize(ctx)


def to_depth(ctx, n_depth):
    """Cuts the cache back to the depth tokens (empty for depth 0)."""
    mem = L.llama_get_memory(ctx)
    if n_depth == 0:
        L.llama_memory_clear(mem, True)
    elif not L.llama_memory_seq_rm(mem, 0, n_depth, -1):
        sys.exit("llama_memory_seq_rm failed")


def run_pp(ctx, n_prompt, n_depth, n_vocab, rng):
    to_depth(ctx, n_depth)
    # Built before the clock starts: filling 512 tokens through ctypes is not llama.cpp's
    # time (llama-bench fills a std::vector in C++).
    batch = make_batch([rng.randrange(n_vocab) for _ in range(n_prompt)], n_depth)
    try:
        t = time.perf_counter()
        if L.llama_decode(ctx, batch) != 0:
            sys.exit("llama_decode failed")
        L.llama_synchronize(ctx)
        return time.perf_counter() - t
    finally:
        L.llama_batch_free(batch)


def run_tg(ctx, n_gen, n_depth, n_vocab, rng):
    to_depth(ctx, n_depth)
    # Batches are built before the clock starts, as llama-bench's loop only calls decode.
    batches = []
    for i in range(n_gen):
        b = L.llama_batch_init(1, 0, 1)
        b.token[0] = rng.randrange(n_vocab)
        b.pos[0] = n_depth + i
        b.n_seq_id[0] = 1
        b.seq_id[0][0] = 0
        b.logits[0] = 1
        b.n_tokens = 1
        batches.append(b)
    t = time.perf_counter()
    for b in batches:
        if L.llama_decode(ctx, b) != 0:
            sys.exit("llama_decode failed")
    L.llama_synchronize(ctx)
    dt = time.perf_counter() - t
    for b in batches:
        L.llama_batch_free(b)
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-d", type=int, default=0, help="tokens in the cache before each test")
    ap.add_argument("--cache-type-k", choices=sorted(CACHE_TYPES), default="f16")
    ap.add_argument("--cache-type-v", choices=sorted(CACHE_TYPES), default="f16")
    ap.add_argument("-t", default="1,2")
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("--only", choices=["pp", "tg"], default=None)
    a = ap.parse_args()

    try:
        threads = [int(t) for t in a.t.split(",")]
    except ValueError:
        sys.exit(f"-t {a.t!r}: expected thread counts like 1,2")
    if a.r < 1 or min(threads) < 1 or (a.p <= 0 and a.n <= 0) or a.d < 0:
        sys.exit("need -r >= 1, thread counts >= 1, -d >= 0, and -p or -n > 0")
    L.llama_backend_init()
    L.llama_log_set(_QUIET, ctypes.c_void_p())
    print("llama.cpp system info:", L.llama_print_system_info().decode().strip(), file=sys.stderr)
    mp = L.llama_model_default_params()
    mp.use_mmap = True
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        sys.exit(f"llama.cpp could not load {a.model}")
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    rng = random.Random(0)
    for n_threads in threads:
        tests = []
        if a.p > 0 and a.only in (None, "pp"):
            tests.append(("pp", a.p, 0))
        if a.n > 0 and a.only in (None, "tg"):
            tests.append(("tg", 0, a.n))
        for kind, n_prompt, n_gen in tests:
            # The depth is decoded in batches of up to DEPTH_BATCH, so the context
            # takes batches that large even for tg (whose own batches are 1 token).
            n_batch = max(n_prompt, min(a.d, DEPTH_BATCH), 1)
            ctx = make_context(model, max(a.d + n_prompt + n_gen, 16), n_batch, n_threads,
                               a.cache_type_k, a.cache_type_v)
            if a.d > 0:
                fill_depth(ctx, a.d, n_vocab, rng)
            run = (lambda: run_pp(ctx, n_prompt, a.d, n_vocab, rng)) if kind == "pp" else (
                lambda: run_tg(ctx, n_gen, a.d, n_vocab, rng))
            run()  # warm-up
            samples_s = [run() for _ in range(a.r)]
            L.llama_free(ctx)
            samples_ns = [round(s * 1e9) for s in samples_s]
            samples = [(n_prompt + n_gen) / s for s in samples_s]
            sd = statistics.stdev if len(samples) > 1 else (lambda _: 0.0)
            print(json.dumps({
                "engine": "llama.cpp",
                "model_filename": a.model,
                "n_batch": n_batch,
                "n_ubatch": min(n_batch, 512),
                "n_threads": n_threads,
                "n_prompt": n_prompt,
                "n_gen": n_gen,
                "n_depth": a.d,
                "type_k": a.cache_type_k,
                "type_v": a.cache_type_v,
                "avg_ns": round(statistics.mean(samples_ns)),
                "stddev_ns": round(sd(samples_ns)),
                "avg_ts": statistics.mean(samples),
                "stddev_ts": sd(samples),
                "samples_ns": samples_ns,
                "samples_ts": samples,
            }), flush=True)
    L.llama_model_free(model)


if __name__ == "__main__":
    main()
