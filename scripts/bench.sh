#!/usr/bin/env bash
# make bench: limpet against HAProxy, nginx and Caddy on this machine, in one run, with
# the shared harness (../shared/bench). limpet runs one worker thread, like the anchors,
# with access logs off (LIMPET_LOG=warn), in front of the same four nginx backends.
# Output: one line per balancer and phase (new sessions, returning sessions).
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${BENCH_HARNESS:-../shared/bench}
[ -x "$harness/run-anchors.sh" ] || { echo "bench harness not found at $harness" >&2; exit 1; }
missing=()
for cmd in haproxy nginx caddy wrk bc curl h2load; do command -v $cmd >/dev/null || missing+=($cmd); done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(echo "${missing[@]}" | sed 's/nginx/nginx-light/; s/h2load/nghttp2-client/')
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs
  else
    echo "missing: ${missing[*]}; install with: sudo apt-get install -y $pkgs" >&2; exit 1
  fi
fi
dir=$(mktemp -d)
. scripts/bench-config.sh
bench_config 127.0.0.1:18093 127.0.0.1:19093 > "$dir/bench.yaml"
LIMPET_LOG=warn target/release/limpet --config "$dir/bench.yaml" --upgrade-sock "$dir/u.sock" 2>"$dir/limpet.log" &
lpid=$!
trap 'kill $lpid 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 1
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores; SECS=${SECS:-8}"
EXTRA="limpet 18093 $lpid" SECS=${SECS:-8} "$harness/run-anchors.sh"
