#!/usr/bin/env bash
# User-space instructions per request of one or more limpet binaries, counted by
# valgrind's callgrind: a figure that does not move with the machine's load, for
# comparing two builds of limpet when CPU time is too noisy to show a change of a few
# percent (it leaves out the kernel's share and counts `rep movsb` per byte, so it is
# not CPU time: use scripts/bench-compare.sh for that).
#   scripts/bench-instructions.sh BINARY [BINARY ...]
# Each binary runs the bench configuration (scripts/bench-config.sh) in front of the
# shared harness's nginx backends; after a warm-up the counters are zeroed, wrk sends
# returning-session requests (8 connections, SECS seconds, default 5) and the counters
# are dumped. PHASE=new sends requests without cookies instead. KEEP=DIR keeps each
# callgrind dump there, for callgrind_annotate. LIMPET_LOG=info turns the access log on
# (to the binary's standard error, kept in a file).
set -euo pipefail
cd "$(dirname "$0")/.."
harness=$(cd "${BENCH_HARNESS:-../shared/bench}" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY ...]" >&2; exit 2; }
. scripts/bench-config.sh
bench_start "apt-get install valgrind nginx-light wrk curl" valgrind callgrind_control nginx wrk curl
nginx -c "$harness/backends.nginx.conf" & pids+=($!)
port=18300
for bin in "$@"; do
  port=$((port + 1))
  run="$dir/$port"
  mkdir -p "$run"
  bench_config "127.0.0.1:$port" "127.0.0.1:$((port + 1000))" > "$run/bench.yaml"
  LIMPET_LOG=${LIMPET_LOG:-warn} valgrind --tool=callgrind --callgrind-out-file="$run/cg.out" \
    "$bin" --config "$run/bench.yaml" --upgrade-sock "$run/u.sock" >/dev/null 2>"$run/limpet.log" &
  vpid=$!
  pids+=($vpid)
  bench_wait "http://127.0.0.1:$port/" 600
  for _ in $(seq 16); do
    curl -s -o /dev/null -D - "http://127.0.0.1:$port/" | tr -d '\r' |
      awk -F': ' 'tolower($1)=="set-cookie"{split($2,a,";"); print a[1]}'
  done | grep -v '^APPSESSION=' | sort -u > "$run/cookies" || true
  [ "${PHASE:-returning}" = new ] && : > "$run/cookies"
  COOKIES_FILE="$run/cookies" wrk -t1 -c8 -d2s -s "$harness/cookies.lua" "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$vpid" >/dev/null 2>&1
  out=$(COOKIES_FILE="$run/cookies" wrk -t1 -c8 -d"${SECS:-5}s" -s "$harness/cookies.lua" "http://127.0.0.1:$port/")
  callgrind_control -d "$vpid" >/dev/null 2>&1
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  ir=$(awk '/^(summary|totals):/{print $2; exit}' "$run/cg.out.1")
  printf '%-40s phase=%-9s requests=%-6s instructions/request=%s\n' "$bin" "${PHASE:-returning}" "$reqs" "$((ir / reqs))"
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$run/cg.out.1" "$KEEP/$(basename "$bin").$port.callgrind"; fi
done
