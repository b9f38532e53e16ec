#!/usr/bin/env bash
# The main job: fetch the default model (Gemma 3 270M), build Hearth, and let the model
# answer. A model whose file has a chat template gets the prompt (first argument, or a
# default one) as a user message; a base model, like the default one, is not tuned to
# follow instructions and continues the prompt as text instead, sampled as llama.cpp's
# examples do for base models, until its first paragraph ends or 200 tokens. Further
# arguments go to `hearth run` (e.g. -n 400, --temp 0); HEARTH_MODEL names another model
# (a file, or a name from `hearth list`).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${HEARTH_MODEL:-$(scripts/fetch-model.sh)}"
cargo build --release --quiet --bin hearth
bin=target/release/hearth
prompt="${1:-}"
shift || true
if "$bin" inspect "$model" | grep -q '^  tokenizer\.chat_template '; then
    args=(--chat -p "${prompt:-Tell me about the city of Paris.}" -n 400)
else
    echo "hearth: $(basename "$model") is a base model (no chat template): it continues the text" >&2
    args=(-p "${prompt:-Paris, the capital of France, is}" -n 200 --stop $'\n\n'
        --temp 0.7 --top-p 0.9 --repeat-penalty 1.1)
fi
# The caller's own -n replaces ours.
for arg in "$@"; do
    case "$arg" in -n | --n-predict | --n-predict=* | -n[0-9-]*)
        for i in "${!args[@]}"; do
            if [ "${args[$i]:-}" = -n ]; then unset 'args[i]' 'args[i+1]'; fi
        done ;;
    esac
done
exec "$bin" run "$model" "${args[@]}" "$@"
