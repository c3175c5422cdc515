# Sourced by the bench scripts: their common set-up (bench_start, below) and the
# configuration every benchmark runs limpet with.
# bench_config ADDRESS ADMIN_ADDRESS [TLS]: one worker thread, pool "be" with a signed
# 15-minute cookie over the shared harness's four nginx backends (127.0.0.1:18081-18084);
# TLS, when given, is the listener's `tls:` value.
bench_config() {
  local tls=""
  [ -n "${3:-}" ] && tls=", tls: $3"
  cat <<YAML
server: { threads: 1, client_idle_timeout: 30s }
listeners: [ { address: $1$tls } ]
admin: { address: $2 }
cookie_keys: [ { id: b1, secret: "bench-secret-0123456789abcdef0123456789" } ]
routes: [ { host: "*", path_prefix: /, pool: be } ]
pools:
  be:
    balance: round_robin
    persistence: [ { cookie: { name: LIMPET, ttl: 15m } } ]
    backends:
      - { id: s1, address: 127.0.0.1:18081 }
      - { id: s2, address: 127.0.0.1:18082 }
      - { id: s3, address: 127.0.0.1:18083 }
      - { id: s4, address: 127.0.0.1:18084 }
YAML
}

# bench_start HINT CMD...: every bench script's set-up. Each CMD must be installed (else
# "missing CMD (HINT)" and exit 1); $dir is a fresh scratch directory and $pids the
# processes the script starts: on exit they are killed and the directory removed.
bench_start() {
  local hint=$1 cmd
  shift
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null || { echo "missing $cmd ($hint)" >&2; exit 1; }
  done
  dir=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"' EXIT
}

# bench_cert: a self-signed ECDSA P-256 certificate for bench.test, in $dir/cert.pem and
# $dir/key.pem.
bench_cert() {
  openssl req -x509 -nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj /CN=bench.test \
    -addext subjectAltName=DNS:bench.test 2>/dev/null
}

# bench_wait URL [TRIES]: waits until URL answers, TRIES times 0.1 s at most (default
# 100), then goes on either way (the bench itself reports a balancer that never came up).
bench_wait() {
  local try
  for try in $(seq "${2:-100}"); do
    curl -sk -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 0
}
