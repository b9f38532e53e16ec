#!/usr/bin/env bash
# Hearth against llama.cpp on the same GGUF files, same thread counts, alternating runs in
# one session, then one side-by-side table (bench/compare/compare.py).
#
#   bench/compare/run.sh [MODEL.gguf|gemma|r1-1.5b|r1-7b|v2-lite|qwen3-30b-a3b ...] [-t 1,2]
#       [-r 5] [-p 512] [-n 128] [-d 0] [-ctk f16] [-ctv f16] [-a 3] [-l native|avx2]
#
# Models: a GGUF path, or a name: gemma (Gemma 3 270M Q4_K_M, scripts/fetch-model.sh),
# r1-1.5b, r1-7b, v2-lite and qwen3-30b-a3b (random-weight files with the exact shapes and
# Q4_K_M type mix of DeepSeek-R1-Distill-Qwen-1.5B / -7B, DeepSeek-V2-Lite and
# Qwen3-30B-A3B, made once by the shape_model example into ~/.cache/hearth/models/bench/;
# qwen3-30b-a3b has 16 of the model's 48 layers, see the example's doc). Default: gemma.
# -t thread counts, -r repetitions per run, -p/-n prompt and generation lengths (as in
# llama-bench), -d tokens already in the cache when each test starts (llama-bench's
# -d/--n-depth; filled untimed), -ctk/-ctv the KV cache types of both engines (f32, f16,
# q8_0; default f16, llama.cpp's default), -a alternations: each (model, threads) pair is
# measured -a times, Hearth
# and llama.cpp taking turns (who goes first flips each time, so drift in the machine's
# load falls on both). Raw results stay in a temporary directory, printed at the end.
# -l the instruction-set level of both engines: native (default: every extension this CPU
# has) or avx2 (Hearth with HEARTH_CPU=avx2 against llama.cpp compiled with AVX2/FMA/F16C
# and no AVX-512: what most users' CPUs run, measured on any AVX-512 machine too).
#
# Needs: a Rust toolchain; scripts/python-env.sh's environment (made on first use); and
# llama-cpp-python compiled on this machine for the level: bench/llama/install-llama-cpp.sh
# makes it (once, 5-10 minutes) in its own environment, or LLAMA_PYTHON names a Python
# that has it.
# llama.cpp runs with OMP_WAIT_POLICY as the caller set it: unset is what llama-bench
# does, and llama.cpp's best on a quiet machine; on a machine busy with other work, set
# OMP_WAIT_POLICY=passive (spinning OpenMP threads then steal the cores).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

threads=1,2 reps=5 n_prompt=512 n_gen=128 n_depth=0 type_k=f16 type_v=f16 alternations=3
level=native
models=()
while [ $# -gt 0 ]; do
    case "$1" in
        -t) threads="$2"; shift 2 ;;
        -r) reps="$2"; shift 2 ;;
        -p) n_prompt="$2"; shift 2 ;;
        -n) n_gen="$2"; shift 2 ;;
        -d) n_depth="$2"; shift 2 ;;
        -ctk) type_k="$2"; shift 2 ;;
        -ctv) type_v="$2"; shift 2 ;;
        -a) alternations="$2"; shift 2 ;;
        -l) level="$2"; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) models+=("$1"); shift ;;
    esac
done
[ ${#models[@]} -gt 0 ] || models=(gemma)

case "$level" in
    native) ;;
    avx2) export HEARTH_CPU=avx2 ;;
    *) echo "run.sh: unknown level '$level' (native or avx2)" >&2; exit 2 ;;
esac
llama_python="${LLAMA_PYTHON:-$("$root/bench/llama/install-llama-cpp.sh" "$level")}"
if ! "$llama_python" -c 'import llama_cpp' 2>/dev/null; then
    echo "run.sh: $llama_python cannot import llama_cpp" >&2
    exit 1
fi

echo "run.sh: building hearth (release)" >&2
(cd "$root" && cargo build --quiet --release -p hearth-cli)
hearth="${CARGO_TARGET_DIR:-$root/target}/release/hearth"

# A model argument as a path; names are made or fetched on first use.
resolve() {
    case "$1" in
        gemma) "$root/scripts/fetch-model.sh" ;;
        r1-1.5b|r1-7b|v2-lite|qwen3-30b-a3b)
            "$root/tests/fixtures/tokenizer/fetch-vocabs.sh" >/dev/null
            (cd "$root" && cargo run --quiet --release -p hearth-models --example shape_model -- "$1") ;;
        *) [ -f "$1" ] || { echo "run.sh: $1: no such file" >&2; exit 1; }; echo "$1" ;;
    esac
}

out="$(mktemp -d "${TMPDIR:-/tmp}/hearth-compare.XXXXXX")"
IFS=, read -r -a thread_list <<< "$threads"
for name in "${models[@]}"; do
    model="$(resolve "$name")"
    label="$(basename "$name" .gguf)"
    for a in $(seq 1 "$alternations"); do
        for t in "${thread_list[@]}"; do
            run_hearth() {
                "$hearth" bench "$model" -p "$n_prompt" -n "$n_gen" -d "$n_depth" -t "$t" -r "$reps" \
                    --cache-type-k "$type_k" --cache-type-v "$type_v" --json \
                    > "$out/hearth-$label-t$t-$a.json"
            }
            run_llama() {
                "$llama_python" "$root/bench/llama/llama_cpp_bench.py" "$model" \
                    -p "$n_prompt" -n "$n_gen" -d "$n_depth" -t "$t" -r "$reps" \
                    --cache-type-k "$type_k" --cache-type-v "$type_v" \
                    > "$out/llama-$label-t$t-$a.json" 2> "$out/llama-$label-t$t-$a.log"
            }
            echo "run.sh: $label, $t threads, alternation $a/$alternations" >&2
            if [ $((a % 2)) -eq 1 ]; then run_hearth; run_llama; else run_llama; run_hearth; fi
        done
    done
done

echo "level: $level (CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
python3 "$here/compare.py" "$out"
echo "raw results: $out" >&2
