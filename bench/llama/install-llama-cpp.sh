#!/usr/bin/env bash
# Installs llama-cpp-python 0.3.36 (the llama.cpp version the rest of the repo pins),
# compiled from source on this machine, into its own virtual environment, and prints that
# environment's python. An environment already holding it is reused.
#
#   bench/llama/install-llama-cpp.sh [native|avx2]      (default: native)
#
# Variants (bench/llama/llama-cpp-source.sh, the same as bench/server/build-llama-server.sh's):
#   native  GGML_NATIVE=ON: -march=native, every ISA extension of this CPU.
#   avx2    GGML_NATIVE=OFF, AVX2/FMA/F16C/BMI2 on, every AVX-512 and AVX-VNNI flag off:
#           llama.cpp at the level Hearth runs at with HEARTH_CPU=avx2, so that an
#           AVX-512 machine also measures the comparison most users' CPUs would see.
# Environments: ~/.cache/hearth/llama-py/<variant> (HEARTH_CACHE to move). Compiling
# takes 5-10 minutes on a 2-core VM. bench/compare/run.sh (-l) calls this itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$root/scripts/python-env.sh"
. "$here/llama-cpp-source.sh"

variant="${1:-native}"
llama_cpp_isa_flags "$variant" >/dev/null || exit 2
cmake_args="$(llama_cpp_isa_flags "$variant" | tr '\n' ' ' | sed 's/ $//')"

venv="$HEARTH_CACHE/llama-py/$variant"
if "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null \
    && [ "$(cat "$venv/.cmake-args" 2>/dev/null)" = "$cmake_args" ]; then
    echo "$venv/bin/python"
    exit 0
fi

sdist="$(llama_cpp_sdist)"

echo "install-llama-cpp: compiling llama.cpp ($variant) into $venv (5-10 minutes)" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy >&2
CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-2}" \
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    "$sdist" >&2
echo "$cmake_args" > "$venv/.cmake-args"
echo "$venv/bin/python"
