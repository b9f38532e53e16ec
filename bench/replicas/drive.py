#!/usr/bin/env python3
"""Drives Hearth replicas behind HAProxy (bench/replicas/run.sh starts them): aggregate
throughput with 1, 2 and 3 replicas in rotation, then a replica stopped with SIGTERM in
the middle of a run.

Load: `--clients` closed-loop clients, each sending streamed `/v1/completions` (greedy,
`ignore_eos`, `--max-tokens` tokens, a ~`--prompt-tokens` prompt of its own, cut from the
corpus as bench/server/concurrency.py cuts them, so that no two requests share a prefix)
one after another until the phase's time is up; a request started in time runs to its
end. Throughput = completion tokens of every request / (last token - first send).

A phase with fewer replicas takes the others out of HAProxy's rotation through its admin
socket (`disable server`), so every phase goes through the same proxy.

The drain phase: all replicas in rotation; after a third of the phase, SIGTERM to one
replica (`--stop-pid`). A request counts as failed unless it got 200 and exactly
`--max-tokens` tokens with a `length` finish: then "no accepted request fails" means 0
failures. HAProxy sends a request refused by the draining replica (503) or arriving as it
closes to another replica (retry-on 503 / conn-failure, redispatch); its counters of
retries and redispatches are printed. Which replica served each request comes from the
X-Hearth-Replica header HAProxy adds.

Prints the figures, and writes them as JSON with --json.
"""

import argparse
import collections
import http.client
import json
import os
import random
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from concurrency import Prompts, completion, sse_events  # noqa: E402  (the same prompts as the concurrency bench)


class Admin:
    """HAProxy's runtime API on its admin socket."""

    def __init__(self, path):
        self.path = path

    def cmd(self, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        s.sendall(line.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        return out.decode()

    def rotation(self, servers, n):
        """The first n servers in rotation, the rest out."""
        for i, srv in enumerate(servers):
            self.cmd(f"{'enable' if i < n else 'disable'} server hearth/{srv}")

    def stats(self):
        """{server name: {column: value}} of the hearth backend."""
        lines = self.cmd("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = {}
        for line in lines[1:]:
            if not line:
                continue
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "hearth":
                rows[row["svname"]] = row
        return rows


class Result:
    __slots__ = ("t_send", "t_end", "status", "tokens", "finish", "replica", "error")

    def __init__(self):
        self.t_send = self.t_end = None
        self.status = None
        self.tokens = 0
        self.finish = None
        self.replica = None
        self.error = None


def stream(host, port, body):
    """One streamed completion through the proxy."""
    r = Result()
    conn = http.client.HTTPConnection(host, port, timeout=300)
    try:
        r.t_send = time.perf_counter()
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        r.status = resp.status
        r.replica = resp.getheader("X-Hearth-Replica")
        if resp.status != 200:
            r.error = f"HTTP {resp.status}: {resp.read()[:200].decode(errors='replace')}"
            return r
        for event in sse_events(resp):
            if "error" in event:
                r.error = f"error event: {json.dumps(event['error'])[:200]}"
                break
            for choice in event.get("choices") or []:
                if choice.get("finish_reason"):
                    r.finish = choice["finish_reason"]
            if isinstance(event.get("usage"), dict):
                r.tokens = event["usage"]["completion_tokens"]
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        r.error = f"{type(e).__name__}: {e}"
    finally:
        r.t_end = time.perf_counter()
        conn.close()
    return r


def phase(args, prompts, seconds, on_tick=None):
    """Closed-loop clients for `seconds`; returns every request's Result."""
    results, lock = [], threading.Lock()
    deadline = time.perf_counter() + seconds
    host, port = args.proxy.split(":")

    def client():
        while time.perf_counter() < deadline:
            with lock:
                body = completion(prompts.take(args.prompt_tokens), args.max_tokens)
            r = stream(host, int(port), body)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    if on_tick:
        on_tick(deadline)
    for t in threads:
        t.join()
    return results


def cpu_seconds(pids):
    """User + system CPU time of these processes so far (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def ok(r, max_tokens):
    return r.error is None and r.status == 200 and r.tokens == max_tokens and r.finish == "length"


def throughput(results, max_tokens):
    done = [r for r in results if ok(r, max_tokens)]
    if not done:
        return 0.0, 0.0
    wall = max(r.t_end for r in done) - min(r.t_send for r in done)
    return sum(r.tokens for r in done) / wall, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxy", required=True, help="HOST:PORT of HAProxy's frontend")
    ap.add_argument("--admin", required=True, help="HAProxy's admin socket")
    ap.add_argument("--servers", required=True, help="the backend's server names, comma-separated")
    ap.add_argument("--levels", default="1,2,3", help="replicas in rotation, one phase each")
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--drain-seconds", type=float, default=45)
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--stop-pid", type=int, help="the replica to SIGTERM in the drain phase")
    ap.add_argument("--stop-server", help="its name in the backend")
    ap.add_argument("--threads-per-replica", type=int, default=1)
    ap.add_argument("--pids", help="the replicas' process ids, comma-separated, in --servers order: "
                    "their CPU time gives tokens per CPU-second, a figure other work on the machine does not skew")
    ap.add_argument("--json")
    args = ap.parse_args()
    servers = args.servers.split(",")
    admin = Admin(args.admin)
    prompts = Prompts(random.randrange(10000))
    report = {"clients": args.clients, "max_tokens": args.max_tokens, "prompt_tokens": args.prompt_tokens,
              "cores": os.cpu_count(), "threads_per_replica": args.threads_per_replica, "levels": []}

    # Warm-up: every replica pages its model in and measures its step times once.
    admin.rotation(servers, len(servers))
    phase(argparse.Namespace(**{**vars(args), "clients": len(servers)}), prompts, 3)

    print(f"{args.clients} clients, {args.max_tokens} tokens each from ~{args.prompt_tokens}-token prompts, "
          f"{args.seconds:.0f} s per phase, replicas at -t {args.threads_per_replica} on {os.cpu_count()} cores")
    pids = [int(p) for p in args.pids.split(",")] if args.pids else []
    print(f"{'replicas':>8} {'requests':>8} {'failed':>6} {'tok/s':>8} {'vs 1':>6} {'cores':>6} "
          f"{'tok/CPU-s':>9} {'vs 1':>6}")
    base = base_cpu = None
    for n in [int(x) for x in args.levels.split(",")]:
        admin.rotation(servers, n)
        time.sleep(1.5)  # health checks see the change
        cpu0, t0 = cpu_seconds(pids), time.perf_counter()
        results = phase(args, prompts, args.seconds)
        cpu = cpu_seconds(pids) - cpu0
        elapsed = time.perf_counter() - t0
        tps, wall = throughput(results, args.max_tokens)
        failed = sum(not ok(r, args.max_tokens) for r in results)
        tokens = sum(r.tokens for r in results if ok(r, args.max_tokens))
        per_cpu = tokens / cpu if cpu else float("nan")
        base = base or tps
        base_cpu = base_cpu or per_cpu
        served = collections.Counter(r.replica for r in results)
        report["levels"].append({"replicas": n, "requests": len(results), "failed": failed, "tok_s": tps,
                                 "wall_s": wall, "served": dict(served), "replica_cpu_s": cpu,
                                 "cores_busy": cpu / elapsed, "tok_per_cpu_s": per_cpu})
        print(f"{n:>8} {len(results):>8} {failed:>6} {tps:>8.1f} {tps / base:>6.2f} {cpu / elapsed:>6.2f} "
              f"{per_cpu:>9.1f} {per_cpu / base_cpu:>6.2f}")
    if pids:
        print("(cores: the replicas' CPU time over the phase; tok/CPU-s: tokens per second of it, so 'vs 1'"
              " there is the per-core ratio, whatever else the machine runs)")

    if args.stop_pid:
        admin.rotation(servers, len(servers))
        time.sleep(1.5)
        before = admin.stats()
        stop = {}

        def sigterm_midway(deadline):
            time.sleep(args.drain_seconds / 3)
            stop["t"] = time.perf_counter()
            os.kill(args.stop_pid, 15)
            while os.path.exists(f"/proc/{args.stop_pid}") and time.perf_counter() < deadline + 60:
                try:  # a zombie (exited, not yet reaped by run.sh) counts as gone
                    if Path(f"/proc/{args.stop_pid}/stat").read_text().split()[2] == "Z":
                        break
                except OSError:
                    break
                time.sleep(0.05)
            stop["exited_after_s"] = time.perf_counter() - stop["t"]

        results = phase(args, prompts, args.drain_seconds, on_tick=sigterm_midway)
        after = admin.stats()
        failed = [r for r in results if not ok(r, args.max_tokens)]
        t = stop["t"]
        running_at_stop = [r for r in results if r.replica == args.stop_server and r.t_send < t < r.t_end]
        retries = sum(int(after[s].get("wretr") or 0) - int(before[s].get("wretr") or 0) for s in servers)
        redispatches = sum(int(after[s].get("wredis") or 0) - int(before[s].get("wredis") or 0) for s in servers)
        served_after = collections.Counter(r.replica for r in results if r.t_send > t)
        tps, _ = throughput(results, args.max_tokens)
        drain = {"requests": len(results), "failed": len(failed), "errors": [r.error for r in failed][:5],
                 "running_on_stopped_at_sigterm": len(running_at_stop),
                 "of_those_completed": sum(ok(r, args.max_tokens) for r in running_at_stop),
                 "stopped_replica_exit_after_s": stop.get("exited_after_s"),
                 "haproxy_retries": retries, "haproxy_redispatches": redispatches,
                 "served_after_sigterm": dict(served_after), "tok_s": tps}
        report["drain"] = drain
        print(f"\ndrain: SIGTERM to {args.stop_server} (pid {args.stop_pid}) {args.drain_seconds / 3:.0f} s into a "
              f"{args.drain_seconds:.0f} s run of {args.clients} clients")
        print(f"  requests {len(results)}, failed {len(failed)}"
              + (f" ({'; '.join(drain['errors'])})" if failed else ""))
        print(f"  streams running on {args.stop_server} at SIGTERM: {len(running_at_stop)}, completed whole: "
              f"{drain['of_those_completed']}; it exited {drain['stopped_replica_exit_after_s']:.1f} s after SIGTERM")
        print(f"  HAProxy: {retries} retries, {redispatches} redispatches; requests sent after SIGTERM served by "
              f"{dict(sorted(served_after.items(), key=lambda kv: str(kv[0])))}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if report.get("drain", {}).get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
