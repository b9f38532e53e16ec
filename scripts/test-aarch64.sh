#!/usr/bin/env bash
# Cross-checks and tests Hearth for aarch64 on an x86-64 Debian machine, so that the NEON
# kernels (crates/kernels/src/arm) are compared with the scalar references without ARM
# hardware:
#   1. `cargo check --workspace --all-targets` for aarch64-unknown-linux-gnu;
#   2. `cargo test -p hearth-kernels --release` for aarch64, run under qemu user-mode
#      emulation (its default `max` CPU: NEON, FP16, dotprod, i8mm, ...). The suite
#      builds every level's table itself (neon and neondot); HEARTH_EXPECT_DOTPROD makes
#      it fail if the CPU model ever stops offering the extensions, so that the neondot
#      kernels cannot silently go untested;
#   3. the tests that use the process-wide table again with HEARTH_CPU=neon, so that
#      matrix products also run end to end on the plain NEON level.
# Non-interactive and idempotent: installs the Debian 12 cross linker, arm64 libc and qemu
# only when they are missing (as root, or through sudo), and the Rust target only when
# rustup lacks it. Builds go to their own target dir (target/aarch64-cross, or
# $AARCH64_TARGET_DIR) so the host build is never invalidated.
set -euo pipefail

cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
export DEBIAN_FRONTEND=noninteractive

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/include/stdio.h ] || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null \
    || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "test-aarch64: installing ${need[*]}"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

qemu=$(command -v qemu-aarch64-static || command -v qemu-aarch64)
export CARGO_TARGET_DIR="${AARCH64_TARGET_DIR:-$PWD/target/aarch64-cross}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$qemu -L /usr/aarch64-linux-gnu"

start=$SECONDS
echo "test-aarch64: cargo check --target $TARGET --workspace --all-targets"
cargo check --target "$TARGET" --workspace --all-targets --quiet

echo "test-aarch64: cargo test -p hearth-kernels --release --target $TARGET (under qemu)"
HEARTH_EXPECT_DOTPROD=1 cargo test -p hearth-kernels --release --target "$TARGET"

echo "test-aarch64: the process-wide table forced to plain NEON (HEARTH_CPU=neon)"
HEARTH_CPU=neon cargo test -p hearth-kernels --release --target "$TARGET" \
    --test matmul --test matmul_noalloc --test ops --test attention \
    -- --skip every_format_every_level

echo "test-aarch64: passed in $((SECONDS - start)) s"
