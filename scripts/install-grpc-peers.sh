#!/usr/bin/env bash
# Installs the Python gRPC peer the gRPC interop test drives: PyPI `grpcio` and `grpcio-tools`
# (binary wheels; grpcio-tools carries its own protoc, used only at test time to generate the
# client from proto/tickwire/v1/tickwire.proto). Idempotent: does nothing when the pinned
# versions import already.
set -euo pipefail

# Pinned so a new upstream release cannot break CI unannounced.
GRPC_VERSION="${GRPC_VERSION:-1.76.0}"
PY="${PYTHON:-python3}"

have() {
    "$PY" - "$GRPC_VERSION" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2  # noqa: F401  (the modules must load)
sys.exit(0 if version("grpcio") == sys.argv[1] and version("grpcio-tools") == sys.argv[1] else 1)
PYEOF
}

if have; then
    echo "install-grpc-peers: grpcio and grpcio-tools $GRPC_VERSION already installed"
    exit 0
fi

echo "install-grpc-peers: installing grpcio, grpcio-tools, grpcio-health-checking ==$GRPC_VERSION (pip)"
pkgs=("grpcio==$GRPC_VERSION" "grpcio-tools==$GRPC_VERSION" "grpcio-health-checking==$GRPC_VERSION")
# --only-binary: never compile gRPC's C++ core from source (it takes most of an hour).
"$PY" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "${pkgs[@]}" 2>/dev/null \
    || "$PY" -m pip install --quiet --disable-pip-version-check --only-binary=:all: --break-system-packages "${pkgs[@]}"
have || { echo "install-grpc-peers: grpcio installed but does not import" >&2; exit 1; }
echo "install-grpc-peers: grpcio $("$PY" -c 'import grpc; print(grpc.__version__)')"
