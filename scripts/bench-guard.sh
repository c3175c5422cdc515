#!/usr/bin/env bash
# The CPU regression guard of `make bench`: reads the output of scripts/bench.sh (one
# line per balancer, phase and round), prints limpet's CPU per request over HAProxy's,
# summed over the rounds, for new and returning sessions, and exits 1 when a ratio is
# above LIMIT (default 1.5, the goal of issue 21; stretch 1.3).
set -euo pipefail
file=${1:?usage: bench-guard.sh BENCH_OUTPUT}
limit=${LIMIT:-1.5}
awk -v limit="$limit" '
  {
    for (i = 1; i <= NF; i++) if ($i ~ /^lb_cpu_us\/req=/) { split($i, kv, "="); cpu[$1 " " $2] += kv[2]; seen[$1 " " $2] = 1 }
  }
  END {
    bad = 0
    split("new returning", phases, " ")
    for (p = 1; p <= 2; p++) {
      ph = phases[p]
      if (!(("haproxy " ph) in seen) || !(("limpet " ph) in seen)) { print "bench-guard: no haproxy/limpet figures for " ph > "/dev/stderr"; bad = 1; continue }
      ratio = cpu["limpet " ph] / cpu["haproxy " ph]
      verdict = ratio <= limit ? "ok" : "ABOVE " limit
      printf "limpet/HAProxy CPU per request, %s sessions: %.2f (%s)\n", ph, ratio, verdict
      if (ratio > limit) bad = 1
    }
    exit bad
  }' "$file"
