#!/usr/bin/env bash
# `hearth chat` on a real terminal: tests/chat/test_chat.py types into it through tmux
# (installed from Debian's packages when missing). CI builds the binary first;
# HEARTH_BIN overrides its path (default: target/release/hearth).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python-env.sh
model="$(scripts/fetch-model.sh)"
bin="${HEARTH_BIN:-target/release/hearth}"
if [ ! -x "$bin" ]; then
    echo "hearth: $bin is missing; build it with cargo build --release --bin hearth" >&2
    exit 1
fi
if ! command -v tmux >/dev/null; then
    echo "hearth: installing tmux" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq tmux >/dev/null
fi
"$HEARTH_PYTHON" tests/chat/test_chat.py "$bin" "$model"
