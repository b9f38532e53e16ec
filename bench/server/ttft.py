#!/usr/bin/env python3
"""Time to first token and single-stream decode rate of OpenAI-compatible servers.

Sends the same ~240-token prompt to each server's streaming `/v1/completions`
endpoint, greedy (temperature 0), and times the server-sent events on arrival:

  TTFT   = first non-empty text chunk - request sent   (prompt processing + 1 token)
  decode = (n - 1) / (t_last - t_first)                 (n = non-empty text chunks)

Servers are measured alternately (A, B, A, B, ...) so that load on the machine
affects both alike; medians are reported. Each request starts with a distinct
four-digit request number ("Request 0007."), so no server can answer from a
prompt prefix cached by an earlier request; Gemma-style tokenizers split digits,
so every request has the same token count. That count is read from each server's
`usage.prompt_tokens` (one non-streamed warm-up request per server).

Usage: ttft.py --server NAME=URL [--server NAME=URL ...] [--reps 7] [--max-tokens 128]
The first server is the numerator of the printed ratios.
"""

import argparse
import json
import statistics
import sys
import time

import requests

PROMPT_HEAD = "Request {n:04d}. The following is an excerpt from a long report on the history of home heating.\n\n"
PROMPT_BODY = (
    "For most of human history, the hearth was the center of the home. It was where food was "
    "cooked, where water was boiled, where clothes were dried, and where the family gathered in "
    "the evening to talk and to tell stories. Early houses had an open fire in the middle of a "
    "single room, with a hole in the roof to let the smoke escape. The smoke often did not escape "
    "very well, and the interiors of these houses were dark and full of soot. Over the centuries, "
    "builders learned to move the fire against a wall and to build a chimney above it, which "
    "carried the smoke away and allowed houses to have more than one floor. The chimney changed "
    "the shape of the house, the shape of the village, and even the shape of the family, because "
    "rooms could now be heated separately and people could sleep apart. By the eighteenth century, "
    "inventors were designing iron stoves that burned less wood and gave more heat. In the "
    "chapters that follow, we describe how these changes happened, region by region, and what "
    "they meant for the people who lived through them. The first chapter begins in"
)


def prompt(n):
    return PROMPT_HEAD.format(n=n) + PROMPT_BODY


def body(n, max_tokens, stream):
    b = {
        "model": "bench",
        "prompt": prompt(n),
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    return b


def warm_up(url):
    """One non-streamed request: loads the model pages and reports the prompt's token count."""
    r = requests.post(url + "/v1/completions", json=body(0, 8, False), timeout=600)
    r.raise_for_status()
    return r.json()["usage"]["prompt_tokens"]


def measure(url, n, max_tokens):
    """One streamed request; returns (ttft_s, decode_tok_s, text_chunks)."""
    times = []
    t0 = time.perf_counter()
    with requests.post(
        url + "/v1/completions", json=body(n, max_tokens, True), stream=True, timeout=600
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            choices = json.loads(data).get("choices") or []
            if choices and choices[0].get("text"):
                times.append(time.perf_counter())
    if len(times) < 2:
        raise RuntimeError(f"{url}: fewer than two text chunks came back")
    ttft = times[0] - t0
    decode = (len(times) - 1) / (times[-1] - times[0])
    return ttft, decode, len(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", action="append", required=True, metavar="NAME=URL")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json", metavar="FILE", help="also write all samples here")
    args = ap.parse_args()

    servers = [s.split("=", 1) for s in args.server]
    samples = {name: {"ttft": [], "decode": [], "chunks": []} for name, _ in servers}
    prompt_tokens = {}
    for name, url in servers:
        prompt_tokens[name] = warm_up(url.rstrip("/"))
        print(f"{name}: prompt_tokens = {prompt_tokens[name]}", file=sys.stderr)

    req = 1
    for rep in range(args.reps):
        # Alternate which server goes first, so neither always follows the other.
        order = servers if rep % 2 == 0 else servers[::-1]
        for name, url in order:
            ttft, decode, chunks = measure(url.rstrip("/"), req, args.max_tokens)
            req += 1
            s = samples[name]
            s["ttft"].append(ttft)
            s["decode"].append(decode)
            s["chunks"].append(chunks)
            print(
                f"rep {rep + 1}/{args.reps} {name:>10}: TTFT {ttft * 1e3:7.1f} ms  "
                f"decode {decode:6.1f} tok/s  ({chunks} text chunks)",
                file=sys.stderr,
            )

    med = {
        name: {
            "ttft_ms": statistics.median(s["ttft"]) * 1e3,
            "decode_tok_s": statistics.median(s["decode"]),
            "chunks": statistics.median(s["chunks"]),
        }
        for name, s in samples.items()
    }
    print(f"\nmedians over {args.reps} reps, max_tokens {args.max_tokens}, greedy, streamed")
    print(f"{'server':>12} {'prompt tok':>10} {'TTFT ms':>9} {'decode tok/s':>13} {'chunks':>7}")
    for name, _ in servers:
        m = med[name]
        print(
            f"{name:>12} {prompt_tokens[name]:>10} {m['ttft_ms']:>9.1f} "
            f"{m['decode_tok_s']:>13.1f} {m['chunks']:>7.0f}"
        )
    first = servers[0][0]
    for name, _ in servers[1:]:
        print(
            f"ratio {first}/{name}: TTFT {med[first]['ttft_ms'] / med[name]['ttft_ms']:.2f}x "
            f"(lower is better), decode {med[first]['decode_tok_s'] / med[name]['decode_tok_s']:.2f}x "
            f"(higher is better)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"prompt_tokens": prompt_tokens, "samples": samples, "medians": med}, f, indent=1
            )


if __name__ == "__main__":
    main()
