#!/usr/bin/env python3
"""Memory of idle client connections: opens N connections to a running limpet, each
idle (no request yet) or kept alive after one request, and prints the process's RSS per
connection, then its RSS after the connections closed, against its RSS before.

    scripts/idle-flood.py PORT PID N {idle|keepalive|tls-idle|tls-keepalive} [SECONDS_AFTER ...]

The tls- modes complete a TLS handshake first (any certificate accepted).
"""
import socket
import ssl
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit(f"no process {pid}")


def main():
    port, pid, n, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    after = [int(a) for a in sys.argv[5:]] or [5, 60]
    before = rss_kib(pid)
    socks = []
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if mode.startswith("tls-"):
            s = tls.wrap_socket(s, server_hostname="bench.test")
        if mode.endswith("keepalive"):
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        socks.append(s)
    if mode.endswith("keepalive"):
        for s in socks:
            seen = b""
            while b"\r\n\r\n" not in seen:
                chunk = s.recv(65536)
                if not chunk:
                    raise SystemExit("connection closed before its response")
                seen += chunk
    # Let the last accepts and responses settle (RSS is read, not waited on).
    time.sleep(2)
    full = rss_kib(pid)
    per = (full - before) * 1024 / n
    print(f"{mode:13} connections={n} rss_before={before}KiB rss_open={full}KiB per_connection={per / 1024:.1f}KiB")
    for s in socks:
        s.close()
    waited = 0
    for t in after:
        time.sleep(t - waited)
        waited = t
        now = rss_kib(pid)
        print(f"{mode:13}   {t}s after closing: rss={now}KiB ({now / before:.2f}x before)")


main()
