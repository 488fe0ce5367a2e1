#!/usr/bin/env bash
# Browser test of the web console: a real server fed by `tickwire sim`, driven by headless
# Chromium (Debian package) through playwright-core. Prints one summary line; exit 0 = pass.
# Artifacts (screenshot, server log): target/console-test/.
# Passes only on the test's own "CONSOLE TEST PASSED" line, not on a bare exit 0.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/strict.sh"
ART="$ROOT/target/console-test"
mkdir -p "$ART"

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (Debian package)…"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    skip_or_fail "console test" "chromium could not be installed"
  fi
fi
NODE_DIR="$ART/node"
if [ ! -d "$NODE_DIR/node_modules/playwright-core" ]; then
  mkdir -p "$NODE_DIR"
  if ! (cd "$NODE_DIR" && npm init -y >/dev/null 2>&1 && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null 2>&1); then
    rm -rf "$NODE_DIR/node_modules"
    skip_or_fail "console test" "playwright-core could not be installed (npm)"
  fi
fi

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# Not TICKWIRE_*: the server reads every TICKWIRE_* variable as configuration.
BIN="${CONSOLE_TEST_BIN:-$TARGET/debug/tickwire}"
if [ -z "${CONSOLE_TEST_BIN:-}" ]; then
  (cd "$ROOT" && cargo build -q -p tickwire)
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA=$(mktemp -d)
SERVER_PID=""; SIM_PID=""
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

"$BIN" serve --http "127.0.0.1:$PORT" --data "$DATA" >"$ART/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
  echo "CONSOLE TEST FAILED: the server did not start (log: $ART/server.log)"
  cat "$ART/server.log" >&2
  exit 1
fi
"$BIN" sim --symbols 4 --rate 200 --url "http://127.0.0.1:$PORT" >"$ART/sim.log" 2>&1 &
SIM_PID=$!
sleep 3

rc=0
NODE_PATH="$NODE_DIR/node_modules" node "$ROOT/web/test/console-test.cjs" "http://127.0.0.1:$PORT" "$ART/console.png" \
  | tee "$ART/console-test.out" || rc=$?
if [ "$rc" -eq 0 ] && grep -q '^CONSOLE TEST PASSED' "$ART/console-test.out"; then
  exit 0
fi
echo "CONSOLE TEST FAILED (node exit $rc; no PASSED line means nothing was checked); server log: $ART/server.log" >&2
exit 1
