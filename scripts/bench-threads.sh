#!/usr/bin/env bash
# make bench (multi-core part): limpet with THREADS worker threads (default 2) against
# HAProxy with `nbthread THREADS`, the shared harness's configuration otherwise, in front of the same four
# nginx backends, three rounds in one run. wrk shares the two cores, so compare CPU per
# request (lb_cpu_us/req), not requests per second.
set -euo pipefail
cd "$(dirname "$0")/.."
harness=$(cd "${BENCH_HARNESS:-../shared/bench}" && pwd)
secs=${SECS:-8}
threads=${THREADS:-2}
limpet=${LIMPET_BIN:-target/release/limpet}
. scripts/bench-config.sh
bench_start "see scripts/bench.sh" haproxy nginx wrk bc curl
bench_config 127.0.0.1:18095 127.0.0.1:19095 | sed "s/threads: 1/threads: $threads/" > "$dir/limpet.yaml"
sed "s/nbthread 1/nbthread $threads/; s/127.0.0.1:18090/127.0.0.1:18096/" "$harness/haproxy.cfg" > "$dir/haproxy.cfg"
grep -q "threads: $threads" "$dir/limpet.yaml" && grep -q "nbthread $threads" "$dir/haproxy.cfg"
nginx -c "$harness/backends.nginx.conf" & pids+=($!)
haproxy -f "$dir/haproxy.cfg" -db 2>"$dir/haproxy.log" & pids+=($!); hap=$!
LIMPET_LOG=warn "$limpet" --config "$dir/limpet.yaml" --upgrade-sock "$dir/u.sock" 2>"$dir/limpet.log" & pids+=($!); lim=$!
for port in 18095 18096; do
  bench_wait "http://127.0.0.1:$port/"
done
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores; SECS=$secs; $threads worker threads each"
for round in 1 2 3; do
  "$harness/bench.sh" "haproxy-${threads}t" 18096 "$hap" "$secs"
  "$harness/bench.sh" "limpet-${threads}t" 18095 "$lim" "$secs"
done
