#!/usr/bin/env bash
# Offline checks of the Kubernetes deployment and the container image (no cluster needed):
#
# 1. the manifests under deploy/kubernetes render (kubectl kustomize, with a stand-in
#    renderer checked against it) and validate against Kubernetes' schemas and the
#    Inference Extension's CRD schemas, plus the cross-checks of
#    deploy/kubernetes/validate.py, whose self-test breaks the rendered manifests 18 ways
#    and expects every breakage caught; then a copy of the folder with one field misspelt
#    must fail to validate;
# 2. deploy/kubernetes/resources.py gives the memory the base Deployment asks for;
# 3. scripts/build-image.sh builds the static binary (target/static) and, where podman can
#    build (installed from Debian's packages when missing, as root), the image; the image
#    must be under 30 MB, run `hearth --version` as user 65532 with a read-only root and
#    no capabilities, and serve the default model --sealed (healthy, Landlock in force),
#    then drain on SIGTERM and exit 0. Without an image builder, the binary alone is
#    checked (static, under 30 MB, runs).
#
# The validator's packages (kubernetes-validate, pinned) live in their own virtual
# environment, $HEARTH_CACHE/deploy-venv. Uses target/release/hearth, if built, for the
# flag check and resources.py (HEARTH_BIN overrides). Prints the seconds each step took.
#
#   scripts/test-deploy.sh [--manifests-only]     (--manifests-only: steps 1 and 2, ~10 s;
#                                                  step 3's static build takes ~5 min cold)
set -euo pipefail
cd "$(dirname "$0")/.."
manifests_only=0
[ "${1:-}" = --manifests-only ] && manifests_only=1
. scripts/python-env.sh
t0=$SECONDS
step() { echo; echo "==> $* (at $((SECONDS - t0)) s)"; }
checks_passed=0
pass() { checks_passed=$((checks_passed + 1)); echo "ok: $*"; }
fail() { echo "FAILED: $*" >&2; echo "$checks_passed passed, 1 failed"; exit 1; }

deploy_venv="$HEARTH_CACHE/deploy-venv"
deploy_packages="kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4"
venv_with "$deploy_venv" "$deploy_packages"
py="$deploy_venv/bin/python"
bin="${HEARTH_BIN:-target/release/hearth}"
hearth_flag=()
[ -x "$bin" ] && hearth_flag=(--hearth "$bin")

work="$(mktemp -d)"
container=""
cleanup() {
    if [ -n "$container" ]; then
        podman rm -f "$container" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step "manifests: render, validate, self-test"
"$py" deploy/kubernetes/validate.py --self-test "${hearth_flag[@]}" || fail "deploy/kubernetes does not validate"
pass "manifests"

step "a misspelt field in a manifest file fails validation"
cp -r deploy/kubernetes "$work/kubernetes"
sed -i 's/readOnlyRootFilesystem: true/readOnlyRootFileSystem: true/' "$work/kubernetes/base/hearth.yaml"
if "$py" deploy/kubernetes/validate.py "$work/kubernetes/example" > "$work/broken.out"; then
    cat "$work/broken.out"
    fail "a broken manifest passed validation"
fi
grep -m1 "readOnlyRootFileSystem" "$work/broken.out" || fail "the broken manifest failed for another reason"
pass "broken manifest refused"

if [ -x "$bin" ]; then
    step "resources.py gives the base Deployment's memory"
    model="$(scripts/fetch-model.sh)"
    ctx="$(sed -n 's/^ *- HEARTH_CTX=//p' deploy/kubernetes/base/kustomization.yaml)"
    threads="$(sed -n 's/^ *- HEARTH_THREADS=//p' deploy/kubernetes/base/kustomization.yaml)"
    want="$("$py" deploy/kubernetes/resources.py "$model" --ctx "$ctx" --threads "$threads" --hearth "$bin" \
        | sed -n 's/^ *memory: //p' | head -1)"
    have="$(sed -n 's/^ *memory: //p' deploy/kubernetes/base/hearth.yaml | sort -u)"
    [ "$want" = "$have" ] || fail "resources.py says $want for --ctx $ctx, base/hearth.yaml has $have"
    pass "memory $have for --ctx $ctx"
fi

if [ "$manifests_only" = 1 ]; then
    echo; echo "test-deploy: $((SECONDS - t0)) s (manifests only)"
    echo "$checks_passed passed, 0 failed"
    exit 0
fi

step "static binary and image"
limit=30000000
if [ "$(uname -m)" = x86_64 ] && ! command -v podman >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "hearth: installing podman (and runc)" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq podman runc >/dev/null; } \
        || echo "hearth: podman could not be installed; the binary alone will be checked" >&2
fi
scripts/build-image.sh --tag localhost/hearth:test | tee "$work/build.out"
static="$(sed -n 's/^binary: \(.*\) (\([0-9]*\) bytes)$/\1/p' "$work/build.out")"
[ -n "$static" ] || { grep -q "no image" "$work/build.out" && { echo "$checks_passed passed, 0 failed"; exit 0; }; fail "no static binary"; }
binary_bytes="$(stat -c %s "$static")"
[ "$binary_bytes" -lt "$limit" ] || fail "the static binary is $binary_bytes bytes (limit $limit)"
pass "static binary: $binary_bytes bytes"
image_bytes="$(sed -n 's/^image: .* (\([0-9]*\) bytes)$/\1/p' "$work/build.out")"
if [ -z "$image_bytes" ]; then
    echo "hearth: no image on this machine (above); the static binary was checked alone"
else
    [ "$image_bytes" -lt "$limit" ] || fail "the image is $image_bytes bytes (limit $limit)"
    pass "image: $image_bytes bytes, under $limit"
    # runc where it is installed: crun refuses cgroup v1 hybrid hosts such as this VM's.
    # Explicit rlimits: podman's defaults exceed what a container may set without
    # CAP_SYS_RESOURCE, which some sandboxes drop.
    run=(podman)
    command -v runc >/dev/null && run+=(--runtime runc)
    run+=(run --ulimit nofile=4096:4096 --ulimit nproc=4096:4096
        --read-only --cap-drop ALL --security-opt no-new-privileges)
    user="$(podman image inspect --format '{{.Config.User}}' localhost/hearth:test)"
    [ "$user" = "65532:65532" ] || fail "the image's user is '$user', not 65532:65532"
    version="$("${run[@]}" --rm --network none localhost/hearth:test --version)"
    pass "the image runs '$version' as $user (read-only root, no capabilities)"

    model="$(scripts/fetch-model.sh)"
    port="$("$HEARTH_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # The host's loopback (--network host) so that this script can reach it; the model
    # mounted read-only, as in the Deployment.
    container="$("${run[@]}" -d --network host -v "$model:/models/model.gguf:ro" localhost/hearth:test \
        serve /models/model.gguf --host 127.0.0.1 --port "$port" --ctx 1024 -t 2 --sealed)"
    health=""
    for _ in $(seq 120); do
        health="$(curl -sf -m 2 "http://127.0.0.1:$port/health" || true)"
        [ -n "$health" ] && break
        sleep 0.5
    done
    echo "health: $health"
    case "$health" in
        *'"sealed":true'*landlock*) ;;
        *) podman logs "$container" >&2 || true; fail "the image did not serve sealed with Landlock" ;;
    esac
    uid="$(podman top "$container" huser | tail -1 | tr -d ' ')"
    [ "$uid" = 65532 ] || fail "the server runs as '$uid', not 65532"
    curl -sf -m 60 "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
        -d '{"prompt": "The capital of France is", "max_tokens": 4}' >/dev/null || fail "no completion"
    podman stop -t 40 "$container" >/dev/null
    code="$(podman inspect --format '{{.State.ExitCode}}' "$container")"
    [ "$code" = 0 ] || { podman logs "$container" >&2; fail "the container exited $code after SIGTERM"; }
    podman logs "$container" 2>&1 | grep -q "stopped: every request finished" || fail "no drain in the log"
    pass "the image served the model sealed as uid $uid and drained on SIGTERM (exit 0)"
    podman rm "$container" >/dev/null
    container=""
    podman rmi localhost/hearth:test >/dev/null
fi
echo
echo "test-deploy: $((SECONDS - t0)) s"
echo "$checks_passed passed, 0 failed"
