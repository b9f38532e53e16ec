#!/usr/bin/env bash
# The chat page of `hearth serve` in headless Chromium (tests/web/test_page.mjs, driven by
# puppeteer-core): served with an API key (HEARTH_API_KEY), the default model answering.
# Installs Debian's chromium if it is missing and the pinned puppeteer-core (npm ci, cached
# under ~/.cache/hearth/npm). CI builds the binary first; HEARTH_BIN overrides its path
# (default: target/release/hearth). The page's screenshot goes to HEARTH_WEB_SCREENSHOT
# (default: target/web-page.png).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-lib.sh
need chromium chromium
(cd tests/web && npm ci --cache "$HEARTH_CACHE/npm" --no-audit --no-fund --loglevel=error)
model="$(scripts/fetch-model.sh)"

work="$(mktemp -d)"
screenshot="${HEARTH_WEB_SCREENSHOT:-target/web-page.png}"
port="$(free_port)"
key="test-key-$RANDOM$RANDOM"
HEARTH_API_KEY="$key" "$bin" serve "$model" --port "$port" --ctx 4096 --parallel 2 -t 2 >"$work/serve.log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
"$HEARTH_PYTHON" -c "import sys; sys.path.insert(0, 'tests/server'); import ready; ready.wait_ready('http://127.0.0.1:$port')"
# The start-up lines name the page and a request to paste.
grep -q "chat in your browser at http://127.0.0.1:$port/" "$work/serve.log" \
    || { echo "hearth: the page's address is not in the start-up lines:"; cat "$work/serve.log"; exit 1; }
node tests/web/test_page.mjs --url "http://127.0.0.1:$port" --key "$key" --screenshot "$screenshot" \
    --chromium "$(command -v chromium)" || { echo "--- server log:"; cat "$work/serve.log"; exit 1; }
echo "hearth: screenshot at $screenshot"
