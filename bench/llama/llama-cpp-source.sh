# Sourced by the scripts that build llama.cpp (bench/llama/install-llama-cpp.sh,
# bench/server/build-llama-server.sh), after scripts/python-env.sh: the one pinned
# llama-cpp-python sdist and the cmake flags of each instruction-set variant.

LLAMA_CPP_VERSION=0.3.36
LLAMA_CPP_SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

# Prints the sdist's path, downloading it into $HEARTH_CACHE/src (where
# tests/fixtures/tokenizer/fetch-vocabs.sh keeps it too) when absent; fails on a wrong hash.
llama_cpp_sdist() {
    local src="$HEARTH_CACHE/src"
    local sdist="$src/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz"
    mkdir -p "$src"
    if ! echo "$LLAMA_CPP_SDIST_SHA256  $sdist" | sha256sum --check --status 2>/dev/null; then
        "$HEARTH_PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
            --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$src" >&2
        echo "$LLAMA_CPP_SDIST_SHA256  $sdist" | sha256sum --check --status || {
            echo "$sdist does not have the expected sha256" >&2
            return 1
        }
    fi
    echo "$sdist"
}

# Prints the cmake flags of a variant, one per line: native (GGML_NATIVE, -march=native)
# or avx2 (AVX2/FMA/F16C/BMI2, every AVX-512 and AVX-VNNI flag off: the level Hearth runs
# at with HEARTH_CPU=avx2). Fails on another name.
llama_cpp_isa_flags() {
    case "$1" in
        native) printf '%s\n' -DGGML_NATIVE=ON ;;
        avx2) printf '%s\n' -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
                  -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF \
                  -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF ;;
        *) echo "unknown variant '$1' (native or avx2)" >&2; return 2 ;;
    esac
}
