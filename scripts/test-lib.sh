# Sourced by the test scripts that run the built `hearth` (test-server, test-store,
# test-chat, test-web): the Python environment, the binary's path, a free loopback port,
# and Debian packages installed when missing (CI starts from a bare machine, as root).
. scripts/python-env.sh

# The binary under test: CI builds it first; HEARTH_BIN overrides the path.
bin="${HEARTH_BIN:-target/release/hearth}"
if [ ! -x "$bin" ]; then
    echo "hearth: $bin is missing; build it with cargo build --release --bin hearth" >&2
    exit 1
fi

# A loopback port nothing listens on now.
free_port() {
    "$HEARTH_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# `need COMMAND PACKAGE`: installs Debian's PACKAGE when COMMAND is missing.
need() {
    if ! command -v "$1" >/dev/null; then
        echo "hearth: installing Debian's $2" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    fi
}
