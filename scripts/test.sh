#!/usr/bin/env bash
# Every check CI runs, from a fresh machine: reference Python packages, the default model,
# the tokenizer vocabularies, formatting and lints, the test suite (release build, built
# once), the comparison with the `gguf` package, fidelity against llama.cpp's fixtures, the server with the openai
# client, and the aarch64 build and tests under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python-env.sh
model="$(scripts/fetch-model.sh)"
# Tokenizer test vocabularies (llama.cpp's, Gemma's, DeepSeek-R1-Distill-Qwen's); with
# the variable set, a missing vocabulary fails its test instead of skipping it.
HEARTH_VOCAB_DIR="$(tests/fixtures/tokenizer/fetch-vocabs.sh)"
export HEARTH_VOCAB_DIR

step() { echo; echo "==> $*"; }

# A full build and test run needs about 4 GB under target/ (a CI run once failed for want
# of disk): say what there is, so that a failure of that kind reads as one.
df -h . | awk 'NR == 2 { print "hearth: disk: " $4 " free of " $2 }'

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings

step "cargo deny: licenses, sources and bans (the advisories check needs the network)"
deny_root="$HEARTH_CACHE/tools"
if [ ! -x "$deny_root/bin/cargo-deny" ]; then
    cargo install --quiet --locked --root "$deny_root" cargo-deny --version 0.20.2
fi
"$deny_root/bin/cargo-deny" check licenses sources bans

step "cargo test (every CPU level this machine has is tested inside the suite)"
cargo test --workspace --release

for level in scalar avx2; do
    step "kernel tests with the process-wide level forced (HEARTH_CPU=$level)"
    HEARTH_CPU=$level cargo test -p hearth-kernels --release
done

# `cargo test` above built target/release/hearth for the CLI's integration tests; the steps
# below use that binary rather than building it again with other feature unification.
step "hearth inspect agrees with the gguf package on the real model"
"$HEARTH_PYTHON" tests/inspect_vs_gguf.py target/release/hearth "$model"

step "fidelity on Gemma 3 270M: teacher-forced distributions and greedy text vs llama.cpp"
fidelity="$(mktemp -d)"
trap 'rm -rf "$fidelity"' EXIT
# At the machine's own level and at AVX2 (what most users' CPUs run, and what an AVX-512
# machine would otherwise never check end to end).
for level in native avx2; do
    echo "level: $level"
    cpu=()
    [ "$level" = native ] || cpu=(HEARTH_CPU="$level")
    for ctx in 512 1024; do
        env "${cpu[@]}" target/release/hearth perplexity "$model" \
            -f tests/fixtures/fidelity/corpus.txt -c "$ctx" -t 2 \
            --dump-logprobs "$fidelity/ctx$ctx.topk" | tail -1
    done
    "$HEARTH_PYTHON" tests/fixtures/fidelity/check.py "$fidelity/ctx512.topk" "$fidelity/ctx1024.topk"
    # The same targets through the path of `serve`'s decoding tokens: packed weights and
    # the row kernels, which round differently from the prompt GEMM.
    echo "level: $level, decode path"
    for ctx in 512 1024; do
        env "${cpu[@]}" target/release/hearth perplexity "$model" \
            -f tests/fixtures/fidelity/corpus.txt -c "$ctx" -t 2 --decode-path \
            --dump-logprobs "$fidelity/ctx$ctx.topk" | tail -1
    done
    "$HEARTH_PYTHON" tests/fixtures/fidelity/check.py "$fidelity/ctx512.topk" "$fidelity/ctx1024.topk"
done
HEARTH_CPU=avx2 cargo test --workspace --release --test run
"$HEARTH_PYTHON" tests/fixtures/fidelity/greedy_compare.py target/release/hearth "$model"

step "hearth pull, list, run by name and rm against a stand-in hub on loopback"
scripts/test-store.sh

step "hearth chat on a terminal (tmux types into it)"
scripts/test-chat.sh

step "hearth serve on a loopback port, driven by the real openai Python client"
scripts/test-server.sh

step "the web page in headless Chromium (load, key, send, stream, stop, reload)"
scripts/test-web.sh

step "deployment: manifests validated offline, the static binary and its image (where podman runs)"
scripts/test-deploy.sh

step "aarch64: build, and kernel tests under qemu"
scripts/test-aarch64.sh

echo; echo "all checks passed"
