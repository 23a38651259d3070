"""A plain gRPC server (no weft code) that answers /weft.test.Echo/Who with its own name.

Usage: grpc_backend.py HOST:PORT NAME
Uses grpcio's generic handlers, so no generated code or protoc is needed: request and response
are raw bytes.
"""
import sys
from concurrent import futures

import grpc


def main():
    addr, name = sys.argv[1], sys.argv[2].encode()

    def who(request, context):
        return name

    handler = grpc.method_handlers_generic_handler(
        "weft.test.Echo",
        {"Who": grpc.unary_unary_rpc_method_handler(who)},
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
