#!/usr/bin/env bash
# A loopback rehearsal of scaling out, with no cluster: three `hearth serve` replicas of
# the default model behind HAProxy (least connections, health checks on /health, so a
# draining replica leaves the rotation; a request a draining replica refuses with 503 is
# sent to another one), then bench/replicas/drive.py measures aggregate throughput with
# 1, 2 and 3 replicas in rotation and stops one replica with SIGTERM in the middle of a
# run: no request may fail, and that replica must exit 0 after draining.
#
#   bench/replicas/run.sh [--quick] [-t THREADS_PER_REPLICA] [-- DRIVE_ARGS...]
#
# Each replica runs with -t 1 by default, so three replicas need three cores: on a
# machine with fewer (or one busy with other work), the figure to read is the per-core
# ratio, tokens per second of the replicas' own CPU time against one replica's (printed
# beside the aggregate ratio), not the aggregate ratio.
#
# --quick: two replicas, 8-second phases, about a minute in all: a check of the drain
# behind the proxy (for CI), whose throughput figures are too short to quote. Needs
# target/release/hearth (cargo build --release --bin hearth) and haproxy (installed from
# Debian's packages when missing, as root). Sends traffic to 127.0.0.1 only; every process
# it starts is stopped when it ends. Exits non-zero if a request failed or the stopped
# replica did not exit 0.
set -euo pipefail
cd "$(dirname "$0")/../.."

threads=1
quick=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        -t) threads="$2"; shift ;;
        --) shift; break ;;
        *) echo "usage: $0 [--quick] [-t THREADS] [-- DRIVE_ARGS...]" >&2; exit 2 ;;
    esac
    shift
done

# $bin (HEARTH_BIN, else target/release/hearth), free_port, need.
. scripts/test-lib.sh
need haproxy haproxy
model="$(scripts/fetch-model.sh)"

n_replicas=3
drive=(--levels 1,2,3 --seconds 40 --drain-seconds 45 --clients 12)
if [ "$quick" = 1 ]; then
    n_replicas=2
    drive=(--levels 1,2 --seconds 8 --drain-seconds 15 --clients 8)
fi

dir="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT

servers=()
backend=""
for i in $(seq 1 "$n_replicas"); do
    port="$(free_port)"
    # 4 sequences at once each, the same pool as bench/server's runs at ctx 4096.
    "$bin" serve "$model" --port "$port" --ctx 4096 --parallel 4 -t "$threads" >"$dir/r$i.log" 2>&1 &
    pids+=($!)
    eval "pid_r$i=$!"
    servers+=("r$i")
    backend+="    server r$i 127.0.0.1:$port"$'\n'
    "$HEARTH_PYTHON" -c "import sys; sys.path.insert(0, 'tests/server'); import ready; ready.wait_ready('http://127.0.0.1:$port')"
done

proxy_port="$(free_port)"
cat > "$dir/haproxy.cfg" <<EOF
global
    maxconn 2000
    stats socket $dir/admin.sock mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    # A request a replica refuses while draining (503, Retry-After: 1), or one whose
    # connection is refused once it has exited, goes to another replica. HAProxy retries
    # only requests it has not yet answered, with their bodies still in its buffer.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503

frontend llm
    bind 127.0.0.1:$proxy_port
    default_backend hearth

backend hearth
    # Streams last seconds: send each new one to the replica with the fewest open.
    balance leastconn
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    # /health turns 503 as soon as a replica starts draining: out after one failed check.
    default-server check inter 500ms fall 1 rise 2
    http-response set-header X-Hearth-Replica %s
$backend
EOF
haproxy -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")
for _ in $(seq 50); do
    [ -S "$dir/admin.sock" ] && curl -sf -m 2 "http://127.0.0.1:$proxy_port/health" >/dev/null && break
    sleep 0.2
done

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') (family $(lscpu | sed -n 's/^CPU family: *//p'), model $(lscpu | sed -n 's/^Model: *//p')), $(nproc) cores"
echo "model: $(basename "$model"); $n_replicas replicas behind HAProxy $(haproxy -v | head -1 | awk '{print $3}')"
# Other work on the machine takes cores from the replicas: say how busy it was.
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
stop_server="r$n_replicas"
stop_pid="$(eval echo "\$pid_r$n_replicas")"
status=0
"$HEARTH_PYTHON" bench/replicas/drive.py --proxy "127.0.0.1:$proxy_port" --admin "$dir/admin.sock" \
    --servers "$(IFS=,; echo "${servers[*]}")" --stop-pid "$stop_pid" --stop-server "$stop_server" \
    --threads-per-replica "$threads" --pids "$(IFS=,; echo "${pids[*]:0:$n_replicas}")" \
    "${drive[@]}" "$@" || status=$?

# The stopped replica is this script's child: its exit status is ours to read.
code=0
wait "$stop_pid" || code=$?
echo "  $stop_server exit status: $code; its log ends:"
tail -2 "$dir/r$n_replicas.log" | sed 's/^/    /'
echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg) (the replicas and the client account for up to $((n_replicas * threads + 1)))"
cores_used=$(( n_replicas * threads < $(nproc) ? n_replicas * threads : $(nproc) ))
echo "  (with $n_replicas replicas at -t $threads, $cores_used of $(nproc) cores compute; HAProxy and the client share them)"
if [ "$code" != 0 ]; then
    echo "hearth: the stopped replica exited $code, not 0" >&2
    status=1
fi
exit "$status"
