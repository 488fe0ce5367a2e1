#!/usr/bin/env bash
# TLS on every edge against real peers: installs curl, openssl, mosquitto-clients (apt) and
# websockets, PyJWT + cryptography, paho-mqtt (pip) through scripts/install-tls-peers.sh, then
# runs the TLS crate's unit tests, the TLS and JWKS end-to-end tests (rustls clients, a test CA
# from rcgen, a real HTTPS JWKS endpoint) and the two ignored interop tests
# (crates/cli/tests/tls_interop.rs → tests/interop/tls/interop.py: curl --cacert, Python
# websockets over wss, mosquitto_sub/mosquitto_pub and paho over mqtts with PyJWT tokens, a FIX
# client over Python ssl, SIGHUP reloads; → pyjwt_interop.py: HS256/RS256/ES256/EdDSA tokens
# from PyJWT over REST, SSE, WebSocket and MQTT, a JWKS on 127.0.0.1, the refusals) against
# the real binary. Each must run exactly the tests it has: a test binary that ran none, or
# fewer than expected, fails the suite. Exits non-zero on failure; the last line is the summary.
#
# QuickFIX over TLS is not tested: the PyPI quickfix wheel is built without SSL (docs/fix.md).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/strict.sh

if ! bash scripts/install-tls-peers.sh; then
    # Without the peers nothing can be checked: a loud skip locally, a failure in CI.
    skip_or_fail "TLS interop" "could not install curl / openssl / mosquitto-clients / websockets / PyJWT / cryptography / paho-mqtt"
fi

log=$(mktemp)
status=0
problems=()
# (package|test target, "" for the library's unit tests|extra args|tests it must pass)
for spec in "tickwire-tls|||4" "tickwire|tls||10" "tickwire|jwks||3" "tickwire|tls_interop|--ignored|2"; do
    IFS='|' read -r pkg t extra want <<<"$spec"
    one=$(mktemp)
    target=(--lib)
    [ -n "$t" ] && target=(--test "$t")
    # shellcheck disable=SC2086 # $extra is one optional flag
    cargo test -p "$pkg" "${target[@]}" -- $extra --nocapture 2>&1 | tee "$one"
    rc=${PIPESTATUS[0]}
    cat "$one" >>"$log"
    got=$(passed_count "$one")
    rm -f "$one"
    if [ "$rc" != 0 ]; then
        status=1
        problems+=("$pkg ${t:-lib}: cargo test exit $rc")
    elif [ "$got" -lt "$want" ]; then
        status=1
        problems+=("$pkg ${t:-lib}: $got tests passed, $want expected")
    fi
done

summary=$(grep -E '^TLS interop: ' "$log" | tail -1)
pyjwt=$(grep -E '^PyJWT interop: ' "$log" | tail -1)
if [ "$status" = 0 ]; then
    echo "TLS interop: PASSED — rustls e2e and JWKS tests ok; ${summary#TLS interop: }; PyJWT: ${pyjwt#PyJWT interop: }"
    rm -f "$log"
else
    echo "TLS interop: FAILED — ${problems[*]}; ${summary:-no interop summary} (log: $log)"
fi
exit "$status"
