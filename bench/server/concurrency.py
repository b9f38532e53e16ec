#!/usr/bin/env python3
"""Throughput and latency of one OpenAI-compatible server under concurrent streams.

Every request is a streamed (SSE) `/v1/completions` call, greedy (`temperature: 0`), timed
on arrival of each server-sent event. A chunk with non-empty text counts as one token: both
llama.cpp's `llama-server` and `hearth serve` send one chunk per sampled token (a token that
ends inside a UTF-8 character is held back and sent with the next one; the table's
`tok/chunk` column compares `usage.completion_tokens` with the chunk count to show it).

1. Concurrency levels (default 1, 2, 4, 8): that many clients start at once, each with its
   own ~200-token prompt and `max_tokens` 128 with `ignore_eos` (llama.cpp's extension: the
   end-of-sequence token does not stop generation), so every stream is exactly 128 tokens.
     agg tok/s  all generated tokens / (last chunk of the level - first request sent)
     gen tok/s  generation alone, as llama.cpp's "eval" rate: the tokens after each
                stream's first / (last chunk - first stream's first chunk)
     TTFT       first text chunk - request sent          (median, p99 over the clients)
     ITL        gap between consecutive text chunks      (median, p99 over all gaps)
2. Interference: 3 streams decode (256 tokens, `ignore_eos`); once all 3 are streaming, a
   4th request with a ~1000-token prompt arrives. The 3 streams' gaps that overlap the 4th
   request's prefill window (its send to its first token) are compared with their gaps
   outside it: a server that runs the whole prefill between two decode steps stalls every
   stream for the length of the prefill; one that interleaves prefill chunks with decode
   steps keeps the stall near one step.
     median ITL    the 3 streams' gaps outside the window
     window p99    p99 (with few samples, about the max) of the gaps overlapping the window
     stall ratio   window p99 / median ITL
3. Scaling (`--scaling-pairs N`, default 5): the issue's question, how many times one
   stream's rate N concurrent streams give, asked in a way a shared machine's drift cannot
   answer. Levels 1 and 4 (`--scaling 1,4`) run back to back N times, the order flipped
   each pair (1 then 4, then 4 then 1, ...), and each pair gives its own ratio of the two
   rates: a change in the neighbours' load between a whole level-1 run and a whole level-4
   run seconds later moves that ratio, one inside a pair moves one pair's. Reported: the
   median of the pairs' ratios, agg and gen, and every pair's.
4. Prefix: a chat-like transcript with a ~1500-token history (turn 1), then turn 2 = turn 1's
   prompt + its answer + a new question. A server that keeps the turn-1 prefix cached only
   evaluates the new tokens: TTFT of turn 2 / TTFT of turn 1 is well below 1, and
   `usage.prompt_tokens_details.cached_tokens` (asked for with
   `stream_options.include_usage`) says how many prompt tokens it reused, where reported.

Prompts are slices of tests/fixtures/fidelity/corpus.txt, each starting at its own offset and
with a run tag (`Excerpt 4821-07.`), so no request shares a prefix with another (except in
the prefix scenario, on purpose) nor with a previous run against the same server process:
a server cannot answer from a cached prompt. The tag defaults to a random number (printed);
`--tag N` fixes it to replay a run exactly. Prompt lengths are targets: the corpus averages
4.34 characters per Gemma 3 token (tests/fixtures/fidelity/manifest.json: 21737 bytes, 5007
tokens); the table reports the server's `usage.prompt_tokens`.

A server that lacks a feature is measured anyway and the missing feature reported: a
rejected `ignore_eos` is dropped (streams may then stop early: see `tokens`), a server that
runs one request at a time shows in TTFT and in "streams never all concurrent".

    concurrency.py --url http://127.0.0.1:8080 [--name hearth] [--levels 1,2,4,8]
                   [--max-tokens 128] [--prompt-tokens 200] [--skip-interference]
                   [--scaling 1,4] [--scaling-pairs 5] [--skip-prefix] [--api-key KEY]
                   [--tag N] [--json FILE]
    concurrency.py --compare DIR [--numerator hearth] [--denominator llama.cpp]
                   (side by side: the medians over the --json files of each --name in DIR;
                   bench/server/run.sh makes them)

Standard library only.
"""

import argparse
import http.client
import json
import math
import random
import statistics
import sys
import threading
import time
import urllib.parse
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "fidelity" / "corpus.txt"
CHARS_PER_TOKEN = 21737 / 5007
TIMEOUT_S = 900


# ---------------------------------------------------------------------------------------
# Server-sent events


def sse_events(resp):
    """The JSON events of an OpenAI-style server-sent event stream, in order, until
    `data: [DONE]` or the end of the response (other lines skipped)."""
    while line := resp.readline():
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        yield json.loads(data)


# ---------------------------------------------------------------------------------------
# Prompts


class Prompts:
    """Distinct prompts cut from the corpus, read as a ring of words."""

    def __init__(self, tag):
        self.words = CORPUS.read_text().split()
        self.tag = tag
        self.next_request = 0
        self.next_word = 0

    def take(self, n_tokens):
        """A prompt of about n_tokens tokens that starts where the previous one ended."""
        i = self.next_request
        self.next_request += 1
        head = f"Excerpt {self.tag}-{i:02d}. "
        target = int(n_tokens * CHARS_PER_TOKEN) - len(head)
        words, n_chars = [], 0
        while n_chars < target:
            w = self.words[self.next_word % len(self.words)]
            self.next_word += 1
            words.append(w)
            n_chars += len(w) + 1
        return head + " ".join(words)


# ---------------------------------------------------------------------------------------
# One streamed request


class Stream:
    """One streamed request and what arrived: the send time, the arrival time of each
    chunk with text, the text, the usage (when the server sent it) and any error."""

    def __init__(self, body):
        self.body = body
        self.t_send = None
        self.t_chunks = []
        self.text = []
        self.usage = None
        self.finish_reason = None
        self.error = None

    @property
    def n_chunks(self):
        return len(self.t_chunks)

    @property
    def ttft(self):
        return self.t_chunks[0] - self.t_send if self.t_chunks else None

    def gaps(self):
        """[(start, end)] of each inter-token gap."""
        return list(zip(self.t_chunks, self.t_chunks[1:]))


class Server:
    def __init__(self, url, api_key):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        # Request fields the server rejected (400 naming the field); dropped from then on.
        self.dropped = set()

    def get(self, path, timeout=10):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=self.headers)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def post(self, path, body):
        """(status, parsed JSON) of a non-streamed request."""
        body = {k: v for k, v in body.items() if k not in self.dropped}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
        try:
            conn.request("POST", path, json.dumps(body), self.headers)
            r = conn.getresponse()
            data = r.read()
            try:
                return r.status, json.loads(data)
            except json.JSONDecodeError:
                return r.status, {"raw": data.decode(errors="replace")}
        finally:
            conn.close()

    def stream(self, s, on_chunk=None):
        """Runs the streamed request `s` (a Stream) to its end, filling in its fields;
        `on_chunk(s)` is called after each text chunk."""
        body = {k: v for k, v in s.body.items() if k not in self.dropped}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
        try:
            s.t_send = time.perf_counter()
            conn.request("POST", "/v1/completions", json.dumps(body), self.headers)
            r = conn.getresponse()
            if r.status != 200:
                s.error = f"HTTP {r.status}: {r.read()[:300].decode(errors='replace')}"
                return s
            for event in sse_events(r):
                t = time.perf_counter()
                if "error" in event:
                    s.error = f"error event: {json.dumps(event['error'])[:300]}"
                    break
                if isinstance(event.get("usage"), dict):
                    s.usage = event["usage"]
                for choice in event.get("choices") or []:
                    if choice.get("text"):
                        s.t_chunks.append(t)
                        s.text.append(choice["text"])
                        if on_chunk:
                            on_chunk(s)
                    if choice.get("finish_reason"):
                        s.finish_reason = choice["finish_reason"]
        except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
            s.error = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        return s

    def probe(self, body):
        """One short non-streamed request (which also pages the model in). Fields the
        server rejects with a 400 naming them are dropped for the rest of the run.
        Returns the response's usage."""
        for _ in range(len(body)):
            status, resp = self.post("/v1/completions", body)
            if status == 200:
                return resp.get("usage")
            err = resp.get("error") if isinstance(resp, dict) else None
            text = json.dumps(err if err is not None else resp)
            bad = [f for f in ("ignore_eos", "stream_options") if f in text and f not in self.dropped]
            if status != 400 or not bad:
                raise RuntimeError(f"warm-up request failed: HTTP {status}: {text[:300]}")
            self.dropped.update(bad)
        raise RuntimeError("warm-up request kept failing")


def completion(prompt, max_tokens):
    return {
        "model": "bench",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def run_all(server, streams, on_chunk=None):
    """Runs the streams at once (threads released together) and waits for all."""
    go = threading.Barrier(len(streams))

    def client(s):
        go.wait()
        server.stream(s, on_chunk)

    threads = [threading.Thread(target=client, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---------------------------------------------------------------------------------------
# Statistics


def pct(xs, p):
    """The p-th percentile, nearest rank (p99 of fewer than 100 samples is the max)."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def med(xs):
    return statistics.median(xs) if xs else None


def prompt_tokens(streams):
    n = [s.usage["prompt_tokens"] for s in streams if s.usage and "prompt_tokens" in s.usage]
    return med(n)


def tokens_per_chunk(streams):
    """usage.completion_tokens / text chunks over the streams that report usage."""
    toks = sum(s.usage["completion_tokens"] for s in streams if s.usage and s.n_chunks)
    chunks = sum(s.n_chunks for s in streams if s.usage and s.n_chunks)
    return toks / chunks if chunks else None


# ---------------------------------------------------------------------------------------
# Scenarios


def level(server, prompts, n_clients, args):
    streams = [Stream(completion(prompts.take(args.prompt_tokens), args.max_tokens))
               for _ in range(n_clients)]
    run_all(server, streams)
    ok = [s for s in streams if s.error is None and s.t_chunks]
    result = {
        "clients": n_clients,
        "errors": [s.error for s in streams if s.error],
        "prompt_tokens": prompt_tokens(ok),
        "tokens_min": min((s.n_chunks for s in streams), default=0),
        "tokens_max": max((s.n_chunks for s in streams), default=0),
        "tokens_per_chunk": tokens_per_chunk(ok),
    }
    if ok:
        wall = max(s.t_chunks[-1] for s in ok) - min(s.t_send for s in ok)
        ttfts = [s.ttft for s in ok]
        itls = [b - a for s in ok for a, b in s.gaps()]
        result.update({
            "wall_s": wall,
            "agg_tok_s": sum(s.n_chunks for s in ok) / wall,
            # Generation alone, as llama.cpp's "eval" rate: the tokens after each
            # stream's first, over the span from the first of them to the last token.
            "gen_tok_s": gen_rate(ok),
            "ttft_median_s": med(ttfts),
            "ttft_p99_s": pct(ttfts, 99),
            "itl_median_s": med(itls),
            "itl_p99_s": pct(itls, 99),
            # First to last token of one stream: what one user sees once it is going.
            "stream_tok_s_median": med([(s.n_chunks - 1) / (s.t_chunks[-1] - s.t_chunks[0])
                                        for s in ok if s.n_chunks > 1]),
        })
    return result


def gen_rate(streams):
    going = [s for s in streams if s.n_chunks > 1]
    if not going:
        return None
    span = max(s.t_chunks[-1] for s in going) - min(s.t_chunks[0] for s in going)
    return sum(s.n_chunks - 1 for s in going) / span if span > 0 else None


def scaling(server, prompts, args):
    """Levels `low` and `high` back to back in pairs, the order flipped each pair; each
    pair's ratio of the high level's rates to the low one's, and their medians."""
    low, high = (int(x) for x in args.scaling.split(","))
    pairs = []
    for i in range(args.scaling_pairs):
        order = (low, high) if i % 2 == 0 else (high, low)
        runs = {n: level(server, prompts, n, args) for n in order}
        ratio = lambda key: (runs[high][key] / runs[low][key]  # noqa: E731
                             if runs[high].get(key) and runs[low].get(key) else None)
        pairs.append({
            "order": list(order),
            "low": {k: runs[low].get(k) for k in ("agg_tok_s", "gen_tok_s", "itl_median_s")},
            "high": {k: runs[high].get(k) for k in ("agg_tok_s", "gen_tok_s", "itl_median_s")},
            "agg_ratio": ratio("agg_tok_s"),
            "gen_ratio": ratio("gen_tok_s"),
            "errors": runs[low]["errors"] + runs[high]["errors"],
        })
    return {
        "low": low,
        "high": high,
        "pairs": pairs,
        "agg_ratio_median": med([p["agg_ratio"] for p in pairs if p["agg_ratio"]]),
        "gen_ratio_median": med([p["gen_ratio"] for p in pairs if p["gen_ratio"]]),
    }


def interference(server, prompts, args):
    """3 decoding streams, then a ~1000-token prompt arrives once all 3 are streaming."""
    n_streams, warm_chunks, wait_s = 3, 4, 60.0
    decoders = [Stream(completion(prompts.take(args.prompt_tokens), args.interference_tokens))
                for _ in range(n_streams)]
    late = Stream(completion(prompts.take(args.long_prompt_tokens), 8))
    all_streaming = threading.Event()
    lock = threading.Lock()

    def on_chunk(_):
        with lock:
            if all(s.n_chunks >= warm_chunks for s in decoders):
                all_streaming.set()

    threads = [threading.Thread(target=server.stream, args=(s, on_chunk)) for s in decoders]
    for t in threads:
        t.start()
    # A server that runs one request at a time never has all 3 streaming: then the long
    # prompt goes as soon as the first stream ends.
    deadline = time.perf_counter() + wait_s
    while not all_streaming.is_set() and all(t.is_alive() for t in threads) \
            and time.perf_counter() < deadline:
        time.sleep(0.005)
    concurrent = all_streaming.is_set()
    server.stream(late)
    for t in threads:
        t.join()

    result = {
        "streams_all_concurrent": concurrent,
        "errors": [s.error for s in decoders + [late] if s.error],
        "long_prompt_tokens": prompt_tokens([late]),
        "long_ttft_s": late.ttft,
    }
    if late.ttft is None:
        return result
    w0, w1 = late.t_send, late.t_chunks[0]
    inside, outside = [], []
    for s in decoders:
        for a, b in s.gaps():
            (inside if a < w1 and b > w0 else outside).append(b - a)
    result.update({
        "itl_median_s": med(outside),
        "window_itl_median_s": med(inside),
        "window_itl_p99_s": pct(inside, 99),
        "window_gaps": len(inside),
        "stall_ratio": pct(inside, 99) / med(outside) if inside and outside else None,
    })
    return result


QUESTIONS = [
    "Summarise the passage above in two sentences.",
    "Which process in the passage moves the most water, and why?",
]


def prefix(server, prompts, args):
    """Turn 1 over a ~1500-token history, then turn 2 extending it."""
    history = prompts.take(args.history_tokens)
    turn1 = (f"The following is a conversation about a document.\n\nUser: Here is the document.\n\n"
             f"{history}\n\n{QUESTIONS[0]}\nAssistant:")
    s1 = server.stream(Stream(completion(turn1, args.answer_tokens)))
    if s1.error:
        return {"errors": [s1.error]}
    turn2 = turn1 + "".join(s1.text) + f"\nUser: {QUESTIONS[1]}\nAssistant:"
    s2 = server.stream(Stream(completion(turn2, 8)))

    def cached(s):
        details = (s.usage or {}).get("prompt_tokens_details") or {}
        return details.get("cached_tokens")

    return {
        "errors": [s.error for s in (s1, s2) if s.error],
        "turn1_prompt_tokens": prompt_tokens([s1]),
        "turn2_prompt_tokens": prompt_tokens([s2]),
        "turn1_ttft_s": s1.ttft,
        "turn2_ttft_s": s2.ttft,
        "ttft_ratio": s2.ttft / s1.ttft if s1.ttft and s2.ttft else None,
        "turn1_cached_tokens": cached(s1),
        "turn2_cached_tokens": cached(s2),
    }


# ---------------------------------------------------------------------------------------
# Report


def ms(x):
    return "-" if x is None else f"{x * 1000:.1f}"


def num(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def print_report(name, r):
    print(f"\n== {name} ({r['url']}), run tag {r['tag']}")
    if r["dropped_fields"]:
        print(f"   server rejected {', '.join(sorted(r['dropped_fields']))}: sent without")
    print(f"{'clients':>7} {'prompt':>6} {'tokens':>9} {'tok/chunk':>9} {'agg tok/s':>9} "
          f"{'gen tok/s':>9} {'TTFT med':>9} {'TTFT p99':>9} {'ITL med':>8} {'ITL p99':>8} "
          f"{'stream t/s':>10}  (ms)")
    for lv in r["levels"]:
        toks = f"{lv['tokens_min']}-{lv['tokens_max']}" if lv["tokens_min"] != lv["tokens_max"] else str(lv["tokens_min"])
        print(f"{lv['clients']:>7} {num(lv['prompt_tokens'], '.0f'):>6} {toks:>9} "
              f"{num(lv['tokens_per_chunk'], '.2f'):>9} {num(lv.get('agg_tok_s')):>9} "
              f"{num(lv.get('gen_tok_s')):>9} "
              f"{ms(lv.get('ttft_median_s')):>9} {ms(lv.get('ttft_p99_s')):>9} "
              f"{ms(lv.get('itl_median_s')):>8} {ms(lv.get('itl_p99_s')):>8} "
              f"{num(lv.get('stream_tok_s_median')):>10}")
        for e in lv["errors"]:
            print(f"        error: {e}")
    i = r.get("interference")
    if i:
        print(f"interference: {num(i['long_prompt_tokens'], '.0f')}-token prompt, its TTFT "
              f"{ms(i['long_ttft_s'])} ms; 3 streams' ITL median {ms(i.get('itl_median_s'))} ms, "
              f"in its prefill window median {ms(i.get('window_itl_median_s'))} / "
              f"p99 {ms(i.get('window_itl_p99_s'))} ms over {i.get('window_gaps', 0)} gaps, "
              f"stall ratio {num(i.get('stall_ratio'))}x"
              + ("" if i["streams_all_concurrent"] else "  [streams never all concurrent]"))
        for e in i["errors"]:
            print(f"        error: {e}")
    sc = r.get("scaling")
    if sc:
        each = ", ".join(f"{num(p['agg_ratio'], '.2f')}/{num(p['gen_ratio'], '.2f')}"
                         for p in sc["pairs"])
        print(f"scaling: {sc['high']} / {sc['low']} clients over {len(sc['pairs'])} pairs, "
              f"median agg {num(sc['agg_ratio_median'], '.2f')}x, gen "
              f"{num(sc['gen_ratio_median'], '.2f')}x (each pair agg/gen: {each})")
        for p in sc["pairs"]:
            for e in p["errors"]:
                print(f"        error: {e}")
    p = r.get("prefix")
    if p:
        print(f"prefix: turn 1 {num(p.get('turn1_prompt_tokens'), '.0f')} tokens TTFT "
              f"{ms(p.get('turn1_ttft_s'))} ms; turn 2 {num(p.get('turn2_prompt_tokens'), '.0f')} "
              f"tokens TTFT {ms(p.get('turn2_ttft_s'))} ms; ratio {num(p.get('ttft_ratio'), '.3f')}; "
              f"cached_tokens {num(p.get('turn2_cached_tokens'), '.0f').replace('-', 'not reported')}")
        for e in p["errors"]:
            print(f"        error: {e}")


def compare(directory, a, b):
    """Side-by-side table of the --json files in a directory (several rounds of each
    server: the median of each figure over the rounds)."""
    runs = {}
    for path in sorted(Path(directory).glob("*.json")):
        r = json.loads(path.read_text())
        runs.setdefault(r["name"], []).append(r)
    if a not in runs or b not in runs:
        sys.exit(f"compare: need results of {a} and {b} in {directory}, found {sorted(runs)}")

    def fig(name, get):
        xs = [x for x in (get(r) for r in runs[name]) if x is not None]
        return med(xs)

    def row(label, get, scale, spec, unit):
        x, y = fig(a, get), fig(b, get)
        show = lambda v: "-" if v is None else format(v * scale, spec)  # noqa: E731
        ratio = f"{x / y:.2f}x" if x is not None and y else "-"
        print(f"{label:<34} {show(x):>10} {show(y):>10} {ratio:>8}  {unit}")

    print(f"{'':<34} {a:>10} {b:>10} {'ratio':>8}  ({a} / {b}; medians of "
          f"{len(runs[a])} and {len(runs[b])} runs)")
    clients = [lv["clients"] for lv in runs[a][0]["levels"]]
    for k, n in enumerate(clients):
        def lv(key, k=k):
            return lambda r: r["levels"][k].get(key) if k < len(r["levels"]) else None
        row(f"{n} clients: agg tok/s", lv("agg_tok_s"), 1, ".1f", "higher is better")
        row(f"{n} clients: generation tok/s", lv("gen_tok_s"), 1, ".1f", "after first tokens")
        row(f"{n} clients: TTFT median", lv("ttft_median_s"), 1000, ".1f", "ms")
        row(f"{n} clients: TTFT p99", lv("ttft_p99_s"), 1000, ".1f", "ms")
        row(f"{n} clients: ITL median", lv("itl_median_s"), 1000, ".1f", "ms")
        row(f"{n} clients: ITL p99", lv("itl_p99_s"), 1000, ".1f", "ms")
        row(f"{n} clients: tokens per stream (min)", lv("tokens_min"), 1, ".0f", "")
    sub = lambda part, key: lambda r: (r.get(part) or {}).get(key)  # noqa: E731
    row("interference: long prompt TTFT", sub("interference", "long_ttft_s"), 1000, ".1f", "ms")
    row("interference: ITL median", sub("interference", "itl_median_s"), 1000, ".1f", "ms")
    row("interference: window ITL p99", sub("interference", "window_itl_p99_s"), 1000, ".1f", "ms")
    row("interference: stall ratio", sub("interference", "stall_ratio"), 1, ".1f", "p99 / median")
    if any(r.get("scaling") for r in runs[a] + runs[b]):
        sc = next(r["scaling"] for r in runs[a] + runs[b] if r.get("scaling"))
        label = f"scaling: {sc['high']} / {sc['low']} clients"
        row(f"{label}, agg", sub("scaling", "agg_ratio_median"), 1, ".2f", "median of pairs")
        row(f"{label}, gen", sub("scaling", "gen_ratio_median"), 1, ".2f", "median of pairs")
    row("prefix: turn 1 TTFT", sub("prefix", "turn1_ttft_s"), 1000, ".1f", "ms")
    row("prefix: turn 2 TTFT", sub("prefix", "turn2_ttft_s"), 1000, ".1f", "ms")
    row("prefix: turn 2 / turn 1 TTFT", sub("prefix", "ttft_ratio"), 1, ".3f", "")
    row("prefix: turn 2 cached tokens", sub("prefix", "turn2_cached_tokens"), 1, ".0f", "")
    for name in (a, b):
        dropped = sorted({f for r in runs[name] for f in r.get("dropped_fields", [])})
        if dropped:
            print(f"{name} rejected {', '.join(dropped)} (sent without)")
        errors = sum(len(lv["errors"]) for r in runs[name] for lv in r["levels"])
        if errors:
            print(f"{name}: {errors} failed requests (see the JSON files)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url")
    ap.add_argument("--compare", metavar="DIR",
                    help="instead of measuring, print the --json files in DIR side by side")
    ap.add_argument("--numerator", default="hearth")
    ap.add_argument("--denominator", default="llama.cpp")
    ap.add_argument("--name", default="server")
    ap.add_argument("--api-key")
    ap.add_argument("--levels", default="1,2,4,8")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--interference-tokens", type=int, default=256)
    ap.add_argument("--long-prompt-tokens", type=int, default=1000)
    ap.add_argument("--history-tokens", type=int, default=1500)
    ap.add_argument("--answer-tokens", type=int, default=32)
    ap.add_argument("--skip-interference", action="store_true")
    ap.add_argument("--scaling", default="1,4", help="the two levels of the scaling pairs")
    ap.add_argument("--scaling-pairs", type=int, default=5, help="0 skips the scenario")
    ap.add_argument("--skip-prefix", action="store_true")
    ap.add_argument("--tag", type=int, help="run tag in every prompt (default: random)")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    if args.compare:
        compare(args.compare, args.numerator, args.denominator)
        return
    if not args.url:
        ap.error("--url is required")

    tag = args.tag if args.tag is not None else random.randrange(1000, 10000)
    server = Server(args.url, args.api_key)
    prompts = Prompts(tag)
    warm = completion(f"Warm-up {tag}. " + prompts.take(20), 4)
    warm["stream"] = False
    del warm["stream_options"]
    server.probe(warm)

    result = {"name": args.name, "url": args.url, "tag": tag, "levels": []}
    for n in (int(x) for x in args.levels.split(",")):
        print(f"{args.name}: {n} clients", file=sys.stderr)
        result["levels"].append(level(server, prompts, n, args))
    if not args.skip_interference:
        print(f"{args.name}: interference", file=sys.stderr)
        result["interference"] = interference(server, prompts, args)
    if args.scaling_pairs > 0:
        print(f"{args.name}: scaling", file=sys.stderr)
        result["scaling"] = scaling(server, prompts, args)
    if not args.skip_prefix:
        print(f"{args.name}: prefix", file=sys.stderr)
        result["prefix"] = prefix(server, prompts, args)
    result["dropped_fields"] = sorted(server.dropped)

    print_report(args.name, result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
