#!/usr/bin/env bash
# MQTT subscribers behind a slow link, two server builds taking turns:
#   sudo env CARGO_TARGET_DIR=... bench/slow-link.sh BEFORE_BINARY AFTER_BINARY [PAIRS]
# (sudo drops the environment the script reads: CARGO_TARGET_DIR, TICKWIRE_BENCH, LINK, NAME).
# Each run starts a fresh `tickwire serve` with an MQTT listener, limits what the server sends
# its subscribers to $LINK (4 Mbit/s, shared by the 20 of them: ~25 KB/s each against ~75 KB/s
# of prices they subscribe to), and runs the fan-out scenario over MQTT. The JSON goes to
# bench/results/json/$NAME-{before,after}-N.json ($NAME: slowlink unless set); 8 s into each
# run, the server sockets' send queues (`ss` Send-Q: unacknowledged plus unsent bytes) go
# beside it as .ss.
# Why: a slow reader's backlog should wait in the hub, where a newer price replaces an older
# one, not in a kernel send buffer (slow.md, "A slow link").
#
# The load generator is $TICKWIRE_BENCH, or tickwire-bench in the cargo target directory
# (`cargo build --release -p tickwire-bench`). Needs root and `tc` (iproute2) with the htb
# qdisc and the u32 classifier. The limit is an HTB class on `lo` for packets from the MQTT
# port to any address but 127.0.0.1: the load generator's subscribers connect from other
# 127.x.y.z addresses, its publisher from 127.0.0.1, whose acknowledgements must not wait
# behind the subscribers' data. The qdisc is removed when the script ends, however it ends.
# Traffic stays on 127.0.0.1 and 127.x.y.z.
set -euo pipefail
before=${1:?usage: slow-link.sh BEFORE_BINARY AFTER_BINARY [PAIRS]}
after=${2:?usage: slow-link.sh BEFORE_BINARY AFTER_BINARY [PAIRS]}
pairs=${3:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${TICKWIRE_BENCH:-${CARGO_TARGET_DIR:-$root/target}/release/tickwire-bench}
json=$root/bench/results/json
name=${NAME:-slowlink}
http_port=7951 mqtt_port=7953 link=${LINK:-4mbit}
for b in "$before" "$after" "$bench"; do
  if [ ! -x "$b" ]; then
    echo "$b: no such program (cargo build --release -p tickwire-bench)" >&2
    exit 1
  fi
done
# Only a loopback with no qdisc of its own is shaped: the script deletes what it added, and
# nothing else.
if ! tc qdisc show dev lo root | grep -q noqueue; then
  echo "lo has a qdisc already ($(tc qdisc show dev lo root)); this script will not replace it" >&2
  exit 1
fi
for p in $http_port $mqtt_port; do
  if (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is in use" >&2; exit 1; fi
done
work=$(mktemp -d)
server="" sampler="" shaped=""
cleanup() {
  if [ -n "$shaped" ]; then tc qdisc del dev lo root 2>/dev/null || true; fi
  for p in $sampler $server; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

limit_link() {
  tc qdisc add dev lo root handle 1: htb default 20 r2q 100
  shaped=1
  tc class add dev lo parent 1: classid 1:10 htb rate "$link" ceil "$link" burst 64k cburst 64k
  tc class add dev lo parent 1: classid 1:20 htb rate 40gbit quantum 200000
  tc filter add dev lo parent 1: protocol ip prio 1 u32 \
    match ip sport $mqtt_port 0xffff match ip dst 127.0.0.1/32 flowid 1:20
  tc filter add dev lo parent 1: protocol ip prio 2 u32 match ip sport $mqtt_port 0xffff flowid 1:10
}

run() { # $1: binary, $2: output name
  rm -rf "$work/tw"
  TICKWIRE_MQTT__LISTEN=127.0.0.1:$mqtt_port "$1" serve --http 127.0.0.1:$http_port \
    --data "$work/tw" --fsync interval:100ms >"$work/tw.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do
    (echo >/dev/tcp/127.0.0.1/$mqtt_port) 2>/dev/null && break
    sleep 0.1
  done
  if ! (echo >/dev/tcp/127.0.0.1/$mqtt_port) 2>/dev/null; then
    echo "the server did not open port $mqtt_port; its log:" >&2; cat "$work/tw.log" >&2; exit 1
  fi
  limit_link
  (sleep 8; ss -tnH state established "( sport = :$mqtt_port )" >"$json/$2.ss") &
  sampler=$!
  "$bench" run --scenario fanout --target mqtt --addr 127.0.0.1:$mqtt_port \
    --http-addr 127.0.0.1:$http_port --label "$2" --server-pid "$server" \
    --clients 20 --subs 100 --symbols 1000 --size 100 --rate 5000 \
    --duration 10 --warmup 2 --drain 5 --json "$json/$2.json" >/dev/null
  wait "$sampler"; sampler=""
  tc qdisc del dev lo root; shaped=""
  kill "$server"; wait "$server" 2>/dev/null || true
  server=""
  python3 - "$json/$2.json" "$json/$2.ss" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); e = d["extra"]
q = sorted(int(l.split()[1]) for l in open(sys.argv[2]) if l.strip())
print(f'{d["label"]}: staleness p50 {e["staleness_p50_us"]/1e6:.2f} s p99 '
      f'{e["staleness_p99_us"]/1e6:.2f} s, converged {e["converged"]:.2f}, '
      f'delivered {d["delivered_per_s"]:.0f}/s, largest Send-Q {q[-1] if q else 0} B')
EOF
}

for i in $(seq 1 "$pairs"); do
  run "$before" "$name-before-$i"
  run "$after" "$name-after-$i"
done
