#!/usr/bin/env bash
# OpenTelemetry traces end to end (docs/tracing.md): a Python OTLP/HTTP receiver
# (tests/interop/otel/receiver.py, decoding with PyPI opentelemetry-proto) and the real
# binary. One server runs with TICKWIRE_TRACING__OTLP_ENDPOINT and takes two publishes by curl,
# one with a W3C traceparent, and a gRPC Publish with traceparent metadata; it is stopped with SIGTERM (the exporter flushes at shutdown).
# A second server without [tracing] takes a publish with traceparent and must send nothing.
# tests/interop/otel/check.py checks the spans and /metrics and counts its checks against
# EXPECTED_CHECKS. Exits non-zero on failure; the last line is the summary.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/strict.sh

OTEL_PROTO_VERSION=1.45.2
PY=python3
if ! "$PY" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
    echo "test-otel: installing opentelemetry-proto==$OTEL_PROTO_VERSION and protobuf (pip)"
    pkgs=("opentelemetry-proto==$OTEL_PROTO_VERSION" protobuf)
    "$PY" -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" 2>/dev/null \
        || "$PY" -m pip install --quiet --disable-pip-version-check --break-system-packages "${pkgs[@]}" \
        || skip_or_fail "OTel" "could not install opentelemetry-proto / protobuf"
fi
# The gRPC leg: grpcio and grpcio-tools (the client is generated from the proto at test time).
scripts/install-grpc-peers.sh || skip_or_fail "OTel" "could not install grpcio / grpcio-tools"
for tool in curl; do
    command -v "$tool" >/dev/null || skip_or_fail "OTel" "$tool is not installed"
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build -q -p tickwire --bin tickwire || { echo "OTel: FAILED (cargo build)"; exit 1; }
bin=$(realpath "$CARGO_TARGET_DIR/debug/tickwire")

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT
fail() { echo "OTel: FAILED — $* (logs: $work)"; exit 1; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
lines() { if [ -f "$work/spans.jsonl" ]; then wc -l <"$work/spans.jsonl"; else echo 0; fi; }

"$PY" tests/interop/otel/receiver.py --out "$work/spans.jsonl" --port-file "$work/otlp.port" \
    2>"$work/receiver.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/otlp.port" ] && break; sleep 0.1; done
[ -s "$work/otlp.port" ] || fail "the OTLP receiver did not start"
otlp="http://127.0.0.1:$(cat "$work/otlp.port")"

# start_server NAME [ENV...]: runs tickwire with its own data directory; sets $base and $srv.
start_server() {
    local name=$1
    shift
    local port
    port=$(free_port)
    grpc_port=$(free_port)
    mqtt_port=$(free_port)
    env "$@" TICKWIRE_LOG=info TICKWIRE_GRPC__LISTEN="127.0.0.1:$grpc_port" \
        TICKWIRE_MQTT__LISTEN="127.0.0.1:$mqtt_port" \
        "$bin" serve --http "127.0.0.1:$port" --data "$work/$name-data" \
        >"$work/$name.log" 2>&1 &
    srv=$!
    pids+=("$srv")
    base="http://127.0.0.1:$port"
    for _ in $(seq 300); do
        curl -fs "$base/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "server $name did not answer /healthz"
}

stop_server() {
    kill -TERM "$1"
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    fail "server did not stop on SIGTERM"
}

trace_id=4bf92f3577b34da6a3ce929d0e0e4736
parent=00f067aa0ba902b7
grpc_trace_id=0af7651916cd43dd8448eb211c80319c
grpc_parent=b7ad6b7169203331
stream_trace_id=1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f
stream_parent=53995c3f42cd8ad8
refused_trace_id=5a0e1d2c3b4a59687766554433221100
batch='[{"channel":"quotes.EURUSD","data":{"bid":"1.1","ask":"1.2"}},{"channel":"quotes.GBPUSD","data":{"bid":"1.3","ask":"1.4"}}]'

start_server traced TICKWIRE_TRACING__OTLP_ENDPOINT="$otlp" TICKWIRE_TRACING__SERVICE_NAME=tw-otel-test
curl -fsS -X POST "$base/v1/publish" -H 'Content-Type: application/json' \
    -H "traceparent: 00-$trace_id-$parent-01" -d "$batch" >"$work/publish1.json" \
    || fail "publish with traceparent"
curl -fsS -X POST "$base/v1/publish" -H 'Content-Type: application/json' \
    -d '{"channel":"quotes.USDJPY","data":{"bid":"150.1","ask":"150.2"}}' >"$work/publish2.json" \
    || fail "publish without traceparent"
# An invalid traceparent (uppercase hex) is ignored: a new trace, and the publish succeeds.
curl -fsS -X POST "$base/v1/publish" -H 'Content-Type: application/json' \
    -H "traceparent: 00-${trace_id^^}-$parent-01" \
    -d '{"channel":"quotes.USDCHF","data":{"bid":"0.9","ask":"0.91"}}' >"$work/publish3.json" \
    || fail "publish with an invalid traceparent"
# A refused publish (a quote whose bid is not a decimal) is traced too, as an error.
code=$(curl -sS -o "$work/publish4.json" -w '%{http_code}' -X POST "$base/v1/publish" \
    -H 'Content-Type: application/json' -H "traceparent: 00-$refused_trace_id-$parent-01" \
    -d '{"channel":"quotes.EURUSD","data":{"bid":"abc","ask":"1.2"}}')
[ "$code" = 422 ] || fail "a refused publish answered $code, not 422"
"$PY" tests/interop/otel/grpc_publish.py "127.0.0.1:$grpc_port" "00-$grpc_trace_id-$grpc_parent-01" \
    "00-$stream_trace_id-$stream_parent-01" \
    >"$work/grpc.log" 2>&1 || fail "gRPC publish with traceparent ($(tail -1 "$work/grpc.log"))"
# WebSocket and MQTT carry no traceparent: each publish is a trace of its own.
"$PY" tests/interop/otel/edges_publish.py "${base#http://}" "127.0.0.1:$mqtt_port" \
    >"$work/edges.log" 2>&1 || fail "WebSocket and MQTT publishes ($(tail -1 "$work/edges.log"))"
# The exporter batches for 200 ms; give it a second, then read the counters.
for _ in $(seq 50); do [ "$(lines)" -ge 42 ] && break; sleep 0.1; done
sleep 0.5
curl -fsS "$base/metrics" >"$work/metrics-on.txt" || fail "/metrics of the traced server"
stop_server "$srv"
mark2=$(lines)

start_server plain
curl -fsS -X POST "$base/v1/publish" -H 'Content-Type: application/json' \
    -H "traceparent: 00-$trace_id-$parent-01" -d "$batch" >/dev/null \
    || fail "publish to the server without [tracing]"
curl -fsS "$base/metrics" >"$work/metrics-off.txt" || fail "/metrics of the plain server"
sleep 1
stop_server "$srv"
mark3=$(lines)

if "$PY" tests/interop/otel/check.py "$work/spans.jsonl" "$trace_id" "$parent" "$grpc_trace_id" "$grpc_parent" \
    "$refused_trace_id" "$stream_trace_id" "$stream_parent" \
    "$mark2" "$mark3" \
    "$work/metrics-on.txt" "$work/metrics-off.txt" | tee "$work/check.log"; then
    echo "OTel: PASSED — $(tail -1 "$work/check.log" | sed 's/^OTel: //')"
    rm -rf "$work"
    exit 0
fi
echo "OTel: FAILED — $(tail -1 "$work/check.log" | sed 's/^OTel: //') (logs: $work)"
exit 1
