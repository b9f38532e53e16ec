#!/usr/bin/env bash
# `hearth chat` on a real terminal: tests/chat/test_chat.py types into it through tmux
# (installed from Debian's packages when missing). CI builds the binary first;
# HEARTH_BIN overrides its path (default: target/release/hearth).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-lib.sh
model="$(scripts/fetch-model.sh)"
need tmux tmux
"$HEARTH_PYTHON" tests/chat/test_chat.py "$bin" "$model"
