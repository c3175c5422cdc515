#!/usr/bin/env bash
# Two limpet binaries side by side against HAProxy, in one run: did a change cost CPU?
#   scripts/bench-compare.sh OLD_BINARY NEW_BINARY
# Both run the bench configuration of scripts/bench.sh (one worker thread, access log
# off) in front of the shared harness's four nginx backends; each round loads HAProxy,
# then the old limpet, then the new one (new sessions, then returning sessions), with
# ../shared/bench/bench.sh. ROUNDS (default 3) and SECS (default 5) set the length.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2
harness=${BENCH_HARNESS:-../shared/bench}
rounds=${ROUNDS:-3} secs=${SECS:-5}
. scripts/bench-config.sh
bench_start "see scripts/bench.sh" haproxy nginx wrk bc curl
nginx -c "$(cd "$harness" && pwd)/backends.nginx.conf" & pids+=($!)
haproxy -f "$harness/haproxy.cfg" -db & pids+=($!); hap=$!
bench_config 127.0.0.1:18094 127.0.0.1:19094 > "$dir/old.yaml"
bench_config 127.0.0.1:18093 127.0.0.1:19093 > "$dir/new.yaml"
LIMPET_LOG=warn "$old" --config "$dir/old.yaml" --upgrade-sock "$dir/old.sock" 2>"$dir/old.log" & pids+=($!); opid=$!
LIMPET_LOG=warn "$new" --config "$dir/new.yaml" --upgrade-sock "$dir/new.sock" 2>"$dir/new.log" & pids+=($!); npid=$!
for port in 18090 18093 18094 18081; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores; ROUNDS=$rounds SECS=$secs"
for round in $(seq "$rounds"); do
  echo "## round $round"
  "$harness/bench.sh" haproxy 18090 "$hap" "$secs"
  "$harness/bench.sh" limpet-old 18094 "$opid" "$secs"
  "$harness/bench.sh" limpet-new 18093 "$npid" "$secs"
done
