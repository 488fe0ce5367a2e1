#!/usr/bin/env bash
# Installs the real MQTT peers the interop tests drive: mosquitto (broker, for the benchmark
# baseline), mosquitto-clients (mosquitto_sub/mosquitto_pub) from Debian, paho-mqtt from PyPI.
# Idempotent: installs only what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

if ! command -v mosquitto_sub >/dev/null || ! command -v mosquitto_pub >/dev/null \
    || ! { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; }; then
    echo "install-mqtt-peers: installing mosquitto and mosquitto-clients (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi

if ! python3 -c 'import paho.mqtt.client' 2>/dev/null; then
    echo "install-mqtt-peers: installing paho-mqtt (pip)"
    python3 -m pip install --quiet paho-mqtt 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages paho-mqtt
fi

echo "install-mqtt-peers: $(mosquitto_sub --help 2>&1 | head -1), paho-mqtt $(python3 -c 'import paho.mqtt; print(paho.mqtt.__version__)')"
