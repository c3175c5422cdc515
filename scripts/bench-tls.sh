#!/usr/bin/env bash
# make bench (TLS part): limpet's TLS listener against HAProxy's, same ECDSA P-256
# certificate, one worker thread each, in front of the shared harness's nginx backends,
# in one run. For each: full handshakes (openssl s_time -new), resumed handshakes
# (s_time -reuse), CPU per request on kept-alive TLS connections (wrk over https), and
# HTTP/2 requests (h2load). CPU figures are the balancer's own user+system time from
# /proc, divided by the handshakes or requests done.
#
# TLS_LIBS=1 adds the smallest Pingora TLS proxy (bench/tls-libs: round robin, no logic)
# built twice, with Pingora's OpenSSL backend (OpenSSL 3.6 built from source) and with
# its rustls backend, to compare the TLS libraries alone; the first build takes ~10 min.
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${BENCH_HARNESS:-../shared/bench}
secs=${SECS:-5}
. scripts/bench-config.sh
bench_start "apt-get install haproxy nginx-light wrk nghttp2-client openssl bc" haproxy nginx wrk h2load openssl bc
limpet=${LIMPET_BIN:-target/release/limpet}

bench_cert
cat "$dir/cert.pem" "$dir/key.pem" > "$dir/haproxy.pem"

cat > "$dir/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4000
    tune.ssl.default-dh-param 2048
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:18490 ssl crt $dir/haproxy.pem alpn h2,http/1.1
    default_backend be
backend be
    balance roundrobin
    cookie SRVID insert indirect nocache httponly maxlife 15m
    http-reuse always
    server s1 127.0.0.1:18081 cookie s1
    server s2 127.0.0.1:18082 cookie s2
    server s3 127.0.0.1:18083 cookie s3
    server s4 127.0.0.1:18084 cookie s4
CFG
bench_config 127.0.0.1:18493 127.0.0.1:19493 "{ cert: $dir/cert.pem, key: $dir/key.pem }" > "$dir/limpet.yaml"

nginx -c "$(cd "$harness" && pwd)/backends.nginx.conf" & pids+=($!)
haproxy -f "$dir/haproxy.cfg" -db 2>"$dir/haproxy.log" & pids+=($!); hap=$!
LIMPET_LOG=warn "$limpet" --config "$dir/limpet.yaml" --upgrade-sock "$dir/u.sock" 2>"$dir/limpet.log" & pids+=($!); lim=$!
entries=("haproxy 18490 $hap" "limpet 18493 $lim")
ports="18490 18493"
if [ "${TLS_LIBS:-0}" = 1 ]; then
  port=18494
  for lib in openssl rustls; do
    (cd bench/tls-libs && cargo build -q --release --locked --features $lib --target-dir "../../target/tls-libs/$lib")
    target/tls-libs/$lib/release/tls-proxy 127.0.0.1:$port "$dir/cert.pem" "$dir/key.pem" \
      127.0.0.1:18081 127.0.0.1:18082 127.0.0.1:18083 127.0.0.1:18084 2>"$dir/$lib.log" & pids+=($!)
    entries+=("pingora-$lib $port $!")
    ports="$ports $port"
    port=$((port + 1))
  done
fi
for port in $ports; do
  bench_wait "https://127.0.0.1:$port/"
done

tck=$(getconf CLK_TCK)
cpu() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }
us_per() { echo "scale=1; ($2-$1)*1000000/$tck/$3" | bc; }

echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores; SECS=$secs; ECDSA P-256, TLS 1.3"
for round in 1 2 3; do
  for entry in "${entries[@]}"; do
    set -- $entry; name=$1 port=$2 pid=$3
    # Full handshakes: a new TLS session per connection, one request each.
    c0=$(cpu "$pid")
    out=$(openssl s_time -connect "127.0.0.1:$port" -new -time "$secs" -www / 2>/dev/null)
    c1=$(cpu "$pid")
    n=$(echo "$out" | awk '/connections in/ && /real/ {print $1; exit}')
    full_rate=$(echo "$out" | awk '/connections\/user sec/ {print $1; exit}')
    full=$(us_per "$c0" "$c1" "${n:-1}")
    # Resumed handshakes.
    c0=$(cpu "$pid")
    out=$(openssl s_time -connect "127.0.0.1:$port" -reuse -time "$secs" -www / 2>/dev/null)
    c1=$(cpu "$pid")
    n=$(echo "$out" | awk '/connections in/ && /real/ {n=$1} END {print n}')
    resumed=$(us_per "$c0" "$c1" "${n:-1}")
    # Kept-alive TLS connections, HTTP/1.1.
    c0=$(cpu "$pid")
    out=$(wrk -t1 -c64 -d"${secs}s" "https://127.0.0.1:$port/")
    c1=$(cpu "$pid")
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    ka=$(us_per "$c0" "$c1" "$reqs")
    # HTTP/2: 8 connections, 16 streams each.
    c0=$(cpu "$pid")
    out=$(h2load -D "$secs" -c 8 -m 16 -t 1 "https://127.0.0.1:$port/" 2>/dev/null)
    c1=$(cpu "$pid")
    h2reqs=$(echo "$out" | awk '/^requests:/{print $8}')
    h2rps=$(echo "$out" | awk '/^finished in/{print $4}')
    h2=$(us_per "$c0" "$c1" "${h2reqs:-1}")
    printf '%-16s round %s  full: %s conn/user-s, %s us/handshake  resumed: %s us  keep-alive h1: %s us/req  h2: %s req/s, %s us/req\n' \
      "$name" "$round" "${full_rate:-?}" "$full" "$resumed" "$ka" "${h2rps:-?}" "$h2"
  done
done
