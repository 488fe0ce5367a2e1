#!/usr/bin/env bash
# Client SDKs (clients/js, clients/python) against the real server: installs what they need
# (npm ci: typescript, ws, playwright-core; Chromium from Debian; a venv with websockets and
# pytest), builds the server and the TypeScript package, then runs `node --test` (Node, and the
# package in headless Chromium) and `pytest`, each of which starts the binary (TICKWIRE_BIN) on
# loopback ports with a temporary data directory. Each runner must pass at
# least the tests it has: a run that counts fewer fails the suite. Exits non-zero on failure;
# the last line is the summary.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/strict.sh

# How many tests each runner must pass (raise these when adding tests).
JS_WANT=24
PY_WANT=21

ART="$ROOT/target/clients-test"
mkdir -p "$ART"

command -v node >/dev/null && command -v npm >/dev/null \
    || skip_or_fail "client SDKs" "node and npm are needed (Debian: nodejs npm)"
if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium (Debian package)…"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
        skip_or_fail "client SDKs" "chromium could not be installed (the browser test needs it)"
    fi
fi
if ! (cd clients/js && npm ci --no-audit --no-fund --silent >/dev/null 2>&1); then
    skip_or_fail "client SDKs" "npm ci failed in clients/js (typescript, ws, playwright-core)"
fi

# Python: a venv of our own; where venv is missing (Debian without python3-venv), the user's
# python3 with pip, as the other suites install their PyPI peers.
VENV="$ART/venv"
PY="$VENV/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c 'import websockets, pytest' 2>/dev/null; then
    rm -rf "$VENV"
    if ! { python3 -m venv "$VENV" \
        && "$PY" -m pip install --quiet --disable-pip-version-check "websockets>=13" "pytest>=7"; }; then
        rm -rf "$VENV"
        PY=python3
        if ! "$PY" -c 'import websockets.asyncio.client, pytest' 2>/dev/null; then
            "$PY" -m pip install --quiet --disable-pip-version-check "websockets>=13" "pytest>=7" 2>/dev/null \
                || "$PY" -m pip install --quiet --disable-pip-version-check --break-system-packages "websockets>=13" "pytest>=7" \
                || skip_or_fail "client SDKs" "could not install websockets and pytest (PyPI)"
        fi
    fi
fi

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# Not TICKWIRE_* (the server reads those as configuration): CLIENTS_TEST_BIN names a prebuilt binary.
BIN="${CLIENTS_TEST_BIN:-$TARGET/debug/tickwire}"
if [ -z "${CLIENTS_TEST_BIN:-}" ]; then
    if ! cargo build -q -p tickwire; then
        echo "client SDKs: FAILED — the server does not build"
        exit 1
    fi
fi

status=0
problems=()

# node --test ends with "# pass N" / "# fail N".
js_log="$ART/js.log"
(cd clients/js && npm run --silent build) >"$js_log" 2>&1 || { status=1; problems+=("tsc failed"); cat "$js_log"; }
if [ "$status" = 0 ]; then
    (cd clients/js && TICKWIRE_BIN="$BIN" CHROMIUM="$(command -v chromium)" \
        node --test test/client.test.mjs test/readme.test.mjs test/browser.test.mjs) 2>&1 | tee "$js_log"
    rc=${PIPESTATUS[0]}
    js_pass=$(grep -E '^# pass [0-9]+' "$js_log" | tail -1 | awk '{print $3}')
    js_fail=$(grep -E '^# fail [0-9]+' "$js_log" | tail -1 | awk '{print $3}')
    js_pass=${js_pass:-0}
    if [ "$rc" != 0 ]; then
        status=1; problems+=("node --test exit $rc (${js_fail:-?} failed)")
    elif [ "$js_pass" -lt "$JS_WANT" ]; then
        status=1; problems+=("node --test: $js_pass passed, $JS_WANT expected")
    fi
fi

# pytest ends with "N passed[, M failed] in Xs".
py_log="$ART/python.log"
(cd clients/python && TICKWIRE_BIN="$BIN" "$PY" -m pytest -p no:cacheprovider -q tests) 2>&1 | tee "$py_log"
rc=${PIPESTATUS[0]}
py_pass=$(tail -1 "$py_log" | grep -oE '[0-9]+ passed' | awk '{print $1}')
py_pass=${py_pass:-0}
if [ "$rc" != 0 ]; then
    status=1; problems+=("pytest exit $rc")
elif [ "$py_pass" -lt "$PY_WANT" ]; then
    status=1; problems+=("pytest: $py_pass passed, $PY_WANT expected")
fi

if [ "$status" = 0 ]; then
    echo "client SDKs: PASSED — JavaScript ${js_pass} tests, Python ${py_pass} tests against the real server"
else
    echo "client SDKs: FAILED — ${problems[*]} (logs: $ART)"
fi
exit "$status"
