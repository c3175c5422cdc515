"""An HTTPS backend that requires a client certificate signed by a given CA.

    python3 mtls_backend.py CERT KEY CLIENT_CA

Listens on 127.0.0.1 on a free port, prints that port on one line, then answers every
GET with 200 and the client certificate's common name in the body and in the
`X-Backend-Id` header (so a test can tell which identity limpet presented). A client
without a certificate the CA signed fails the handshake.
"""

import http.server
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        subject = dict(x[0] for x in self.connection.getpeercert()["subject"])
        body = subject.get("commonName", "").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend-Id", body.decode())
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    cert, key, client_ca = sys.argv[1:4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
