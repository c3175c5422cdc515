#!/usr/bin/env bash
# Memory per idle client connection and its return after a flood (issue 14, defect 7):
# limpet in the bench configuration (scripts/bench-config.sh) in front of the shared
# harness's nginx backends, N (default 3000) connections kept alive after one request,
# then N that never send one, first on a plain listener, then on a TLS one (handshake
# done); RSS per connection while open, and RSS 5 s and 60 s after they closed against
# RSS before. AFTER="5 60" sets the waits. Needs a file limit above 2N+100 (ulimit -n).
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${BENCH_HARNESS:-../shared/bench}
n=${N:-3000}
. scripts/bench-config.sh
bench_start "see scripts/bench.sh" nginx curl python3 openssl
[ "$(ulimit -n)" -gt $((2 * n + 100)) ] || ulimit -n $((2 * n + 200)) 2>/dev/null ||
  { echo "the file limit ($(ulimit -n)) is too low for N=$n" >&2; exit 1; }
nginx -c "$(cd "$harness" && pwd)/backends.nginx.conf" & pids+=($!)
bench_cert
bench_config 127.0.0.1:18095 127.0.0.1:19095 > "$dir/plain.yaml"
bench_config 127.0.0.1:18095 127.0.0.1:19095 "{ cert: $dir/cert.pem, key: $dir/key.pem }" > "$dir/tls.yaml"
for mode in keepalive idle tls-keepalive tls-idle; do
  if [ "${mode#tls-}" = "$mode" ]; then conf=plain url=http; else conf=tls url=https; fi
  LIMPET_LOG=warn target/release/limpet --config "$dir/$conf.yaml" --upgrade-sock "$dir/u.sock" 2>"$dir/limpet.log" &
  lpid=$!
  pids+=($lpid)
  bench_wait "$url://127.0.0.1:18095/"
  scripts/idle-flood.py 18095 "$lpid" "$n" "$mode" ${AFTER:-5 60}
  kill "$lpid"; wait "$lpid" 2>/dev/null || true
done
