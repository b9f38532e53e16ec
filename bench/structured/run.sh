#!/usr/bin/env bash
# The cost of constrained decoding: generation tokens/s of `hearth run` with and without a
# JSON schema, same model, prompt, threads and greedy decoding, runs alternating; prints
# the medians and their ratio (the grammar's mask is computed per token on the engine
# thread, so its cost shows directly in the rate).
#
#   bench/structured/run.sh MODEL [-t THREADS] [-n TOKENS] [-r ROUNDS]
#
# The schema (records.schema.json) asks for at least 1000 records, so the output cannot
# end within TOKENS and both runs generate the same count.
set -euo pipefail
cd "$(dirname "$0")/../.."
model="$1"; shift
threads=2; n=128; rounds=5
while getopts "t:n:r:" opt; do
    case "$opt" in
        t) threads="$OPTARG" ;;
        n) n="$OPTARG" ;;
        r) rounds="$OPTARG" ;;
        *) exit 2 ;;
    esac
done
bin=target/release/hearth
[ -x "$bin" ] || cargo build --release -q -p hearth-cli
prompt="A list of club members as JSON:"
rate() {  # generation tok/s of one run; extra flags in "$@"
    "$bin" run "$model" -p "$prompt" -n "$n" --temp 0 -t "$threads" "$@" 2>&1 >/dev/null \
        | sed -n 's/^hearth: generation: .* tokens in .* ms, \([0-9.]*\) tok\/s$/\1/p'
}
free=(); json=()
for ((i = 0; i < rounds; i++)); do
    free+=("$(rate)")
    json+=("$(rate --json-schema bench/structured/records.schema.json)")
done
python3 - "${free[*]}" "${json[*]}" "$model" "$threads" "$n" <<'PY'
import statistics, sys
free = [float(x) for x in sys.argv[1].split()]
json_ = [float(x) for x in sys.argv[2].split()]
mf, mj = statistics.median(free), statistics.median(json_)
print(f"model {sys.argv[3]}, {sys.argv[4]} threads, {sys.argv[5]} tokens, {len(free)} rounds")
print(f"unconstrained  tg tok/s median {mf:7.2f}  {free}")
print(f"JSON schema    tg tok/s median {mj:7.2f}  {json_}")
print(f"ratio {mj / mf:.3f}")
PY
