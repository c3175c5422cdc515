"""A real gRPC server and client (grpcio) for limpet's end-to-end tests, without
generated code: methods take and return raw bytes.

    sticky.py serve ID PORT      serve /limpet.Echo/Who (unary: "ID") and
                                 /limpet.Echo/Count (server streaming: "ID:0".."ID:N-1")
                                 on 127.0.0.1:PORT over h2c until killed
    sticky.py call ADDR SESSION N   one unary call and one streaming call of N
                                 messages through ADDR with metadata x-session-id:
                                 SESSION; prints the backend ids it saw, one per line
"""
import sys
from concurrent import futures

import grpc


def serve(ident, port):
    def who(request, context):
        return ident.encode()

    def count(request, context):
        for i in range(int(request.decode() or "3")):
            yield f"{ident}:{i}".encode()

    handler = grpc.method_handlers_generic_handler(
        "limpet.Echo",
        {
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "Count": grpc.unary_stream_rpc_method_handler(count),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def call(addr, session, n):
    with grpc.insecure_channel(addr) as channel:
        metadata = (("x-session-id", session),)
        who = channel.unary_unary("/limpet.Echo/Who")
        print(who(b"", metadata=metadata, timeout=10).decode())
        count = channel.unary_stream("/limpet.Echo/Count")
        seen = [m.decode() for m in count(str(n).encode(), metadata=metadata, timeout=10)]
        assert len(seen) == n, seen
        for m in seen:
            print(m.split(":")[0])


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        call(sys.argv[2], sys.argv[3], int(sys.argv[4]))
