#!/usr/bin/env bash
# Browser test of the web console: a real server fed by `tickwire sim`, driven by headless
# Chromium (Debian package) through playwright-core. Prints one summary line; exit 0 = pass.
# Artifacts (screenshots at three widths, server log): target/console-test/.
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
FIX_PORT=$(free_port)
DATA=$(mktemp -d)
SERVER_PID=""; SIM_PID=""; FIXSIM_PID=""
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  [ -n "$FIXSIM_PID" ] && kill "$FIXSIM_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

# Identities are configured, as in production: an admin key for the console and the feeds, a
# key without the admin scope, and an HMAC secret for user tokens (the chat author stamp).
ADMIN_KEY="console-admin-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
READ_KEY="console-read-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
CONF="$DATA/tickwire.toml"
mkdir -p "$DATA/srv"
cat >"$CONF" <<TOML
http = "127.0.0.1:$PORT"
data = "$DATA/srv"

[auth]
jwt_hmac_secret = "console-test-secret-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

[[auth.api_keys]]
name = "ops"
key = "$ADMIN_KEY"
scopes = ["publish", "subscribe_all", "admin"]

[[auth.api_keys]]
name = "reader"
key = "$READ_KEY"
scopes = ["subscribe_all"]

# One FIX initiator logged on to \`tickwire fix-sim\`: the Operations view shows its state and
# sequence numbers.
[[fix.initiators]]
name = "fixsim"
host = "127.0.0.1"
port = $FIX_PORT
sender_comp_id = "TWCONSOLE"
target_comp_id = "FIXSIM"
symbols = ["FXSIM1"]
heartbeat = 5
reconnect_min_ms = 200
reconnect_max_ms = 1000
TOML

# 2,500 one-minute bars of history for HIST, ending an hour ago: more than two pages of the
# chart's scroll-back (1,000 bars a page).
python3 - "$DATA/hist.csv" <<'PY'
import sys, time, math
end = (int(time.time()) // 60 - 60) * 60
with open(sys.argv[1], "w") as f:
    for i in range(2500):
        t = time.gmtime(end - (2499 - i) * 60)
        o = 100 + 5 * math.sin(i / 50)
        c = 100 + 5 * math.sin((i + 1) / 50)
        f.write(time.strftime("%Y.%m.%d,%H:%M", t) + f",{o:.2f},{max(o,c)+0.1:.2f},{min(o,c)-0.1:.2f},{c:.2f},{10+i%7}\n")
PY
"$BIN" import "$DATA/hist.csv" --format mt4 --symbol HIST --resolution 1m --data "$DATA/srv" --quiet \
  >"$ART/import.log" 2>&1 || { echo "CONSOLE TEST FAILED: import of the bar history failed"; cat "$ART/import.log" >&2; exit 1; }

"$BIN" fix-sim --listen "127.0.0.1:$FIX_PORT" --comp-id FIXSIM --symbols FXSIM1 --rate 2 >"$ART/fix-sim.log" 2>&1 &
FIXSIM_PID=$!
"$BIN" serve --config "$CONF" >"$ART/server.log" 2>&1 &
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
"$BIN" sim --symbols 4 --rate 200 --config "$CONF" --url "http://127.0.0.1:$PORT" >"$ART/sim.log" 2>&1 &
SIM_PID=$!
sleep 3
# A user token for the chat stamp test (sub 42, shown by its info.name).
USER_TOKEN=$("$BIN" token --config "$CONF" --sub 42 --info '{"name":"Ada Lovelace"}' --ttl 1h)
export CONSOLE_ADMIN_KEY="$ADMIN_KEY" CONSOLE_READ_KEY="$READ_KEY" CONSOLE_USER_TOKEN="$USER_TOKEN"

rc=0
NODE_PATH="$NODE_DIR/node_modules" node "$ROOT/web/test/console-test.cjs" "http://127.0.0.1:$PORT" "$ART" \
  | tee "$ART/console-test.out" || rc=$?
if [ "$rc" -eq 0 ] && grep -q '^CONSOLE TEST PASSED' "$ART/console-test.out"; then
  exit 0
fi
echo "CONSOLE TEST FAILED (node exit $rc; no PASSED line means nothing was checked); server log: $ART/server.log" >&2
exit 1
