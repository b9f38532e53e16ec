#!/usr/bin/env bash
# Starts `hearth serve` and llama-cpp-python's server on free loopback ports with the same
# model, thread count and context size, runs ttft.py against both (alternating), stops them.
#
# Usage: bench/server/ttft.sh [MODEL]
# Environment: HEARTH (binary; default target/release/hearth), THREADS (2), CTX (2048),
#              REPS (7), MAX_TOKENS (128), PYTHON (python3), OUT (JSON samples file; optional).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
model=${1:-$HOME/.cache/hearth/models/gemma-3-270m-q4_k_m.gguf}
hearth=${HEARTH:-$repo/target/release/hearth}
threads=${THREADS:-2}
ctx=${CTX:-2048}
reps=${REPS:-7}
max_tokens=${MAX_TOKENS:-128}
py=${PYTHON:-python3}
logs=$(mktemp -d)

free_port() {
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # URL PID NAME
    for _ in $(seq 1 240); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "$3 exited; its log:" >&2
            cat "$logs/$3.log" >&2
            return 1
        fi
        if "$py" -c 'import sys, requests; requests.get(sys.argv[1] + "/v1/models", timeout=2).raise_for_status()' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    echo "$3 did not come up in 120 s" >&2
    return 1
}

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    echo "server logs: $logs" >&2
}
trap cleanup EXIT

hport=$(free_port)
"$hearth" serve "$model" --host 127.0.0.1 --port "$hport" -t "$threads" --ctx "$ctx" \
    >"$logs/hearth.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$hport" "${pids[-1]}" hearth

lport=$(free_port)
"$py" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$lport" \
    --n_threads "$threads" --n_threads_batch "$threads" --n_ctx "$ctx" \
    >"$logs/llama.cpp.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$lport" "${pids[-1]}" llama.cpp

echo "hearth on :$hport, llama.cpp (llama-cpp-python $("$py" -c 'import llama_cpp; print(llama_cpp.__version__)')) on :$lport;" \
    "threads $threads, ctx $ctx" >&2
"$py" "$here/ttft.py" --reps "$reps" --max-tokens "$max_tokens" ${OUT:+--json "$OUT"} \
    --server "hearth=http://127.0.0.1:$hport" --server "llama.cpp=http://127.0.0.1:$lport"
