#!/usr/bin/env bash
# Builds llama.cpp's own C++ HTTP server, `llama-server`, from the llama.cpp tree that the
# llama-cpp-python 0.3.36 sdist vendors (the version the rest of the repo pins, so the
# server runs the same ggml kernels as our fidelity and kernel comparisons), and prints the
# binary's path. A binary already in the cache is reused; delete its folder to rebuild.
#
#   bench/server/build-llama-server.sh [native|avx2]      (default: native)
#
# Variants (both Release, static libraries, OpenMP on as llama.cpp's default):
#   native  GGML_NATIVE=ON: -march=native, every ISA extension of this CPU (AVX-512 here).
#   avx2    GGML_NATIVE=OFF, GGML_AVX2/FMA/F16C=ON, AVX-512 off: the level Hearth runs at
#           with HEARTH_CPU=avx2, for a comparison at equal instruction sets.
# Only the `llama-server` target is built, without libcurl (LLAMA_CURL=OFF; deprecated and
# ignored by this llama.cpp, which has no curl dependency left), OpenSSL or the web UI (the
# prebuilt UI would be downloaded at build time), with 2 jobs (JOBS=N to change). About
# 10 minutes on a 2-core VM.
#
# Output: ~/.cache/hearth/llama-server/<variant>/llama-server (with build-flags.txt beside
# it). Needs a C++ compiler; cmake and ninja come from PyPI into a small tool venv under
# ~/.cache/hearth/llama-server/tools when the machine has no cmake.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$root/scripts/python-env.sh"
. "$root/bench/llama/llama-cpp-source.sh"

variant="${1:-native}"
version="$LLAMA_CPP_VERSION"
jobs="${JOBS:-2}"

llama_cpp_isa_flags "$variant" >/dev/null || exit 2
mapfile -t isa_flags < <(llama_cpp_isa_flags "$variant")

out="$HEARTH_CACHE/llama-server/$variant"
if [ -x "$out/llama-server" ]; then
    echo "$out/llama-server"
    exit 0
fi

sdist="$(llama_cpp_sdist)"

# cmake (and ninja, which only saves a little) from PyPI when the machine lacks them.
tools="$HEARTH_CACHE/llama-server/tools"
cmake=cmake
if ! command -v cmake >/dev/null; then
    if [ ! -x "$tools/bin/cmake" ]; then
        echo "build-llama-server: installing cmake and ninja into $tools" >&2
        python3 -m venv "$tools"
        "$tools/bin/python" -m pip install --quiet --disable-pip-version-check cmake ninja
    fi
    cmake="$tools/bin/cmake"
    export PATH="$tools/bin:$PATH"
fi
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

work="$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "build-llama-server: unpacking llama.cpp from $sdist" >&2
tar -xzf "$sdist" -C "$work" "llama_cpp_python-$version/vendor/llama.cpp"
tree="$work/llama_cpp_python-$version/vendor/llama.cpp"

flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
       -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
       -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
       "${isa_flags[@]}")
echo "build-llama-server: configuring ($variant): ${flags[*]}" >&2
"$cmake" -S "$tree" -B "$work/build" "${generator[@]}" "${flags[@]}" >"$work/configure.log" 2>&1 || {
    tail -40 "$work/configure.log" >&2
    exit 1
}
echo "build-llama-server: building llama-server with $jobs jobs (several minutes)" >&2
"$cmake" --build "$work/build" --target llama-server -j "$jobs" >"$work/build.log" 2>&1 || {
    tail -40 "$work/build.log" >&2
    exit 1
}

mkdir -p "$out"
cp "$work/build/bin/llama-server" "$out/llama-server.tmp"
{
    echo "llama.cpp from llama-cpp-python $version ($(sha256sum "$sdist" | cut -d' ' -f1))"
    echo "cmake flags: ${flags[*]}"
    # The compiler flags ggml's CPU backend got (-march=native for the native variant).
    grep 'Adding CPU backend variant' "$work/configure.log" || true
    "$cmake" -LA -N "$work/build" 2>/dev/null | grep -E '^GGML_(NATIVE|OPENMP)[:=]' || true
} > "$out/build-flags.txt"
mv "$out/llama-server.tmp" "$out/llama-server"
echo "$out/llama-server"
