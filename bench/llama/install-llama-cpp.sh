#!/usr/bin/env bash
# Installs llama-cpp-python 0.3.36 (the llama.cpp version the rest of the repo pins),
# compiled from source on this machine, into its own virtual environment, and prints that
# environment's python. An environment already holding it is reused.
#
#   bench/llama/install-llama-cpp.sh [native|avx2]      (default: native)
#
# Variants (the same cmake flags as bench/server/build-llama-server.sh):
#   native  GGML_NATIVE=ON: -march=native, every ISA extension of this CPU.
#   avx2    GGML_NATIVE=OFF, AVX2/FMA/F16C/BMI2 on, every AVX-512 and AVX-VNNI flag off:
#           llama.cpp at the level Hearth runs at with HEARTH_CPU=avx2, so that an
#           AVX-512 machine also measures the comparison most users' CPUs would see.
# Environments: ~/.cache/hearth/llama-py/<variant> (HEARTH_CACHE to move). Compiling
# takes 5-10 minutes on a 2-core VM. bench/compare/run.sh --level calls this itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$root/scripts/python-env.sh"

variant="${1:-native}"
version=0.3.36
sdist_sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
case "$variant" in
    native) cmake_args="-DGGML_NATIVE=ON" ;;
    avx2) cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF" ;;
    *) echo "install-llama-cpp: unknown variant '$variant' (native or avx2)" >&2; exit 2 ;;
esac

venv="$HEARTH_CACHE/llama-py/$variant"
if "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null \
    && [ "$(cat "$venv/.cmake-args" 2>/dev/null)" = "$cmake_args" ]; then
    echo "$venv/bin/python"
    exit 0
fi

# The sdist, in the same place the other llama.cpp scripts keep it.
src="$HEARTH_CACHE/src"
sdist="$src/llama_cpp_python-$version.tar.gz"
mkdir -p "$src"
if ! echo "$sdist_sha256  $sdist" | sha256sum --check --status 2>/dev/null; then
    "$HEARTH_PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$src" >&2
    echo "$sdist_sha256  $sdist" | sha256sum --check --status || {
        echo "install-llama-cpp: $sdist does not have the expected sha256" >&2
        exit 1
    }
fi

echo "install-llama-cpp: compiling llama.cpp ($variant) into $venv (5-10 minutes)" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy >&2
CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-2}" \
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    "$sdist" >&2
echo "$cmake_args" > "$venv/.cmake-args"
echo "$venv/bin/python"
