#!/usr/bin/env python3
"""A bounded soak of a running OpenAI-compatible server: many clients, mixed requests.

    HEARTH_SERVER_URL=http://127.0.0.1:PORT HEARTH_TEST_API_KEY=KEY HEARTH_SERVER_PID=PID \\
        python3 soak.py [--clients 16] [--requests 200] [--min-seconds 300] [--seed 1] [--no-n]

`--clients` threads send requests back to back until at least `--requests` requests have
been sent and `--min-seconds` have passed (no new request starts after `--max-seconds`).
Each request is drawn from a seeded generator by its number alone, so a run sends the same
requests whatever the thread timing:

* chat (`/v1/chat/completions`) or legacy completions (`/v1/completions`), about half each;
* streamed (SSE) or not, about half each; a third of the streamed ones hang up after 1-4
  chunks (deliberate disconnects: the server must drop them and carry on);
* `n` of 2 or 3 on some non-streamed sampled requests (`--no-n` for servers without `n`);
* 40% share one long system prompt / document (~600 tokens) before their own question, so
  a server with a prefix cache reuses it under concurrency; the rest are short and distinct;
* greedy or sampled (temperature 0.8, seeded), `max_tokens` 4-48, some with
  `stream_options.include_usage`.

It fails (exit 1, with every problem listed) unless:

* every request either completed with a valid response or was hung up on deliberately: no
  HTTP error, no dropped or truncated stream, nothing lost;
* every response has the OpenAI shape: `choices` with indices exactly 0..n-1 (n of them),
  `finish_reason` "stop" or "length", text / message content a string; streams carry one
  finish_reason and end with `[DONE]`; `usage` numbers are integers with total = prompt +
  completion, completion <= n * max_tokens, = n * max_tokens when every choice hit the
  length limit; the same prompt always counts the same number of prompt tokens;
* `GET /health` (polled every 0.5 s from the warm-up on) always answered 200 within 2 s;
* the server's resident memory (VmRSS of HEARTH_SERVER_PID, from /proc) at the end is at
  most 5% above what it was after the warm-up (one round of `--clients` concurrent requests
  of every kind); skipped, with a note, when HEARTH_SERVER_PID is not set.

Standard library only.
"""

import argparse
import http.client
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.parse
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "fidelity" / "corpus.txt"
REQUEST_TIMEOUT_S = 600
HEALTH_EVERY_S = 0.5
HEALTH_LIMIT_S = 2.0
RSS_SLACK = 1.05

QUESTIONS = [
    "What is the main idea?", "Give one example.", "Name a process described here.",
    "Explain it to a child.", "What happens next?", "List three facts.", "Why does it matter?",
    "What is a good title?", "Summarise in one sentence.", "What word is most important?",
]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--min-seconds", type=float, default=300)
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="no new request after this (default: 3 x --min-seconds + 600)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-n", action="store_true", help="never ask for n > 1")
    ap.add_argument("--model", default="soak")
    args = ap.parse_args()
    if args.max_seconds is None:
        args.max_seconds = 3 * args.min_seconds + 600
    return args


class Server:
    def __init__(self, url, key):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def connect(self, timeout):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


# ---------------------------------------------------------------------------------------
# The requests


class Plan:
    """One request, drawn from the seed and its number."""

    def __init__(self, seed, i, document, allow_n, model):
        r = random.Random(f"soak-{seed}-{i}")
        self.i = i
        self.chat = r.random() < 0.5
        self.stream = r.random() < 0.5
        self.disconnect_after = r.randint(1, 4) if self.stream and r.random() < 1 / 3 else None
        self.shared = r.random() < 0.4
        sampled = r.random() < 0.5
        self.n = r.choice([2, 3]) if allow_n and not self.stream and sampled and r.random() < 0.5 else 1
        self.max_tokens = r.randint(4, 48)
        question = r.choice(QUESTIONS)
        if not self.shared:
            # A distinct short prompt: the request number makes it unique.
            question = f"Note {i}: {question}"
        body = {"model": model, "max_tokens": self.max_tokens, "stream": self.stream}
        if sampled:
            body.update(temperature=0.8, seed=r.randrange(1 << 31))
        else:
            body["temperature"] = 0
        if self.n > 1:
            body["n"] = self.n
        if self.stream and r.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
        if self.chat:
            messages = [{"role": "system", "content": document}] if self.shared else []
            messages.append({"role": "user", "content": question})
            body["messages"] = messages
            self.path = "/v1/chat/completions"
        else:
            prefix = document + "\n\n" if self.shared else ""
            body["prompt"] = f"{prefix}Question: {question}\nAnswer:"
            self.path = "/v1/completions"
        self.body = body
        # Requests with the same prompt must count the same prompt tokens.
        self.prompt_key = json.dumps([self.path, body.get("messages"), body.get("prompt")])

    def describe(self):
        kind = ("chat" if self.chat else "completion") + (" stream" if self.stream else "")
        extra = f" n={self.n}" if self.n > 1 else ""
        extra += f" hang-up@{self.disconnect_after}" if self.disconnect_after else ""
        return f"#{self.i} {kind}{extra}{' shared' if self.shared else ''} max_tokens={self.max_tokens}"


# ---------------------------------------------------------------------------------------
# Checks of a response


class Invalid(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Invalid(msg)


def check_usage(usage, plan, finishes):
    check(isinstance(usage, dict), f"usage is not an object: {usage!r}")
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        check(isinstance(usage.get(k), int) and usage[k] >= 0, f"usage.{k} is not a count: {usage!r}")
    check(usage["prompt_tokens"] > 0, f"usage.prompt_tokens is 0: {usage!r}")
    check(usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"],
          f"usage.total_tokens != prompt + completion: {usage!r}")
    limit = plan.n * plan.max_tokens
    check(usage["completion_tokens"] <= limit, f"usage.completion_tokens above n * max_tokens ({limit}): {usage!r}")
    if finishes and all(f == "length" for f in finishes):
        check(usage["completion_tokens"] == limit,
              f"every choice hit the length limit but usage.completion_tokens != {limit}: {usage!r}")


def check_response(resp, plan):
    """A non-streamed response; returns usage.prompt_tokens."""
    want = "chat.completion" if plan.chat else "text_completion"
    check(resp.get("object") == want, f"object is {resp.get('object')!r}, not {want!r}")
    choices = resp.get("choices")
    check(isinstance(choices, list) and len(choices) == plan.n,
          f"{len(choices) if isinstance(choices, list) else choices!r} choices for n={plan.n}")
    check(sorted(c.get("index") for c in choices) == list(range(plan.n)),
          f"choice indices {[c.get('index') for c in choices]} are not 0..{plan.n - 1}")
    for c in choices:
        check(c.get("finish_reason") in ("stop", "length"), f"finish_reason {c.get('finish_reason')!r}")
        if plan.chat:
            msg = c.get("message") or {}
            check(msg.get("role") == "assistant", f"message.role {msg.get('role')!r}")
            check(isinstance(msg.get("content"), str), f"message.content {msg.get('content')!r}")
        else:
            check(isinstance(c.get("text"), str), f"text {c.get('text')!r}")
    check_usage(resp.get("usage"), plan, [c["finish_reason"] for c in choices])
    return resp["usage"]["prompt_tokens"]


def check_stream(events, done, plan):
    """The parsed events of a stream that ran to its end; returns usage.prompt_tokens
    when the stream reported usage."""
    check(done, "the stream ended without [DONE]")
    want = "chat.completion.chunk" if plan.chat else "text_completion"
    finishes, usage = [], None
    for e in events:
        check(e.get("object") == want, f"chunk object is {e.get('object')!r}, not {want!r}")
        choices = e.get("choices")
        check(isinstance(choices, list), f"chunk without a choices list: {e!r}")
        for c in choices:
            check(c.get("index") == 0, f"chunk choice index {c.get('index')!r} with n=1")
            if plan.chat:
                check(isinstance(c.get("delta"), dict), f"chat chunk without a delta: {e!r}")
            else:
                check(isinstance(c.get("text"), str), f"completion chunk without text: {e!r}")
            if c.get("finish_reason") is not None:
                finishes.append(c["finish_reason"])
        if isinstance(e.get("usage"), dict):
            usage = e["usage"]
    check(len(finishes) == 1 and finishes[0] in ("stop", "length"), f"finish reasons {finishes!r}")
    if "stream_options" in plan.body:
        check(usage is not None, "include_usage was asked for but no chunk carried usage")
    if usage is None:
        return None
    check_usage(usage, plan, finishes)
    return usage["prompt_tokens"]


# ---------------------------------------------------------------------------------------
# Running one request


def run(server, plan):
    """('completed', prompt_tokens) or ('disconnected', None); raises on any failure."""
    conn = server.connect(REQUEST_TIMEOUT_S)
    try:
        conn.connect()
        sock = conn.sock
        conn.request("POST", plan.path, json.dumps(plan.body), server.headers)
        r = conn.getresponse()
        if r.status != 200:
            raise Invalid(f"HTTP {r.status}: {r.read()[:300].decode(errors='replace')}")
        if not plan.stream:
            return "completed", check_response(json.loads(r.read()), plan)
        events, done, text_chunks = [], False, 0
        while True:
            line = r.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            e = json.loads(data)
            if "error" in e:
                raise Invalid(f"error event in the stream: {e['error']!r}")
            events.append(e)
            if any(c.get("finish_reason") is None for c in e.get("choices") or []):
                text_chunks += 1
            if plan.disconnect_after and text_chunks >= plan.disconnect_after:
                # Hang up without reading the rest. The response's file keeps the socket
                # open after a plain close(), so shut the connection down itself.
                sock.shutdown(socket.SHUT_RDWR)
                return "disconnected", None
        return "completed", check_stream(events, done, plan)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# Health and memory watchers


class Health(threading.Thread):
    """Polls /health every HEALTH_EVERY_S; records any answer that is not a 200 within
    HEALTH_LIMIT_S."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.polls, self.slowest, self.failures = 0, 0.0, []

    def run(self):
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                conn = self.server.connect(HEALTH_LIMIT_S)
                try:
                    conn.request("GET", "/health", headers=self.server.headers)
                    status = conn.getresponse().status
                finally:
                    conn.close()
                problem = None if status == 200 else f"HTTP {status}"
            except OSError as e:
                problem = f"{type(e).__name__}: {e}"
            took = time.perf_counter() - t0
            self.polls += 1
            self.slowest = max(self.slowest, took)
            if problem is None and took > HEALTH_LIMIT_S:
                problem = f"answered after {took:.2f} s"
            if problem:
                self.failures.append(f"/health at +{time.monotonic() - START:.1f} s: {problem}")
            self.stop.wait(max(0.0, HEALTH_EVERY_S - took))


def rss_kib(pid):
    """VmRSS of the process in KiB, or None without a PID."""
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def wait_ready(server, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = server.connect(5)
            conn.request("GET", "/health", headers=server.headers)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"soak: {server.host}:{server.port} did not answer /health with 200 in {timeout:.0f} s")


# ---------------------------------------------------------------------------------------
# The soak


class Tally:
    """Outcomes of all requests, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.next_i = 0
        self.completed = self.disconnected = 0
        self.failures = []
        self.prompt_tokens = {}  # prompt key -> (prompt tokens, request number)
        self.kinds = {}

    def record(self, plan, outcome, prompt_tokens):
        with self.lock:
            kind = ("chat" if plan.chat else "completion") + ("/stream" if plan.stream else "") \
                + (f"/n={plan.n}" if plan.n > 1 else "")
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if outcome == "disconnected":
                self.disconnected += 1
                return
            self.completed += 1
            if prompt_tokens is None:
                return
            seen = self.prompt_tokens.setdefault(plan.prompt_key, (prompt_tokens, plan.i))
            if seen[0] != prompt_tokens:
                self.failures.append(f"{plan.describe()}: usage.prompt_tokens {prompt_tokens}, but "
                                     f"#{seen[1]} with the same prompt had {seen[0]}")

    def fail(self, plan, msg):
        with self.lock:
            self.failures.append(f"{plan.describe()}: {msg}")


def client(server, tally, args, document, until):
    """Sends requests until `until(i)` says stop."""
    while True:
        with tally.lock:
            i = tally.next_i
            if not until(i):
                return
            tally.next_i += 1
        plan = Plan(args.seed, i, document, not args.no_n, args.model)
        try:
            outcome, prompt_tokens = run(server, plan)
            tally.record(plan, outcome, prompt_tokens)
        except Invalid as e:
            tally.fail(plan, str(e))
        except Exception as e:  # noqa: BLE001 - any other failure is a finding, not a crash
            tally.fail(plan, f"{type(e).__name__}: {e}")


def run_clients(server, tally, args, document, until):
    threads = [threading.Thread(target=client, args=(server, tally, args, document, until))
               for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


START = time.monotonic()


def main():
    args = parse_args()
    url = os.environ.get("HEARTH_SERVER_URL")
    if not url:
        sys.exit("soak: set HEARTH_SERVER_URL (and HEARTH_TEST_API_KEY, HEARTH_SERVER_PID)")
    pid = os.environ.get("HEARTH_SERVER_PID")
    pid = int(pid) if pid else None
    server = Server(url, os.environ.get("HEARTH_TEST_API_KEY"))
    words = CORPUS.read_text().split()
    document = "You answer questions about this document.\n\n" + " ".join(words[:450])
    wait_ready(server)
    health = Health(server)
    health.start()

    # Warm-up: one round of concurrent requests (numbers past the soak's, so the soak's
    # own requests stay the same whatever --clients is).
    warm = Tally()
    warm.next_i = 1_000_000
    run_clients(server, warm, args, document, lambda i: i < 1_000_000 + args.clients)
    rss_warm = rss_kib(pid)

    tally = Tally()
    t0 = time.monotonic()

    def until(i):
        elapsed = time.monotonic() - t0
        return elapsed < args.max_seconds and (i < args.requests or elapsed < args.min_seconds)

    rss_max = rss_warm
    done = threading.Event()

    def watch_rss():
        nonlocal rss_max
        while not done.wait(1.0):
            rss_max = max(rss_max, rss_kib(pid))

    if pid is not None:
        threading.Thread(target=watch_rss, daemon=True).start()
    run_clients(server, tally, args, document, until)
    elapsed = time.monotonic() - t0
    done.set()
    health.stop.set()
    health.join()
    rss_end = rss_kib(pid)

    failures = warm.failures + tally.failures + health.failures
    if pid is not None and rss_end > rss_warm * RSS_SLACK:
        failures.append(f"RSS grew from {rss_warm / 1024:.1f} MiB after warm-up to "
                        f"{rss_end / 1024:.1f} MiB at the end (limit +{(RSS_SLACK - 1) * 100:.0f}%)")
    sent = tally.next_i
    if tally.completed + tally.disconnected + len(tally.failures) != sent:
        failures.append(f"{sent} requests sent but only {tally.completed} completed, "
                        f"{tally.disconnected} disconnected and {len(tally.failures)} failed")

    print(f"soak: {sent} requests from {args.clients} clients in {elapsed:.1f} s (seed {args.seed}): "
          f"{tally.completed} completed, {tally.disconnected} hung up on purpose, {len(tally.failures)} failed")
    print("  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.kinds.items())))
    print(f"  /health: {health.polls} polls, slowest {health.slowest * 1000:.0f} ms, "
          f"{len(health.failures)} failures")
    if pid is None:
        print("  RSS: not checked (HEARTH_SERVER_PID not set)")
    else:
        print(f"  RSS: {rss_warm / 1024:.1f} MiB after warm-up, max {rss_max / 1024:.1f} MiB, "
              f"{rss_end / 1024:.1f} MiB at the end")
    if failures:
        print(f"soak: FAILED ({len(failures)} problems):", file=sys.stderr)
        for f in failures[:50]:
            print(f"  {f}", file=sys.stderr)
        if len(failures) > 50:
            print(f"  ... and {len(failures) - 50} more", file=sys.stderr)
        if not args.no_n and any(" n=" in f and "HTTP 400" in f for f in failures):
            print("soak: (a server without `n` > 1 can be soaked with --no-n)", file=sys.stderr)
        sys.exit(1)
    print("soak: OK")


if __name__ == "__main__":
    main()
