#!/usr/bin/env bash
# Aggregates the same N million ticks into 1-minute mid-price bars with Tickwire (batch
# `aggregate`, release build) and with DuckDB (`time_bucket`), checks the bars are identical
# and writes both throughputs to bench/results/candles.md. Usage: bench/candles.sh [MILLIONS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N_M="${1:-5}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -m pip install --quiet duckdb >/dev/null 2>&1 || python3 -m pip install --quiet --break-system-packages duckdb

echo "generating $N_M M ticks…"
python3 - "$N_M" "$WORK/ticks.csv" <<'PY'
import random, sys
n = int(float(sys.argv[1]) * 1_000_000)
random.seed(7)
t = 1_704_067_200_000; p = 108_500
with open(sys.argv[2], "w") as f:
    out = []
    for i in range(n):
        t += random.randint(1, 40)           # strictly increasing: no open/close ties
        p = max(1000, p + random.randint(-3, 3))
        s = random.randint(1, 4)
        out.append(f"{t},{p // 100000}.{p % 100000:05d},{(p + s) // 100000}.{(p + s) % 100000:05d}\n")
        if len(out) == 100_000:
            f.write("".join(out)); out = []
    f.write("".join(out))
PY

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
(cd "$ROOT" && cargo build -q --release -p tickwire-candles --example aggregate_csv)
TW_OUT=$("$TARGET/release/examples/aggregate_csv" "$WORK/ticks.csv" 1m "$WORK/tw.csv")
echo "$TW_OUT"

DUCK_OUT=$(python3 - "$WORK/ticks.csv" "$WORK/duck.csv" <<'PY'
import duckdb, sys, time
con = duckdb.connect()
con.execute(f"""CREATE TABLE t AS SELECT column0::BIGINT AS ts, column1::DECIMAL(12,5) AS bid,
               column2::DECIMAL(12,5) AS ask FROM read_csv('{sys.argv[1]}', header=false)""")
n = con.execute("SELECT count(*) FROM t").fetchone()[0]
q = """SELECT epoch_ms(time_bucket(INTERVAL '1 minute', make_timestamp(ts * 1000))) AS start_ms,
          arg_min((bid + ask) * 0.5, ts) AS o, max((bid + ask) * 0.5) AS h,
          min((bid + ask) * 0.5) AS l, arg_max((bid + ask) * 0.5, ts) AS c, count(*) AS v
       FROM t GROUP BY 1 ORDER BY 1"""
best = 1e9
for _ in range(3):
    s = time.perf_counter(); rows = con.execute(q).fetchall(); best = min(best, time.perf_counter() - s)
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write(",".join(str(x) for x in r) + "\n")
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
print(f"duckdb {duckdb.__version__} ticks={n} bars={len(rows)} secs={best:.4f} ticks_per_sec={n/best:.0f} threads={threads}")
PY
)
echo "$DUCK_OUT"

python3 - "$WORK/tw.csv" "$WORK/duck.csv" <<'PY'
import sys
from decimal import Decimal
def load(p):
    return [tuple([int(r[0])] + [Decimal(x).normalize() for x in r[1:]]) for r in (l.strip().split(",") for l in open(p)) ]
a, b = load(sys.argv[1]), load(sys.argv[2])
if a != b:
    diff = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y) if len(a) == len(b) else "length"
    sys.exit(f"BARS DIFFER: tickwire {len(a)} bars, duckdb {len(b)} bars, first difference at {diff}")
print(f"bars identical: {len(a)}")
PY

tw_rate=$(echo "$TW_OUT" | sed -n 's/.*ticks_per_sec=\([0-9]*\).*/\1/p')
duck_rate=$(echo "$DUCK_OUT" | sed -n 's/.*ticks_per_sec=\([0-9]*\).*/\1/p')
RESULTS="$ROOT/bench/results/candles.md"
{
  echo "# Candles: Tickwire batch aggregate vs DuckDB time_bucket"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
  echo "- git: $(git -C "$ROOT" rev-parse --short HEAD)"
  echo "- command: \`bench/candles.sh $N_M\`"
  echo "- workload: $N_M M EURUSD-like quotes (strictly increasing ms timestamps), 1-minute bars of the mid price"
  echo "  (exact decimal), OHLC + tick volume; best of 3 runs each, CSV parsing excluded on both sides"
  echo "  (DuckDB: table in memory; Tickwire: Vec<Tick> in memory). Bars compared field by field: identical."
  echo
  echo "| engine | ticks/s | raw output |"
  echo "|---|---|---|"
  echo "| Tickwire \`aggregate\` (1 thread) | $tw_rate | \`$TW_OUT\` |"
  echo "| DuckDB (all threads) | $duck_rate | \`$DUCK_OUT\` |"
} > "$RESULTS"
echo "wrote $RESULTS"
