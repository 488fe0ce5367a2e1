#!/usr/bin/env bash
# Full-text search: indexing throughput (messages/s) and search latency (p50/p99) of Tickwire's
# search projection (tantivy, release build) and of SQLite FTS5 (Python's sqlite3) on the same
# generated chat corpus and the same queries; writes bench/results/search.md.
#
#   bench/search.sh [MESSAGES] [REPEAT]     default 1000000 messages, each query 20 times
#
# SEARCH_BENCH_BIN=path runs an already built search_bench instead of building it (a bench
# taken while the tree is mid-change, or on a machine without the toolchain).
#
# Both sides index the same messages (text, channel, author, time) and answer each query with
# the 20 newest matching messages and a highlighted snippet of each. Tantivy goes through the
# projection's own apply/checkpoint (a commit with positions every second, as in the server);
# FTS5 inserts in one transaction per 10,000 rows (its fastest sensible way) and is asked with
# `ORDER BY ts DESC LIMIT 20` and `snippet()`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N="${1:-1000000}"
REPEAT="${2:-20}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

echo "generating $N messages…" >&2
python3 - "$N" "$WORK/corpus.jsonl" "$WORK/queries.txt" <<'PY'
import itertools, json, random, sys
n = int(sys.argv[1])
rnd = random.Random(18)
# A Zipf-shaped vocabulary: a few words very common, most rare; some with accents and some
# ideographs so the tokenizers' non-ASCII paths are part of the cost.
syll = ["ka", "lo", "mi", "ter", "on", "re", "sa", "vi", "du", "pel", "an", "quo", "zi", "mar", "ne", "tos"]
# Distinct words only: the queries pick by rank up to 15,000.
vocab, seen = [], set()
while len(vocab) < 20000:
    w = "".join(rnd.choice(syll) for _ in range(rnd.randint(1, 5)))
    if rnd.random() < 0.03:
        w += rnd.choice(["é", "ü", "ñ", "ø"])
    if w not in seen:
        seen.add(w); vocab.append(w)
# Cumulative weights once: `choices` with plain weights sums all 20,000 on every call.
cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(vocab))))
cjk = "東京大阪会議時間明日今日資料確認"
t0 = 1_767_225_600_000
with open(sys.argv[2], "w") as f:
    for i in range(n):
        k = rnd.randint(4, 18)
        words = rnd.choices(vocab, cum_weights=cum, k=k)
        if rnd.random() < 0.05:
            words.append("".join(rnd.choice(cjk) for _ in range(rnd.randint(2, 4))))
        text = " ".join(words).capitalize() + rnd.choice([".", "!", "?", ""])
        f.write(json.dumps({"c": f"chat.room{rnd.randint(0, 99)}", "s": str(rnd.randint(1, 5000)),
                            "t": text, "ts": t0 + i * 10}, ensure_ascii=False) + "\n")
# Queries: a common word, a mid word, a rare word, two words, a phrase, a prefix.
q = []
for _ in range(5):
    common = vocab[rnd.randint(0, 20)]; mid = vocab[rnd.randint(200, 2000)]
    rare = vocab[rnd.randint(5000, 15000)]; pre = vocab[rnd.randint(50, 500)][:3]
    q += [common, mid, rare, f"{common} {mid}", f'"{common} {vocab[rnd.randint(0, 20)]}"', f"{pre}*"]
with open(sys.argv[3], "w") as f:
    f.write("\n".join(q) + "\n")
PY

BENCH_BIN="${SEARCH_BENCH_BIN:-}"
if [ -z "$BENCH_BIN" ]; then
  echo "building the tantivy side (release)…" >&2
  (cd "$ROOT" && cargo build --release --quiet -p tickwire-proj-search --example search_bench)
  BENCH_BIN="$CARGO_TARGET_DIR/release/examples/search_bench"
fi
echo "indexing and searching with tantivy…" >&2
TANTIVY=$("$BENCH_BIN" "$WORK/corpus.jsonl" "$WORK/queries.txt" "$WORK/tantivy" "$REPEAT")
TANTIVY_MB=$(du -sm "$WORK/tantivy" | cut -f1)
rm -rf "$WORK/tantivy"

echo "indexing and searching with SQLite FTS5…" >&2
FTS=$(python3 - "$WORK/corpus.jsonl" "$WORK/queries.txt" "$WORK/fts.db" "$REPEAT" <<'PY'
import json, sqlite3, sys, time
corpus, queries, path, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = []
with open(corpus) as f:
    for line in f:
        m = json.loads(line)
        rows.append((m["c"], m["s"], m["ts"], m["t"]))
db = sqlite3.connect(path)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
# The same text handling as the tantivy side: Unicode words, lowercased, accents folded.
db.execute("CREATE VIRTUAL TABLE m USING fts5(t, c UNINDEXED, s UNINDEXED, ts UNINDEXED, "
           "tokenize = 'unicode61 remove_diacritics 2')")
start = time.perf_counter()
for i in range(0, len(rows), 10000):
    with db:
        db.executemany("INSERT INTO m(c, s, ts, t) VALUES (?, ?, ?, ?)", rows[i:i + 10000])
index_s = time.perf_counter() - start
n = len(rows); del rows
qs = [l.strip() for l in open(queries) if l.strip()]
lat = []; hits = 0
for _ in range(repeat):
    for q in qs:
        t = time.perf_counter()
        r = db.execute("SELECT c, rowid, ts, s, snippet(m, 0, '<mark>', '</mark>', '…', 30) "
                       "FROM m WHERE m MATCH ? ORDER BY ts DESC LIMIT 20", (q,)).fetchall()
        lat.append((time.perf_counter() - t) * 1000); hits += len(r)
lat.sort()
pct = lambda p: lat[round((len(lat) - 1) * p)]
db.close()
print(json.dumps({"engine": "sqlite-fts5", "sqlite": sqlite3.sqlite_version, "messages": n,
                  "index_seconds": index_s, "messages_per_second": n / index_s,
                  "queries": len(lat), "hits_returned": hits,
                  "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": lat[-1]}))
PY
)
FTS_MB=$(du -sm "$WORK"/fts.db* | awk '{s += $1} END {print s}')

python3 - "$ROOT/bench/results/search.md" "$N" "$REPEAT" "$TANTIVY" "$FTS" "$TANTIVY_MB" "$FTS_MB" "$WORK/queries.txt" <<'PY'
import json, os, platform, subprocess, sys, datetime
out, n, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t, f = json.loads(sys.argv[4]), json.loads(sys.argv[5])
tmb, fmb = sys.argv[6], sys.argv[7]
queries = [l.strip() for l in open(sys.argv[8]) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
load = open("/proc/loadavg").read().split()[:3]
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
args = f"{n}" + (f" {repeat}" if repeat != 20 else "")
lines = [
    "# search: indexing throughput and search latency, tantivy (Tickwire) vs SQLite FTS5",
    "",
    f"- when: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {rev}; "
    f"{os.cpu_count()} cores ({cpu}), load average at the end {' '.join(load)} (a shared machine: other builds ran beside this)",
    f"- corpus: {n:,} generated chat messages (4–18 words from a 20,000-word Zipf vocabulary, 3% accented words, 5% with ideographs), 100 channels, 5,000 authors",
    f"- queries: {len(queries)} (common word, mid word, rare word, two words, a phrase, a prefix; five of each), each run {repeat} times; 20 newest hits with a highlighted snippet",
    f"- reproduce: `bench/search.sh {args}` (or `bench/run.sh --only search`; `SEARCH_N=` sets the size)",
]
if n < 1_000_000:
    lines.append(f"- **size**: {n:,} messages, not the 1,000,000 of the target: the full size did not fit the time this shared 2-core machine had; run `bench/search.sh 1000000` for it")
lines += [
    "",
    "| engine | indexed msg/s | index time s | size on disk MB | search p50 ms | search p99 ms | max ms | hits returned |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]
for name, r, mb in (("tantivy 0.27 (search projection, commit every 1 s)", t, tmb),
                    (f"SQLite {f['sqlite']} FTS5 (Python sqlite3, 10k rows per transaction)", f, fmb)):
    lines.append(f"| {name} | {r['messages_per_second']:,.0f} | {r['index_seconds']:.1f} | {mb} | "
                 f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['hits_returned']:,} |")
lines += ["", "Queries:", "", "```"] + queries + ["```", "", "Raw:", "", "```", json.dumps(t), json.dumps(f), "```", ""]
prev = open(out).read() if os.path.exists(out) else ""
notes = prev[prev.index("<!-- notes -->"):] if "<!-- notes -->" in prev else ""
open(out, "w").write("\n".join(lines) + ("\n" + notes if notes else ""))
# The raw results beside it, for tools.
with open(os.path.splitext(out)[0] + ".json", "w") as j:
    json.dump({"messages": n, "repeat": repeat, "queries": queries, "command": f"bench/search.sh {args}",
               "disk_mb": {"tantivy": int(tmb), "sqlite-fts5": int(fmb)}, "results": [t, f]}, j, indent=1)
    j.write("\n")
print(f"wrote {out}")
PY
