#!/usr/bin/env bash
# Per-thread CPU of a running process over a window, summed by thread name:
#   bench/thread-cpu.sh PID SECONDS
# prints "total N%" and then "name=N%" per thread name, in percent of one core (200 = both
# cores of this machine busy). Read from /proc/PID/task/*/stat (utime + stime) at the start
# and the end of the window; a thread that starts or ends inside it counts what it ran inside.
# Used to see which of the server's threads take the cores under a benchmark (ingest.md).
set -euo pipefail
pid=${1:?usage: thread-cpu.sh PID SECONDS}
secs=${2:?usage: thread-cpu.sh PID SECONDS}
hz=$(getconf CLK_TCK)
snap() {
  for t in /proc/"$pid"/task/*; do
    # The name may hold spaces: the fields after it start at the last ") ".
    { read -r comm <"$t/comm" && read -r stat <"$t/stat"; } 2>/dev/null || continue
    set -- ${stat##*) }
    echo "${comm// /_} $(( ${12} + ${13} ))"
  done
}
a=$(snap); sleep "$secs"; b=$(snap)
awk -v hz="$hz" -v secs="$secs" '
  FNR == NR { start[$1] += $2; next }
  { end[$1] += $2 }
  END {
    for (n in end) { pct[n] = (end[n] - start[n]) * 100 / hz / secs; total += pct[n] }
    printf "total %.0f%%", total
    for (n in pct) if (pct[n] >= 0.5) printf " %s=%.0f%%", n, pct[n]
    printf "\n"
  }' <(echo "$a") <(echo "$b")
