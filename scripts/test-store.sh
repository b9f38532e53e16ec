#!/usr/bin/env bash
# The model store's tests: `hearth pull` (resume after a cut, a wrong hash refused,
# ORG/REPO:QUANT, split models merged, HF_TOKEN kept to the hub), `hearth list`, running a
# stored model by name, and `hearth rm`, against a stand-in hub on loopback
# (tests/store/hub.py, serving the default model). Needs the built binary: CI builds it
# first; HEARTH_BIN overrides its path (default: target/release/hearth).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-lib.sh
model="$(scripts/fetch-model.sh)"
HEARTH_BIN="$bin" HEARTH_MODEL="$model" "$HEARTH_PYTHON" tests/store/test_pull.py -v
