#!/usr/bin/env bash
# Installs the real TLS peers scripts/test-tls.sh drives: curl, mosquitto-clients and the openssl
# CLI (certificates for the test CA) from Debian; websockets, PyJWT with `cryptography` (RS256,
# ES256 and EdDSA tokens) and paho-mqtt from PyPI.
# Idempotent: installs only what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
{ command -v mosquitto_sub >/dev/null && command -v mosquitto_pub >/dev/null; } || missing+=(mosquitto-clients)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-tls-peers: installing ${missing[*]} (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
}
python3 -c 'import websockets.sync.client' 2>/dev/null || { echo "install-tls-peers: installing websockets (pip)"; pip_install websockets; }
# PyJWT 2.8 has get_algorithm_by_name and to_jwk(as_dict=True); `cryptography` signs RS256,
# ES256 and EdDSA (without it PyJWT does HMAC only).
python3 -c 'import jwt, cryptography.hazmat.primitives.asymmetric.ed25519; jwt.get_algorithm_by_name("EdDSA"); jwt.algorithms.OKPAlgorithm.to_jwk' 2>/dev/null \
    || { echo "install-tls-peers: installing PyJWT and cryptography (pip)"; pip_install 'PyJWT[crypto]>=2.8'; }
python3 -c 'import paho.mqtt.client' 2>/dev/null || { echo "install-tls-peers: installing paho-mqtt (pip)"; pip_install paho-mqtt; }

python3 - <<'PYEOF'
import cryptography, jwt, paho.mqtt, websockets, ssl
print(f"install-tls-peers: websockets {websockets.__version__}, PyJWT {jwt.__version__}, "
      f"cryptography {cryptography.__version__}, "
      f"paho-mqtt {paho.mqtt.__version__}, Python ssl {ssl.OPENSSL_VERSION}")
PYEOF
echo "install-tls-peers: $(curl --version | head -1 | cut -d' ' -f1-2), $(openssl version), $(mosquitto_sub --help 2>&1 | grep -m1 version)"
