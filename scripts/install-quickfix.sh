#!/usr/bin/env bash
# Installs the QuickFIX C++ engine's Python binding (PyPI `quickfix`) for the FIX interop tests.
#
# The wheel is built from source (there is no binary wheel for Linux/CPython 3.11), which takes
# several minutes on 2 cores. pip keeps the built wheel in its cache (~/.cache/pip/wheels), so a
# later run on the same machine (CI after a session, the next session) installs it in seconds.
# Idempotent: does nothing when the right version imports already.
set -euo pipefail

# Pinned so the cached wheel is reused and a new upstream release cannot break CI unannounced.
QUICKFIX_VERSION="${QUICKFIX_VERSION:-1.16.0}"
PY="${PYTHON:-python3}"

have() {
    "$PY" - "$QUICKFIX_VERSION" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
import quickfix  # noqa: F401  (the compiled module must load, not only the metadata)
sys.exit(0 if version("quickfix") == sys.argv[1] else 1)
PYEOF
}

if have; then
    echo "install-quickfix: quickfix $QUICKFIX_VERSION already installed"
    exit 0
fi

echo "install-quickfix: installing quickfix==$QUICKFIX_VERSION (first build compiles C++ for several minutes; cached in ~/.cache/pip afterwards)"
start=$(date +%s)
MAKEFLAGS="-j$(nproc)" "$PY" -m pip install --disable-pip-version-check "quickfix==$QUICKFIX_VERSION"
echo "install-quickfix: done in $(( $(date +%s) - start ))s"
have || { echo "install-quickfix: quickfix installed but does not import" >&2; exit 1; }
