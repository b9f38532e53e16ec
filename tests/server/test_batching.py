#!/usr/bin/env python3
"""Continuous batching does not change what a request generates: 16 greedy prompts, each
run alone and then batched with 3 others (4 clients at once), give the same tokens, except
where the top-2 log-probability margin at the first differing token is below 0.1.

    HEARTH_SERVER_URL=http://127.0.0.1:PORT HEARTH_TEST_API_KEY=KEY python3 test_batching.py

The server must run at least 4 sequences at once (scripts/test-server.sh starts it with
--parallel 4). Why differences can happen at all: in a batch, a decoding token's matrix
products may share a step with another request's prompt chunk (and then go through the
GEMM, which sums the same integer products in another order), and attention splits its
keys between threads differently for one sequence than for four; both move logits by
rounding only, which can flip a greedy choice only where two tokens are nearly tied.
Every difference is printed with its margin.
"""

import json
import os
import threading
import unittest
import urllib.request

URL = os.environ["HEARTH_SERVER_URL"]
KEY = os.environ["HEARTH_TEST_API_KEY"]
MODEL_ID = "gemma-3-270m-q4_k_m"
MAX_TOKENS = 32
MIN_MARGIN = 0.1
PROMPTS = [
    "The capital of France is", "Water boils at a temperature of", "The largest planet in the solar system",
    "Once upon a time, in a small village,", "The recipe calls for two cups of", "In 1969, the first men",
    "A good way to learn a language is", "The three primary colours are", "def fibonacci(n):",
    "The human heart has four", "My favourite season is autumn because", "To be or not to be,",
    "The train left the station at", "Photosynthesis is the process by which", "Dear Sir or Madam,",
    "The quick brown fox",
]


def complete(prompt):
    """(tokens, per-token sorted top-2 logprobs) of one greedy completion with logprobs."""
    body = json.dumps({"model": MODEL_ID, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
                       "logprobs": 2, "ignore_eos": True}).encode()
    req = urllib.request.Request(URL + "/v1/completions", data=body, method="POST")
    req.add_header("Authorization", f"Bearer {KEY}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=300) as r:
        out = json.loads(r.read())
    lp = out["choices"][0]["logprobs"]
    tops = [sorted(t.values(), reverse=True) for t in lp["top_logprobs"]]
    return lp["tokens"], tops


def first_difference(a, b):
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


class BatchingTest(unittest.TestCase):
    def test_sixteen_prompts_alone_and_batched_by_four(self):
        alone = [complete(p) for p in PROMPTS]
        batched = [None] * len(PROMPTS)
        errors = []
        for g in range(0, len(PROMPTS), 4):
            barrier = threading.Barrier(4)

            def run(i):
                try:
                    barrier.wait()
                    batched[i] = complete(PROMPTS[i])
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append((i, repr(e)))

            threads = [threading.Thread(target=run, args=(i,)) for i in range(g, g + 4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
        self.assertEqual(errors, [])
        same, bad = 0, []
        for i, p in enumerate(PROMPTS):
            (ta, tops), (tb, _) = alone[i], batched[i]
            self.assertEqual(len(ta), MAX_TOKENS, p)
            k = first_difference(ta, tb)
            if k is None:
                same += 1
                continue
            margin = tops[k][0] - tops[k][1] if len(tops[k]) > 1 else float("inf")
            print(f"\n  {p!r}: differs at token {k} ({ta[k]!r} alone, {tb[k]!r} batched), "
                  f"top-2 margin {margin:.4f}", flush=True)
            if margin >= MIN_MARGIN:
                bad.append((p, k, margin))
        print(f"\n  {same} of {len(PROMPTS)} identical alone and batched", flush=True)
        self.assertEqual(bad, [], "differences at a margin of at least 0.1")


if __name__ == "__main__":
    unittest.main()
