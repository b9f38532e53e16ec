#!/usr/bin/env bash
# The main job: fetch the default model (Gemma 3 270M), build Hearth, and chat with it:
# the prompt (first argument, or a default one) goes through the model's chat template
# and the answer streams to stdout. Further arguments go to `hearth run` (e.g. -n 200).
# The default model is a base model that seldom ends its turn, so the answer stops after
# 256 tokens (a few seconds) unless the arguments say otherwise with -n.
set -euo pipefail
cd "$(dirname "$0")/.."
model="$(scripts/fetch-model.sh)"
cargo build --release --quiet --bin hearth
prompt="${1:-Tell me about the city of Paris.}"
shift || true
limit=(-n 256)
for arg in "$@"; do
    case "$arg" in -n | --n-predict | --n-predict=* | -n[0-9-]*) limit=() ;; esac
done
exec target/release/hearth run "$model" --chat -p "$prompt" ${limit[@]+"${limit[@]}"} "$@"
