#!/usr/bin/env bash
# `hearth serve` against llama.cpp's own `llama-server` under concurrent streams: starts
# each server in turn (never both at once) on a free loopback port with the same model,
# threads, slots and context, runs concurrency.py against it (aggregate tok/s, TTFT and
# inter-token latency at 1, 2, 4, 8 clients; prefill interference; prefix reuse), stops
# it, and prints the two side by side with the ratio Hearth / llama.cpp.
#
#   bench/server/run.sh [-m MODEL] [-t THREADS] [-p PARALLEL] [-c CTX] [-v native|avx2]
#                       [-r ROUNDS] [-- CONCURRENCY.PY OPTIONS...]
#
#   -m  GGUF model (default: Gemma 3 270M Q4_K_M from scripts/fetch-model.sh)
#   -t  compute threads of both servers (default 2)
#   -p  parallel sequences / slots (default 4)
#   -c  context size in tokens (default 8192). llama-server splits -c evenly over its slots
#       (8192 / 4 = 2048 tokens per sequence); the prefix scenario needs about 1700.
#   -v  llama-server build (bench/server/build-llama-server.sh): native (-march=native) or
#       avx2 (no AVX-512; Hearth then runs with HEARTH_CPU=avx2 to match). Default native.
#   -r  rounds (default 1); the order flips each round (Hearth first in odd rounds) so
#       drift in the machine's load falls on both; the table shows medians over rounds.
# Everything after `--` goes to concurrency.py (e.g. `-- --levels 1,4 --skip-prefix`).
#
# The servers run as:
#   hearth serve MODEL --host 127.0.0.1 --port P -t T --parallel N --ctx C
#       (--parallel only if this binary has it; without it Hearth serves one request at
#       a time and the table shows it)
#   llama-server -m MODEL --host 127.0.0.1 --port P -t T -tb T --parallel N -c C
#       --no-webui -fa on
#       (-fa takes on|off|auto in this llama.cpp; flash attention on, as Hearth's attention
#       is flash-style; continuous batching and the prompt cache are on by default.)
# llama.cpp runs with OMP_WAIT_POLICY as the caller set it (see bench/compare/run.sh: on a
# machine busy with other work, OMP_WAIT_POLICY=passive keeps idle OpenMP threads from
# spinning on the cores the servers need).
#
# Environment: HEARTH (binary; default target/release/hearth, built if missing).
# Raw JSON results and server logs stay in a temporary directory, printed at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$root/scripts/python-env.sh"

model="" threads=2 parallel=4 ctx=8192 variant=native rounds=1
while [ $# -gt 0 ]; do
    case "$1" in
        -m) model="$2"; shift 2 ;;
        -t) threads="$2"; shift 2 ;;
        -p) parallel="$2"; shift 2 ;;
        -c) ctx="$2"; shift 2 ;;
        -v) variant="$2"; shift 2 ;;
        -r) rounds="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
extra=("$@")
[ -n "$model" ] || model="$("$root/scripts/fetch-model.sh")"
case "$variant" in
    native) hearth_env=() ;;
    avx2) hearth_env=(HEARTH_CPU=avx2) ;;
    *) echo "run.sh: -v takes native or avx2" >&2; exit 2 ;;
esac

hearth="${HEARTH:-$root/target/release/hearth}"
if [ ! -x "$hearth" ]; then
    echo "run.sh: building hearth (release)" >&2
    (cd "$root" && cargo build --quiet --release --bin hearth)
fi
llama_server="$("$here/build-llama-server.sh" "$variant")"

hearth_args=(serve "$model" --host 127.0.0.1 -t "$threads" --ctx "$ctx")
if "$hearth" serve --help | grep -q -- '--parallel'; then
    hearth_args+=(--parallel "$parallel")
else
    echo "run.sh: this hearth has no --parallel; it serves one request at a time" >&2
fi
llama_args=(-m "$model" --host 127.0.0.1 -t "$threads" -tb "$threads" --parallel "$parallel"
            -c "$ctx" --no-webui -fa on)

out="$(mktemp -d "${TMPDIR:-/tmp}/hearth-server-bench.XXXXXX")"
pid=""
stop_server() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
trap 'stop_server; echo "raw results and logs: $out" >&2' EXIT

free_port() {
    "$HEARTH_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits for GET /health to answer 200 (both servers answer 503 or nothing while loading).
wait_ready() { # URL LOG
    for _ in $(seq 1 480); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "run.sh: the server exited; its log:" >&2
            cat "$2" >&2
            return 1
        fi
        if "$HEARTH_PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=2)' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.25
    done
    echo "run.sh: the server did not come up in 120 s; its log: $2" >&2
    return 1
}

bench() { # NAME ROUND
    local name="$1" round="$2" port log
    port="$(free_port)"
    log="$out/$name-$round.log"
    if [ "$name" = hearth ]; then
        env "${hearth_env[@]}" "$hearth" "${hearth_args[@]}" --port "$port" >"$log" 2>&1 &
    else
        "$llama_server" "${llama_args[@]}" --port "$port" >"$log" 2>&1 &
    fi
    pid=$!
    wait_ready "http://127.0.0.1:$port" "$log"
    echo "run.sh: round $round/$rounds, $name on :$port" >&2
    "$HEARTH_PYTHON" "$here/concurrency.py" --url "http://127.0.0.1:$port" --name "$name" \
        --json "$out/$name-$round.json" "${extra[@]}"
    stop_server
}

echo "run.sh: model $model, $threads threads, $parallel slots, ctx $ctx, llama-server $variant" \
     "($llama_server), OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}" >&2
echo "run.sh: hearth ${hearth_env[*]} $hearth ${hearth_args[*]}" >&2
echo "run.sh: llama.cpp $llama_server ${llama_args[*]}" >&2
for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then bench hearth "$r"; bench llama.cpp "$r"
    else bench llama.cpp "$r"; bench hearth "$r"; fi
done

echo
"$HEARTH_PYTHON" "$here/concurrency.py" --compare "$out" --numerator hearth --denominator llama.cpp
