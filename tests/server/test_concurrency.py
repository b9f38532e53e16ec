#!/usr/bin/env python3
"""`hearth serve` under concurrent clients, through the `openai` client, against a running
server with Gemma 3 270M (the one scripts/test-server.sh starts for test_openai.py).

    HEARTH_SERVER_URL=http://127.0.0.1:PORT HEARTH_TEST_API_KEY=KEY python3 test_concurrency.py

* Eight streamed greedy requests at once each get the text (and usage) the same request
  gets alone: no tokens leak between requests and none is lost. Batched, a token's logits
  can move by rounding (see test_batching.py), so a text may differ only from a token
  where the top-2 margin alone was below 0.1.
* A client that goes away mid-stream frees the engine: the next request's first chunk
  comes within a short bound, not after the abandoned request's 1000 tokens.
"""

import os
import threading
import time
import unittest

import openai

URL = os.environ["HEARTH_SERVER_URL"]
KEY = os.environ["HEARTH_TEST_API_KEY"]
MODEL_ID = "gemma-3-270m-q4_k_m"
N_CLIENTS = 8
MAX_TOKENS = 12
QUESTIONS = [
    "What is the capital of Italy?", "Name a planet.", "What colour is the sky?",
    "Say hello in French.", "What is 2+2?", "Name a fruit.", "Who wrote Hamlet?",
    "What is water made of?",
]


def client():
    return openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=300)


def streamed_chat(c, question):
    """(tokens, finish reasons, usage, top-2 margins) of one streamed greedy chat request."""
    chunks = list(c.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": question}], max_tokens=MAX_TOKENS,
        temperature=0, stream=True, stream_options={"include_usage": True}, logprobs=True,
        top_logprobs=2))
    tokens, margins = [], []
    for ch in chunks:
        if ch.choices and ch.choices[0].logprobs and ch.choices[0].logprobs.content:
            for t in ch.choices[0].logprobs.content:
                tokens.append(t.token)
                top = sorted((a.logprob for a in t.top_logprobs), reverse=True)
                margins.append(top[0] - top[1] if len(top) > 1 else float("inf"))
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    usage = chunks[-1].usage
    return tokens, finals, (usage.prompt_tokens, usage.completion_tokens), margins


def same_up_to_a_tie(alone, batched, min_margin=0.1):
    """None if `batched` equals `alone`, or first differs where `alone`'s margin was small;
    else a description of the difference."""
    ta, fa, ua, margins = alone
    tb, fb, ub, _ = batched
    k = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), None)
    if k is None:
        return None if (ta, fa, ua) == (tb, fb, ub) else f"{(ta, fa, ua)} != {(tb, fb, ub)}"
    print(f"\n  differs at token {k} ({ta[k]!r} vs {tb[k]!r}), margin {margins[k]:.4f}", flush=True)
    return None if margins[k] < min_margin else f"token {k}: {ta[k]!r} vs {tb[k]!r}, margin {margins[k]:.4f}"


class ConcurrencyTest(unittest.TestCase):
    def test_eight_concurrent_streams_equal_each_alone(self):
        c = client()
        alone = [streamed_chat(c, q) for q in QUESTIONS]
        self.assertEqual(len(set("".join(a[0]) for a in alone)), N_CLIENTS,
                         "the questions give different texts")
        results = [None] * N_CLIENTS
        errors = []
        barrier = threading.Barrier(N_CLIENTS)

        def run(i):
            try:
                own = client()  # one connection pool per client, as separate programs would have
                barrier.wait()
                results[i] = streamed_chat(own, QUESTIONS[i])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append((i, repr(e)))

        t0 = time.time()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(N_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        elapsed = time.time() - t0
        self.assertEqual(errors, [])
        for i in range(N_CLIENTS):
            self.assertIsNone(same_up_to_a_tie(alone[i], results[i]), QUESTIONS[i])
        print(f"\n  {N_CLIENTS} concurrent streams of {MAX_TOKENS} tokens: {elapsed:.1f} s", flush=True)

    def test_disconnect_frees_the_engine_quickly(self):
        c = client()
        # Warm: the time of a short request's first chunk on an idle engine.
        t = time.time()
        next(iter(c.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2, temperature=0,
                                        stream=True)))
        idle_first = time.time() - t
        stream = c.completions.create(
            model=MODEL_ID, prompt="Once upon a time", max_tokens=1000, temperature=1.0, seed=5,
            top_p=1.0, logit_bias={"1": -100, "106": -100}, stream=True,
            extra_body={"top_k": 0, "min_p": 0.0})
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
        t = time.time()
        first = next(iter(c.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2, temperature=0,
                                               stream=True)))
        waited = time.time() - t
        self.assertIsNotNone(first)
        print(f"\n  first chunk after a disconnect: {waited:.3f} s (idle engine: {idle_first:.3f} s)",
              flush=True)
        # ~1000 tokens would take tens of seconds; stopping within a token or two is well
        # under this (the bound leaves room for a loaded CI machine).
        self.assertLess(waited, 2.0)


if __name__ == "__main__":
    unittest.main()
