#!/usr/bin/env bash
# Starts three demo backends (web-1..3 on 127.0.0.1:8081-8083), one process each, and
# limpet with the repository's config.yaml in the foreground. Process ids go to
# target/demo/*.pid, so one backend (or limpet) can be signalled on its own.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
run=target/demo
for port in 8080 8081 8082 8083 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use; stop whatever listens there (an earlier make run?)" >&2
    exit 1
  fi
done
mkdir -p "$run"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -f "$run"/web-*.pid' EXIT
for n in 1 2 3; do
  "$bin/limpet-demo-backend" "web-$n=127.0.0.1:808$n" &
  pids+=($!)
  echo $! > "$run/web-$n.pid"
done
"$bin/limpet" --check --config config.yaml
cat <<'TXT'

limpet is starting on http://127.0.0.1:8080 (admin on http://127.0.0.1:9090). Try:

  curl -c jar -b jar localhost:8080/      # repeat: always the same backend (cookie jar "jar")
  curl localhost:8080/                    # no jar: each new session lands on the next backend
  curl -i localhost:8080/                 # see Set-Cookie: LIMPET=…; Max-Age=900 and X-Limpet-Backend
  kill $(cat target/demo/web-1.pid)       # stop web-1: its users move on their next request
  curl localhost:9090/metrics | grep limpet_persistence
  curl localhost:9090/status
  kill -HUP $(cat target/demo/limpet.pid) # edit config.yaml first: reloads without dropping anything

Ctrl-C stops limpet and the demo backends.

TXT
"$bin/limpet" --config config.yaml --pid-file "$run/limpet.pid"
