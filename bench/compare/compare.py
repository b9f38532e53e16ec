#!/usr/bin/env python3
"""Combines the runs of bench/compare/run.sh into one side-by-side table.

Reads every *.json file in a directory, each the output of one run:
  hearth-<model>-t<threads>-<alternation>.json   `hearth bench --json` (a JSON array)
  llama-<model>-t<threads>-<alternation>.json    bench/llama/llama_cpp_bench.py (JSON lines)
and prints, per model, thread count and test, the median t/s of each engine over all
repetitions of all alternations, the ratio Hearth / llama.cpp, and for generation
Hearth's share of the bandwidth limit (median t/s over the median limit that
`hearth bench` measured alongside).

    python3 compare.py RESULTS_DIR [--json]
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def read_rows(path):
    """The row objects of one run's output: a JSON array or JSON lines."""
    text = path.read_text()
    try:
        value = json.loads(text)
        return value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def collect(directory):
    """{(model, threads, test): {"hearth": [t/s], "llama": [t/s], "limit": [t/s]}}."""
    table = defaultdict(lambda: defaultdict(list))
    for path in sorted(Path(directory).glob("*.json")):
        engine, _, rest = path.stem.partition("-")
        if engine not in ("hearth", "llama"):
            continue
        model = rest.rsplit("-t", 1)[0]
        for row in read_rows(path):
            n_prompt, n_gen = row["n_prompt"], row["n_gen"]
            test = f"pp{n_prompt}" if n_prompt > 0 else f"tg{n_gen}"
            if row.get("n_depth", 0) > 0:
                test += f" @ d{row['n_depth']}"
            key = (model, row["n_threads"], test)
            table[key][engine].extend(row["samples_ts"])
            if engine == "hearth" and n_gen > 0:
                table[key]["limit"].append(row["bandwidth_limit_ts"])
    return table


def median(xs):
    return statistics.median(xs) if xs else None


def summarize(table):
    out = []
    for (model, threads, test), runs in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2][:2] != "pp")):
        hearth, llama, limit = median(runs["hearth"]), median(runs["llama"]), median(runs["limit"])
        out.append({
            "model": model,
            "n_threads": threads,
            "test": test,
            "hearth_ts": hearth,
            "llama_cpp_ts": llama,
            "ratio": hearth / llama if hearth and llama else None,
            "hearth_share_of_limit": hearth / limit if hearth and limit else None,
            "bandwidth_limit_ts": limit,
            "hearth_samples": len(runs["hearth"]),
            "llama_cpp_samples": len(runs["llama"]),
        })
    return out


def fmt(x, spec, suffix=""):
    return "-" if x is None else format(x, spec) + suffix


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = ap.parse_args()
    rows = summarize(collect(a.results))
    if not rows:
        sys.exit(f"no results in {a.results}")
    if a.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return
    print("| model | threads | test | Hearth t/s | llama.cpp t/s | ratio | Hearth share of limit |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        share = fmt(r["hearth_share_of_limit"] and 100 * r["hearth_share_of_limit"], ".0f", " %")
        print(f"| {r['model']} | {r['n_threads']} | {r['test']} | {fmt(r['hearth_ts'], '.1f')} | "
              f"{fmt(r['llama_cpp_ts'], '.1f')} | {fmt(r['ratio'], '.2f')} | {share if r['test'].startswith('tg') else ''} |")
    print()
    print("medians over all repetitions of all alternations; the limit is the measured read "
          "bandwidth (the better of 2 MiB and 4 KiB pages) over the weight bytes per token")


if __name__ == "__main__":
    main()
