#!/usr/bin/env bash
# Starts three demo backends (web-1..3 on 127.0.0.1:8081-8083) and limpet with the
# repository's config.yaml in the foreground. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
for port in 8080 8081 8082 8083 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use; stop whatever listens there (an earlier make run?)" >&2
    exit 1
  fi
done
"$bin/limpet-demo-backend" web-1=127.0.0.1:8081 web-2=127.0.0.1:8082 web-3=127.0.0.1:8083 &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT
"$bin/limpet" --check --config config.yaml
cat <<'TXT'

limpet is starting on http://127.0.0.1:8080 (admin on http://127.0.0.1:9090). Try:

  curl -c jar -b jar localhost:8080/      # repeat: always the same backend (cookie jar "jar")
  curl localhost:8080/                    # no jar: each new session lands on the next backend
  curl -i localhost:8080/                 # see Set-Cookie: LIMPET=…; Max-Age=900 and X-Limpet-Backend
  curl localhost:9090/metrics | grep limpet_persistence
  curl localhost:9090/status
  kill -HUP $(pgrep -x limpet)            # edit config.yaml first: reloads without dropping anything

Ctrl-C stops limpet and the demo backends.

TXT
"$bin/limpet" --config config.yaml
