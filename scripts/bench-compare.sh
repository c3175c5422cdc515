#!/usr/bin/env bash
# Two limpet binaries side by side against HAProxy, in one run: did a change cost CPU?
#   scripts/bench-compare.sh OLD_BINARY [NEW_BINARY]
# Both run the bench configuration of scripts/bench.sh (one worker thread, access log
# off) in front of the shared harness's four nginx backends; each round loads HAProxy,
# then the old limpet, then the new one (new sessions, then returning sessions), with
# ../shared/bench/bench.sh. ROUNDS (default 3) and SECS (default 5) set the length.
# Each balancer's minor page faults per request follow its two lines.
# FLOOR=1 adds the smallest Pingora proxy (bench/tls-libs on a plain listener, rustls
# build, round robin, no logic) to each round: Pingora's own floor.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=${2:-}
harness=${BENCH_HARNESS:-../shared/bench}
rounds=${ROUNDS:-3} secs=${SECS:-5}
. scripts/bench-config.sh
bench_start "see scripts/bench.sh" haproxy nginx wrk bc curl
nginx -c "$(cd "$harness" && pwd)/backends.nginx.conf" & pids+=($!)
haproxy -f "$harness/haproxy.cfg" -db & pids+=($!)
entries=("haproxy 18090 $!")
bench_config 127.0.0.1:18094 127.0.0.1:19094 > "$dir/old.yaml"
LIMPET_LOG=warn "$old" --config "$dir/old.yaml" --upgrade-sock "$dir/old.sock" 2>"$dir/old.log" & pids+=($!)
entries+=("limpet-old 18094 $!")
if [ -n "$new" ]; then
  bench_config 127.0.0.1:18093 127.0.0.1:19093 > "$dir/new.yaml"
  LIMPET_LOG=warn "$new" --config "$dir/new.yaml" --upgrade-sock "$dir/new.sock" 2>"$dir/new.log" & pids+=($!)
  entries+=("limpet-new 18093 $!")
fi
if [ "${FLOOR:-0}" = 1 ]; then
  (cd bench/tls-libs && cargo build -q --release --locked --features rustls --target-dir ../../target/tls-libs/rustls)
  target/tls-libs/rustls/release/tls-proxy 127.0.0.1:18096 - - \
    127.0.0.1:18081 127.0.0.1:18082 127.0.0.1:18083 127.0.0.1:18084 2>"$dir/floor.log" & pids+=($!)
  entries+=("pingora-floor 18096 $!")
fi
for entry in "backends 18081 -" "${entries[@]}"; do
  read -r _ port _ <<<"$entry"
  bench_wait "http://127.0.0.1:$port/"
done
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores; ROUNDS=$rounds SECS=$secs"
for round in $(seq "$rounds"); do
  echo "## round $round"
  for entry in "${entries[@]}"; do
    read -r name port pid <<<"$entry"
    faults=$(awk '{print $10}' "/proc/$pid/stat")
    out=$("$harness/bench.sh" "$name" "$port" "$pid" "$secs")
    echo "$out"
    # Minor page faults per request: invisible to strace and to instruction counts, and
    # once a quarter of limpet's CPU (docs/performance.md).
    awk -v f0="$faults" -v f1="$(awk '{print $10}' "/proc/$pid/stat")" -v s="$secs" -v n="$name" '
      { for (i = 1; i <= NF; i++) if ($i ~ /^rps=/) { split($i, a, "="); reqs += a[2] * s } }
      END { if (reqs > 0) printf "%-10s faults    minflt/req=%.3f\n", n, (f1 - f0) / reqs }' <<<"$out"
  done
done
