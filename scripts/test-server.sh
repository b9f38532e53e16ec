#!/usr/bin/env bash
# Starts `hearth serve` with the default model on a free loopback port (4 sequences at
# once) and runs the OpenAI-client tests (tests/server/test_metrics.py first, on the idle
# server, then test_openai.py, test_concurrency.py, test_batching.py, test_logprobs.py and
# test_structured.py, test_exposure.py, test_hostile.py, test_tools.py and a short soak, tests/server/soak.py) against it;
# then serves a tiny random-weight model with DeepSeek-R1-Distill-Qwen's tokenizer and chat
# template and runs tests/server/test_reasoning.py (its vocab file comes from
# tests/fixtures/tokenizer/fetch-vocabs.sh, which CI runs first). CI builds the binary
# first; HEARTH_BIN overrides its path (default: target/release/hearth).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-lib.sh
model="$(scripts/fetch-model.sh)"

port="$(free_port)"
key="test-key-$RANDOM$RANDOM"
log="$(mktemp)"
r1_log="$(mktemp)"
r1_dir="$(mktemp -d)"
r1_pid=""
# The key goes through the environment (HEARTH_API_KEY), as a user would keep it out of `ps`.
HEARTH_API_KEY="$key" "$bin" serve "$model" --port "$port" --ctx 4096 --parallel 4 -t 2 >"$log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ -n "$r1_pid" ]; then
        kill "$r1_pid" 2>/dev/null || true
        wait "$r1_pid" 2>/dev/null || true
    fi
    rm -f "$log" "$r1_log"
    rm -rf "$r1_dir"
}
trap cleanup EXIT

export HEARTH_SERVER_URL="http://127.0.0.1:$port" HEARTH_TEST_API_KEY="$key" HEARTH_SERVER_PID="$pid"
# The metrics test needs the server to itself: it runs first, once the model is loaded.
"$HEARTH_PYTHON" -c 'import sys; sys.path.insert(0, "tests/server"); import test_openai; test_openai.wait_ready()'
"$HEARTH_PYTHON" tests/server/test_metrics.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
"$HEARTH_PYTHON" tests/server/test_openai.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
"$HEARTH_PYTHON" tests/server/test_batching.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
HEARTH_SERVER_URL="http://127.0.0.1:$port" HEARTH_TEST_API_KEY="$key" \
    "$HEARTH_PYTHON" tests/server/test_concurrency.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
HEARTH_SERVER_URL="http://127.0.0.1:$port" HEARTH_TEST_API_KEY="$key" \
    "$HEARTH_PYTHON" tests/server/test_logprobs.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
"$HEARTH_PYTHON" tests/server/test_structured.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
"$HEARTH_PYTHON" tests/server/test_exposure.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
"$HEARTH_PYTHON" tests/server/test_hostile.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
"$HEARTH_PYTHON" tests/server/test_tools.py -v || { echo "--- server log:"; cat "$log"; exit 1; }
# A short soak (the full one, 16 clients, 200 requests, 5 minutes, is the script's default).
"$HEARTH_PYTHON" tests/server/soak.py --clients 8 --requests 40 --min-seconds 20 \
    || { echo "--- server log:"; tail -50 "$log"; exit 1; }

# The reasoning split, with DeepSeek-R1-Distill-Qwen's tokenizer and chat template.
r1_vocab="$HEARTH_CACHE/vocab/deepseek-r1-distill-qwen-7b.vocab.gguf"
if [ ! -f "$r1_vocab" ]; then
    echo "hearth: $r1_vocab is missing; run tests/fixtures/tokenizer/fetch-vocabs.sh" >&2
    exit 1
fi
# The file stem is the model id the tests ask for. Once with the distills' architecture
# (qwen2), once with R1's own (deepseek2: latent attention and experts).
for arch in qwen2 deepseek2; do
    mkdir -p "$r1_dir/$arch"
    "$HEARTH_PYTHON" tests/server/test_reasoning.py --make-model "$r1_vocab" "$r1_dir/$arch/tiny-r1.gguf" "$arch"
    r1_port="$(free_port)"
    HEARTH_API_KEY="$key" "$bin" serve "$r1_dir/$arch/tiny-r1.gguf" --port "$r1_port" --ctx 1024 -t 2 >"$r1_log" 2>&1 &
    r1_pid=$!
    echo "hearth: the reasoning split with a tiny $arch model"
    HEARTH_R1_URL="http://127.0.0.1:$r1_port" HEARTH_TEST_API_KEY="$key" HEARTH_R1_VOCAB="$r1_vocab" \
        "$HEARTH_PYTHON" tests/server/test_reasoning.py -v || { echo "--- server log:"; cat "$r1_log"; exit 1; }
    kill "$r1_pid" 2>/dev/null || true
    wait "$r1_pid" 2>/dev/null || true
    r1_pid=""
done
# Tool calls in the Hermes format: the same vocabulary under Qwen2.5-Instruct's template.
mkdir -p "$r1_dir/hermes"
"$HEARTH_PYTHON" tests/server/test_reasoning.py --make-model "$r1_vocab" "$r1_dir/hermes/tiny-hermes.gguf" \
    qwen2 tests/fixtures/templates/qwen2.5-instruct.jinja
r1_port="$(free_port)"
HEARTH_API_KEY="$key" "$bin" serve "$r1_dir/hermes/tiny-hermes.gguf" --port "$r1_port" --ctx 1024 -t 2 >"$r1_log" 2>&1 &
r1_pid=$!
echo "hearth: Hermes tool calls with a tiny qwen2 model"
HEARTH_HERMES_URL="http://127.0.0.1:$r1_port" HEARTH_TEST_API_KEY="$key" \
    "$HEARTH_PYTHON" tests/server/test_tools_hermes.py -v || { echo "--- server log:"; cat "$r1_log"; exit 1; }
kill "$r1_pid" 2>/dev/null || true
wait "$r1_pid" 2>/dev/null || true
r1_pid=""
# --sealed: the default model served under seccomp and Landlock.
sealed_log="$(mktemp)"
sealed_port="$(free_port)"
HEARTH_API_KEY="$key" "$bin" serve "$model" --port "$sealed_port" --ctx 1024 -t 2 --sealed >"$sealed_log" 2>&1 &
r1_pid=$!
"$HEARTH_PYTHON" -c "import sys; sys.path.insert(0, 'tests/server'); import ready; ready.wait_ready('http://127.0.0.1:$sealed_port')"
echo "hearth: a sealed server"
HEARTH_SEALED_URL="http://127.0.0.1:$sealed_port" HEARTH_SEALED_PID="$r1_pid" HEARTH_SEALED_LOG="$sealed_log" \
    HEARTH_TEST_API_KEY="$key" "$HEARTH_PYTHON" tests/server/test_sealed.py -v \
    || { echo "--- server log:"; cat "$sealed_log"; exit 1; }
kill "$r1_pid" 2>/dev/null || true
wait "$r1_pid" 2>/dev/null || true
r1_pid=""
rm -f "$sealed_log"
# Named keys with quotas and the usage log (served sealed, so the log's directory is the
# one place it may write).
keys_dir="$(mktemp -d)"
"$HEARTH_PYTHON" tests/server/test_keys.py --make-keys "$keys_dir/keys.toml"
keys_port="$(free_port)"
"$bin" serve "$model" --port "$keys_port" --ctx 2048 -t 2 --sealed --keys "$keys_dir/keys.toml" \
    --usage-log "$keys_dir/log" >"$keys_dir/serve.log" 2>&1 &
r1_pid=$!
echo "hearth: keys, quotas and the usage log"
HEARTH_KEYS_URL="http://127.0.0.1:$keys_port" HEARTH_USAGE_DIR="$keys_dir/log" HEARTH_BIN="$bin" \
    "$HEARTH_PYTHON" tests/server/test_keys.py -v || { echo "--- server log:"; cat "$keys_dir/serve.log"; exit 1; }
kill "$r1_pid" 2>/dev/null || true
wait "$r1_pid" 2>/dev/null || true
r1_pid=""
rm -rf "$keys_dir"
# SIGTERM drains: not-ready, new requests 503, the running stream finishes, exit 0.
echo "hearth: graceful drain on SIGTERM"
HEARTH_BIN="$bin" HEARTH_MODEL="$model" "$HEARTH_PYTHON" tests/server/test_drain.py -v
