#!/usr/bin/env bash
# Builds Hearth's container image (deploy/Containerfile, FROM scratch) from a static,
# stripped `hearth`:
#
#   scripts/build-image.sh [--binary-only] [--tag NAME]
#
# 1. The binary: static glibc (`-C target-feature=+crt-static`) for x86_64-unknown-linux-gnu,
#    no debug info, symbols stripped, in its own target folder (target/static) so that the
#    main build's artefacts stay valid. Naming --target keeps build scripts and proc macros
#    dynamic (crt-static applies to the target only). A musl target would do as well but
#    cannot be installed on machines without the network.
# 2. The image: podman, else buildah, else a docker client with a daemon to talk to. With
#    none of them (or no x86_64 host), the script says why and exits 0 after step 1, and
#    the caller checks the binary alone. --binary-only stops after step 1.
#
# Prints, on its last lines, `binary: PATH (N bytes)` and, when built, `image: NAME (N bytes)`.
# The image holds deploy/rootfs (/etc/passwd and /etc/group) and /hearth, nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="localhost/hearth:dev"
binary_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --binary-only) binary_only=1 ;;
        --tag) tag="$2"; shift ;;
        *) echo "usage: $0 [--binary-only] [--tag NAME]" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(uname -m)" != x86_64 ]; then
    echo "hearth: no image: the static build is set up for x86_64 hosts (this is $(uname -m))"
    exit 0
fi

triple=x86_64-unknown-linux-gnu
target_dir="${HEARTH_STATIC_TARGET_DIR:-target/static}"
echo "hearth: building a static hearth ($triple, crt-static, stripped) in $target_dir" >&2
CARGO_TARGET_DIR="$target_dir" \
    RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin hearth --target "$triple"
bin="$target_dir/$triple/release/hearth"

# Static means no program interpreter and no shared libraries to load: a FROM scratch
# image has neither.
if readelf -lW "$bin" | grep -q 'Requesting program interpreter' \
    || readelf -dW "$bin" | grep -q '(NEEDED)'; then
    echo "hearth: $bin is not static:" >&2
    readelf -dW "$bin" | grep NEEDED >&2 || true
    exit 1
fi
"$bin" --version >/dev/null
echo "binary: $bin ($(stat -c %s "$bin") bytes)"
[ "$binary_only" = 1 ] && exit 0

# The build context: the Containerfile, rootfs/ and the binary, nothing else (the
# repository's target/ would be gigabytes to send).
context="$target_dir/image-context"
rm -rf "$context"
mkdir -p "$context"
cp deploy/Containerfile "$context/"
cp -r deploy/rootfs "$context/rootfs"
cp "$bin" "$context/hearth"
chmod 0555 "$context/hearth"
chmod 0644 "$context/rootfs/etc/passwd" "$context/rootfs/etc/group"

if command -v podman >/dev/null; then
    builder=(podman build)
    inspect=(podman image inspect --format '{{.Size}}')
elif command -v buildah >/dev/null; then
    builder=(buildah bud)
    inspect=(buildah inspect --type image --format '{{.Docker.Size}}')
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    builder=(docker build)
    inspect=(docker image inspect --format '{{.Size}}')
else
    why="no podman or buildah, and no docker daemon"
    command -v docker >/dev/null && why="no podman or buildah; a docker client but no daemon"
    echo "hearth: no image built: $why on this machine (apt-get install podman brings one); the static binary above is what the image would hold"
    exit 0
fi
if ! out="$("${builder[@]}" --quiet --tag "$tag" --file "$context/Containerfile" "$context" 2>&1)"; then
    echo "$out" >&2
    echo "hearth: no image built: ${builder[*]} failed on this machine (above); the static binary above is what the image would hold"
    exit 0
fi
echo "image: $tag ($("${inspect[@]}" "$tag") bytes)"
