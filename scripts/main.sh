#!/usr/bin/env bash
# The main job: fetch the default model, build Hearth, and run it on the model.
# Until generation lands this shows the model with `hearth inspect`.
set -euo pipefail
cd "$(dirname "$0")/.."
model="$(scripts/fetch-model.sh)"
cargo build --release --quiet --bin hearth
exec target/release/hearth inspect "$model" "$@"
