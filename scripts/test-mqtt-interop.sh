#!/usr/bin/env bash
# MQTT edge end to end: installs the real peers (mosquitto, mosquitto-clients, paho-mqtt), then
# runs the raw-bytes protocol test and the paho/mosquitto interop test against the real binary.
# Exits non-zero on failure; the last line is the summary.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! scripts/install-mqtt-peers.sh; then
    echo "MQTT interop: FAILED (could not install mosquitto-clients / paho-mqtt)"
    exit 1
fi

export MQTT_INTEROP_REQUIRED=1
log=$(mktemp)
status=0
for t in mqtt_raw mqtt_interop; do
    cargo test -p tickwire --test "$t" -- --nocapture 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" = "0" ] || status=1
done

summary=$(grep -E '^MQTT interop: ' "$log" | tail -1)
if [ "$status" = 0 ]; then
    echo "MQTT interop: PASSED — raw protocol test ok; ${summary#MQTT interop: }"
else
    echo "MQTT interop: FAILED — ${summary:-see the output above} (log: $log)"
fi
exit "$status"
