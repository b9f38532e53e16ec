#!/usr/bin/env bash
# Starts `hearth serve` with the default model on a free loopback port and runs the
# OpenAI-client tests (tests/server/test_openai.py) against it. CI builds the binary
# first; HEARTH_BIN overrides its path (default: target/release/hearth).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python-env.sh
model="$(scripts/fetch-model.sh)"
bin="${HEARTH_BIN:-target/release/hearth}"
if [ ! -x "$bin" ]; then
    echo "hearth: $bin is missing; build it with cargo build --release --bin hearth" >&2
    exit 1
fi

port="$("$HEARTH_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
key="test-key-$RANDOM$RANDOM"
log="$(mktemp)"
# The key goes through the environment (HEARTH_API_KEY), as a user would keep it out of `ps`.
HEARTH_API_KEY="$key" "$bin" serve "$model" --port "$port" --ctx 1024 -t 2 >"$log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT

HEARTH_SERVER_URL="http://127.0.0.1:$port" HEARTH_TEST_API_KEY="$key" HEARTH_SERVER_PID="$pid" \
    "$HEARTH_PYTHON" tests/server/test_openai.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
