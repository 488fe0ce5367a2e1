#!/usr/bin/env bash
# MQTT edge end to end: installs the real peers (mosquitto, mosquitto-clients, paho-mqtt), then
# runs the raw-bytes protocol test and the paho/mosquitto interop test (ignored in a plain
# `cargo test`) against the real binary. Each must run exactly the tests it has: a test binary
# that ran none, or fewer than expected, fails the suite. Exits non-zero on failure; the last
# line is the summary.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/strict.sh

if ! scripts/install-mqtt-peers.sh; then
    # Without the peers nothing can be checked: a loud skip locally, a failure in CI.
    skip_or_fail "MQTT interop" "could not install mosquitto-clients / paho-mqtt"
fi

log=$(mktemp)
status=0
problems=()
# test binary, extra args, how many tests it must pass
for spec in "mqtt_raw||2" "mqtt_interop|--ignored|1"; do
    IFS='|' read -r t extra want <<<"$spec"
    one=$(mktemp)
    # shellcheck disable=SC2086 # $extra is one optional flag
    cargo test -p tickwire --test "$t" -- $extra --nocapture 2>&1 | tee "$one"
    rc=${PIPESTATUS[0]}
    cat "$one" >>"$log"
    got=$(passed_count "$one")
    rm -f "$one"
    if [ "$rc" != 0 ]; then
        status=1
        problems+=("$t: cargo test exit $rc")
    elif [ "$got" -lt "$want" ]; then
        status=1
        problems+=("$t: $got tests passed, $want expected")
    fi
done

summary=$(grep -E '^MQTT interop: ' "$log" | tail -1)
if [ "$status" = 0 ]; then
    echo "MQTT interop: PASSED — raw protocol test ok; ${summary#MQTT interop: }"
    rm -f "$log"
else
    echo "MQTT interop: FAILED — ${problems[*]}; ${summary:-no interop summary} (log: $log)"
fi
exit "$status"
