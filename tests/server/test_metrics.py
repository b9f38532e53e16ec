#!/usr/bin/env python3
"""`GET /metrics` against a known sequence of requests: every metric the engine documents
is there with its type, and the counters and histograms move by exactly what the requests
imply (prompt, cached, computed and generated tokens; choices ended; one time-to-first-token
per choice and one inter-token latency per further token; tokens per step), while the
gauges read an idle server. Run against an otherwise idle server:

    HEARTH_SERVER_URL=http://127.0.0.1:PORT HEARTH_TEST_API_KEY=KEY python3 test_metrics.py
"""

import json
import os
import re
import time
import unittest
import urllib.request

URL = os.environ["HEARTH_SERVER_URL"]
KEY = os.environ["HEARTH_TEST_API_KEY"]
MODEL_ID = "gemma-3-270m-q4_k_m"
BLOCK = 16

TYPES = {
    "hearth_requests_running": "gauge", "hearth_requests_waiting": "gauge",
    "hearth_kv_blocks_used": "gauge", "hearth_kv_blocks_total": "gauge",
    "hearth_kv_blocks_cached": "gauge", "hearth_prefix_cache_hit_tokens_total": "counter",
    "hearth_prompt_tokens_total": "counter", "hearth_prompt_tokens_computed_total": "counter",
    "hearth_generation_tokens_total": "counter", "hearth_requests_total": "counter",
    "hearth_choices_finished_total": "counter", "hearth_time_to_first_token_seconds": "histogram",
    "hearth_inter_token_latency_seconds": "histogram", "hearth_batch_tokens": "histogram",
    "hearth_batch_sequences": "histogram", "hearth_step_seconds": "histogram",
    "hearth_kv_cache_usage_ratio": "gauge",
}


def scrape():
    """({series: value}, {name: type}) of the Prometheus text; no key needed."""
    with urllib.request.urlopen(URL + "/metrics", timeout=30) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    values, types = {}, {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            types[m.group(1)] = m.group(2)
        elif line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values, types


def complete(prompt, max_tokens, n=1):
    body = json.dumps({"model": MODEL_ID, "prompt": prompt, "max_tokens": max_tokens, "n": n,
                       "temperature": 0, "ignore_eos": True}).encode()
    req = urllib.request.Request(URL + "/v1/completions", data=body, method="POST")
    req.add_header("Authorization", f"Bearer {KEY}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())["usage"]


class MetricsTest(unittest.TestCase):
    def test_known_sequence(self):
        before, types = scrape()
        for name, kind in TYPES.items():
            self.assertEqual(types.get(name), kind, name)
        doc = ("The history of the printing press begins in the fifteenth century, when movable "
               "type changed how books were made, sold and read across Europe. ")
        # 1: new; 2: the same prompt again (from the cache); 3: two choices.
        u1 = complete(doc + "Summarise it.", 5)
        u2 = complete(doc + "Summarise it.", 5)
        u3 = complete("Name a river:", 4, n=2)
        # Counters are recorded before the tokens they count reach a client; the gauges
        # after the step, which may be a moment after the last response.
        for _ in range(100):
            after, _ = scrape()
            if after["hearth_requests_running"] == 0:
                break
            time.sleep(0.02)

        def delta(series):
            return after.get(series, 0.0) - before.get(series, 0.0)

        prompts = [u1["prompt_tokens"], u2["prompt_tokens"], u3["prompt_tokens"]]
        cached = [u["prompt_tokens_details"]["cached_tokens"] for u in (u1, u2, u3)]
        self.assertEqual(cached[1], (prompts[1] - 1) // BLOCK * BLOCK, "the repeat is cached")
        self.assertGreater(cached[1], 0)
        computed = sum(p - c for p, c in zip(prompts, cached))
        # Choices: 5 + 5 + 4 + 4 tokens; each one's last token is never fed back.
        generated = [5, 5, 4, 4]
        self.assertEqual(delta("hearth_requests_total"), 3)
        self.assertEqual(delta("hearth_prompt_tokens_total"), sum(prompts))
        self.assertEqual(delta("hearth_prefix_cache_hit_tokens_total"), sum(cached))
        self.assertEqual(delta("hearth_prompt_tokens_computed_total"), computed)
        self.assertEqual(delta("hearth_generation_tokens_total"), sum(generated))
        self.assertEqual(delta('hearth_choices_finished_total{reason="length"}'), 4)
        self.assertEqual(delta("hearth_time_to_first_token_seconds_count"), 4)
        self.assertEqual(delta("hearth_inter_token_latency_seconds_count"), sum(g - 1 for g in generated))
        self.assertEqual(delta("hearth_batch_tokens_sum"), computed + sum(g - 1 for g in generated))
        self.assertEqual(delta("hearth_batch_tokens_count"), delta("hearth_step_seconds_count"))
        self.assertGreater(delta("hearth_time_to_first_token_seconds_sum"), 0)
        # Idle: nothing runs or waits, and only the prefix cache holds blocks.
        self.assertEqual(after["hearth_requests_running"], 0)
        self.assertEqual(after["hearth_requests_waiting"], 0)
        self.assertEqual(after["hearth_kv_blocks_used"], after["hearth_kv_blocks_cached"])
        self.assertGreaterEqual(after["hearth_kv_blocks_cached"], cached[1] // BLOCK)
        self.assertLessEqual(after["hearth_kv_blocks_used"], after["hearth_kv_blocks_total"])
        self.assertEqual(after["hearth_kv_block_tokens"], BLOCK)
        # The router's gauge: the cache's blocks are evictable, so an idle pool is empty.
        self.assertGreater(after["hearth_kv_blocks_cached"], 0)
        self.assertEqual(after["hearth_kv_cache_usage_ratio"], 0)
        # Histogram buckets are cumulative and end with +Inf = count.
        name = "hearth_inter_token_latency_seconds"
        buckets = sorted(((float(re.search(r'le="([^"]+)"', k).group(1)), v)
                          for k, v in after.items() if k.startswith(name + "_bucket")))
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        self.assertEqual(buckets[-1][0], float("inf"))
        self.assertEqual(buckets[-1][1], after[name + "_count"])

    def test_usage_ratio_while_streaming(self):
        """While a request runs, hearth_kv_cache_usage_ratio counts the blocks it holds:
        above 0, at most every used block (cached ones included) over the total."""
        body = json.dumps({"model": MODEL_ID, "prompt": "Count slowly from one to one hundred:",
                           "max_tokens": 64, "temperature": 0, "ignore_eos": True,
                           "stream": True}).encode()
        req = urllib.request.Request(URL + "/v1/completions", data=body, method="POST")
        req.add_header("Authorization", f"Bearer {KEY}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=300) as r:
            chunks = 0
            while chunks < 2:  # streaming: the sequence holds its blocks now
                line = r.readline()
                self.assertTrue(line, "the stream ended early")
                chunks += line.startswith(b"data: {")
            during, _ = scrape()
            r.read()
        ratio = during["hearth_kv_cache_usage_ratio"]
        self.assertEqual(during["hearth_requests_running"], 1)
        self.assertGreater(ratio, 0)
        self.assertLessEqual(ratio, during["hearth_kv_blocks_used"] / during["hearth_kv_blocks_total"])


if __name__ == "__main__":
    unittest.main()
