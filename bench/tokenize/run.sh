#!/usr/bin/env bash
# Tokenizer encoding throughput: Hearth next to Hugging Face `tokenizers` (and llama.cpp,
# when llama-cpp-python is installed), on the same 1 MiB of mixed English and code
# (make_text.py) and the same vocabularies, in one run. One row per vocabulary: MB/s
# (10^6 bytes per second, best of N encodes of the whole text, one thread, special-token
# text parsed, nothing added) and whether each peer's ids equal Hearth's.
#
#   bench/tokenize/run.sh [ITERS]
#   LLAMA_PYTHON=python3 bench/tokenize/run.sh     # a Python with llama-cpp-python 0.3.36
#
# Gemma 3's SentencePiece vocabulary has no Hugging Face counterpart that can be built from
# the GGUF alone (its tokenizer.json uses merges the GGUF does not store), so HF is not
# timed there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
. scripts/python-env.sh
iters="${1:-10}"
llama_python="${LLAMA_PYTHON:-$HEARTH_PYTHON}"

vocab="$(tests/fixtures/tokenizer/fetch-vocabs.sh)"
"$HEARTH_PYTHON" -c 'import tokenizers' 2>/dev/null ||
    "$HEARTH_PYTHON" -m pip install --quiet --disable-pip-version-check tokenizers==0.23.3 >&2
have_llama=no
"$llama_python" -c 'import llama_cpp' 2>/dev/null && have_llama=yes
text="$HEARTH_CACHE/bench/mixed-1mib.txt"
if [ ! -f "$text" ]; then
    mkdir -p "$(dirname "$text")"
    "$HEARTH_PYTHON" "$here/make_text.py" "$HEARTH_CACHE/src/llama_cpp_python-0.3.36.tar.gz" "$text"
fi
cargo build --quiet --release -p hearth-tokenizer --example encode_bench
bench="${CARGO_TARGET_DIR:-$root/target}/release/examples/encode_bench"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mbs() { "$HEARTH_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["mb_per_s"])'; }
same() {
    "$HEARTH_PYTHON" -c '
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
d = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print("same" if a == b else f"differ@{d}")' "$1" "$2"
}

printf '%-40s %8s %8s %-10s %8s %-10s\n' "vocabulary (MB/s)" hearth hf "hf ids" llama.cpp "llama ids"
for v in ggml-vocab-llama-bpe.gguf deepseek-r1-distill-qwen-7b.vocab.gguf ggml-vocab-gpt-2.gguf gemma-3-270m.vocab.gguf; do
    h="$("$bench" "$vocab/$v" "$text" --iters "$iters" --ids-out "$tmp/h.json" | mbs)"
    f=- fs=-
    if [ "$v" != gemma-3-270m.vocab.gguf ]; then
        f="$("$HEARTH_PYTHON" "$here/hf_bench.py" "$vocab/$v" "$text" --iters "$iters" --ids-out "$tmp/f.json" | mbs)"
        fs="$(same "$tmp/h.json" "$tmp/f.json")"
    fi
    l=- ls=-
    if [ "$have_llama" = yes ]; then
        l="$("$llama_python" "$here/llama_bench.py" "$vocab/$v" "$text" --iters 2 --ids-out "$tmp/l.json" 2>/dev/null | mbs)"
        ls="$(same "$tmp/h.json" "$tmp/l.json")"
    fi
    printf '%-40s %8s %8s %-10s %8s %-10s\n' "$v" "$h" "$f" "$fs" "$l" "$ls"
done
