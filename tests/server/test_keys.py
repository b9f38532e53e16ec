#!/usr/bin/env python3
"""Named keys, their quotas and the usage log of `hearth serve --keys FILE --usage-log DIR`,
through the real `openai` client (and raw HTTP for headers).

    python3 test_keys.py --make-keys KEYS.toml
    HEARTH_KEYS_URL=http://127.0.0.1:PORT HEARTH_USAGE_DIR=DIR HEARTH_BIN=target/release/hearth python3 test_keys.py

scripts/test-server.sh does both. The keys file is written here with Python's own SHA-256
(hashlib), independently of the server's code.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

import openai

import ready

KEYS = {
    # name: (key, limits)
    "alice": ("hk-alice-test-key", {"requests_per_minute": 3}),
    "bob": ("hk-bob-test-key", {}),
    "carol": ("hk-carol-test-key", {"tokens_per_day": 40}),
    "dave": ("hk-dave-test-key", {"concurrent": 1}),
    "erin": ("hk-erin-test-key", {"max_tokens": 5}),
}
PHRASE = "zebra-quartz-marmalade-7731"


def make_keys(path):
    with open(path, "w") as f:
        for name, (key, limits) in KEYS.items():
            f.write(f'[[key]]\nname = "{name}"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n')
            for k, v in limits.items():
                f.write(f"{k} = {v}\n")
            f.write("\n")


URL = os.environ.get("HEARTH_KEYS_URL", "")


def post(key, body, path="/v1/chat/completions"):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def chat(key, max_tokens=4, content=None):
    return post(key, {"messages": [{"role": "user", "content": content or f"Say {PHRASE}"}],
                      "max_tokens": max_tokens, "temperature": 0})


class KeysTest(unittest.TestCase):
    usages = []  # (key name, usage) of every successful response

    @classmethod
    def setUpClass(cls):
        ready.wait_ready(URL)

    def ok(self, name, status, body):
        self.assertEqual(status, 200, body)
        self.usages.append((name, body["usage"]))

    def test_a_wrong_or_missing_key_is_401(self):
        for key in (None, "hk-nobody", KEYS["alice"][0] + "x"):
            status, _, body = chat(key)
            self.assertEqual(status, 401, body)
            self.assertEqual(body["error"]["type"], "authentication_error")

    def test_requests_per_minute(self):
        for _ in range(3):
            status, _, body = chat(KEYS["alice"][0])
            self.ok("alice", status, body)
        status, headers, body = chat(KEYS["alice"][0])
        self.assertEqual(status, 429, body)
        self.assertEqual(body["error"]["type"], "rate_limit_error")
        self.assertIn("requests per minute", body["error"]["message"])
        self.assertTrue(1 <= int(headers["Retry-After"]) <= 60, headers)
        # Another key is not affected.
        for _ in range(4):
            status, _, body = chat(KEYS["bob"][0])
            self.ok("bob", status, body)

    def test_tokens_per_day(self):
        key = KEYS["carol"][0]
        status, _, body = chat(key, max_tokens=30)
        self.ok("carol", status, body)
        self.assertGreaterEqual(body["usage"]["total_tokens"], 40)
        status, headers, body = chat(key)
        self.assertEqual(status, 429, body)
        self.assertIn("tokens per day", body["error"]["message"])
        self.assertGreater(int(headers["Retry-After"]), 0)
        # The openai client sees the same refusal.
        client = openai.OpenAI(base_url=URL + "/v1", api_key=key, max_retries=0)
        with self.assertRaises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)

    def test_concurrent_requests(self):
        key = KEYS["dave"][0]
        client = openai.OpenAI(base_url=URL + "/v1", api_key=key, max_retries=0)
        started = threading.Event()

        def long_stream():
            s = client.chat.completions.create(model="m", messages=[{"role": "user", "content": PHRASE}],
                                               max_tokens=200, temperature=0, stream=True,
                                               stream_options={"include_usage": True},
                                               extra_body={"ignore_eos": True})
            last = None
            for chunk in s:
                started.set()
                last = chunk
            self.usages.append(("dave", last.usage.model_dump()))

        t = threading.Thread(target=long_stream)
        t.start()
        started.wait(60)
        status, headers, body = chat(key)
        self.assertEqual(status, 429, body)
        self.assertIn("concurrent", body["error"]["message"])
        t.join()
        status, _, body = chat(key)
        self.ok("dave", status, body)

    def test_largest_max_tokens(self):
        key = KEYS["erin"][0]
        status, _, body = chat(key, max_tokens=10)
        self.assertEqual(status, 400, body)
        self.assertEqual(body["error"]["param"], "max_tokens")
        status, _, body = post(key, {"messages": [{"role": "user", "content": PHRASE}], "temperature": 0,
                                     "extra_body": {}, "ignore_eos": True})
        self.ok("erin", status, body)
        self.assertEqual(body["usage"]["completion_tokens"], 5)

    def test_z_usage_log_sums_and_keeps_no_content(self):
        # Runs last (unittest sorts by name): every response above is in the log.
        time.sleep(0.5)
        log = os.path.join(os.environ["HEARTH_USAGE_DIR"], "usage.jsonl")
        lines = [json.loads(l) for l in open(log)]
        want = {}
        for name, u in self.usages:
            w = want.setdefault(name, [0, 0])
            w[0] += u["prompt_tokens"]
            w[1] += u["completion_tokens"]
        for name, (prompt, completion) in want.items():
            mine = [l for l in lines if l["key"] == name and l["status"] == 200]
            self.assertEqual(sum(l["prompt_tokens"] for l in mine), prompt, name)
            self.assertEqual(sum(l["completion_tokens"] for l in mine), completion, name)
        self.assertTrue(any(l["status"] == 401 and l["key"] is None for l in lines))
        self.assertTrue(any(l["status"] == 429 and l["key"] == "alice" for l in lines))
        for l in lines:
            self.assertEqual(set(l), {"time", "key", "endpoint", "model", "prompt_tokens", "cached_tokens",
                                      "completion_tokens", "reasoning_tokens", "duration_ms", "status"})
        for root, _, files in os.walk(os.environ["HEARTH_USAGE_DIR"]):
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    self.assertNotIn(PHRASE.encode(), fh.read(), f)
        # `hearth usage` sums the same.
        out = subprocess.run([os.environ["HEARTH_BIN"], "usage", log, "--by", "key"],
                             capture_output=True, text=True, check=True).stdout
        row = next(r for r in out.splitlines() if r.startswith("| bob "))
        self.assertEqual(int(row.split("|")[4]), want["bob"][0], out)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-keys":
        make_keys(sys.argv[2])
    else:
        unittest.main()
