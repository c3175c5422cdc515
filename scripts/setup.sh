#!/usr/bin/env bash
# Installs what limpet's build and tests need on a Debian/Ubuntu machine that has only a
# Rust toolchain: used by `make run` (scripts/setup.sh run), `make test` (scripts/setup.sh
# test) and CI. As root it installs with apt-get (and pip, for the gRPC test's Python
# client); otherwise it prints the one command to run and stops.
set -euo pipefail
what=${1:-test}
min_rust=1.88

have_rust=$(rustc --version 2>/dev/null | awk '{print $2}') || true
if [ -z "$have_rust" ]; then
  echo "limpet needs Rust $min_rust or newer: https://rustup.rs (curl https://sh.rustup.rs -sSf | sh)" >&2
  exit 1
fi
if [ "$(printf '%s\n%s\n' "$min_rust" "$have_rust" | sort -V | head -1)" != "$min_rust" ]; then
  echo "limpet needs Rust $min_rust or newer (found $have_rust): rustup update stable" >&2
  exit 1
fi

need=()
want() { command -v "$1" >/dev/null || need+=("$2"); }
want cmake cmake              # Pingora builds zlib-ng with CMake
want cc gcc
want make make
want curl curl                # make run prints curl commands; tests drive curl
if [ "$what" = test ]; then
  want redis-server redis-server   # the session-store tests start their own Redis
  want openssl openssl             # TLS tests make certificates and use s_client
  want python3 python3             # the gRPC test's server and client
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
  want chromium chromium           # the browser test: headless Chromium over HTTPS and HTTP/2
  want promtool prometheus         # /metrics and the alert rules are checked with promtool
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]}; install them with:" >&2
    echo "  sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

# Python test clients: grpcio (the gRPC test) and kubernetes-validate (offline schema
# checks of deploy/kubernetes).
if [ "$what" = test ]; then
  pip_need=()
  python3 -c 'import grpc' 2>/dev/null || pip_need+=(grpcio)
  command -v kubernetes-validate >/dev/null || pip_need+=(kubernetes-validate)
  if [ ${#pip_need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] || [ -n "${VIRTUAL_ENV:-}" ]; then
      echo "setup: installing ${pip_need[*]} (pip)"
      python3 -m pip install --quiet "${pip_need[@]}" 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages "${pip_need[@]}"
    else
      echo "setup: the tests need ${pip_need[*]}; install with:" >&2
      echo "  python3 -m pip install --user ${pip_need[*]}" >&2
      exit 1
    fi
  fi
fi
