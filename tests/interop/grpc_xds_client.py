"""gRPC's own proxyless xDS client (grpcio, no weft code) resolving a target through weft.

Usage: GRPC_XDS_BOOTSTRAP=bootstrap.json grpc_xds_client.py TARGET CALLS
Calls /weft.test.Echo/Who CALLS times on xds:///TARGET and prints a JSON object
{backend name: count}. Exits non-zero if the channel never becomes usable.
"""
import collections
import json
import sys

import grpc


def main():
    target, calls = sys.argv[1], int(sys.argv[2])
    channel = grpc.insecure_channel(f"xds:///{target}")
    who = channel.unary_unary("/weft.test.Echo/Who")
    counts = collections.Counter()
    for _ in range(calls):
        counts[who(b"", timeout=10, wait_for_ready=True).decode()] += 1
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
