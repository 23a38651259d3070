"""A plain gRPC server (no weft code): /weft.test.Echo/Who answers with its own name, Count
streams a number of messages 200 ms apart, Echo sends every message of a stream straight back.

Usage: grpc_backend.py HOST:PORT NAME
Uses grpcio's generic handlers, so no generated code or protoc is needed: request and response
are raw bytes.
"""
import sys
import time
from concurrent import futures

import grpc


def main():
    addr, name = sys.argv[1], sys.argv[2].encode()

    def who(request, context):
        return name

    def count(request, context):
        # Server streaming: int(request) messages NAME0, NAME1, ..., 200 ms apart.
        for i in range(int(request or b"0")):
            if i:
                time.sleep(0.2)
            yield name + str(i).encode()

    def echo(requests, context):
        # Bidirectional: every message straight back, as it comes.
        for message in requests:
            yield message

    handler = grpc.method_handlers_generic_handler(
        "weft.test.Echo",
        {
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Echo": grpc.stream_stream_rpc_method_handler(echo),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(addr) == 0:
        sys.exit(f"cannot bind {addr}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
