"""Small real servers for capture tests, run inside network namespaces.

  backend.py http HOST PORT NAME    HTTP/1.1 server answering every GET with NAME (after
                                    0.3 s under /slow), saying in x-seen-* headers the
                                    version, Host and Upgrade it was asked with
  backend.py banner HOST PORT TEXT  server-first TCP: sends TEXT, then echoes what it receives
  backend.py ws HOST PORT PREFIX    WebSocket server echoing each message with PREFIX
Prints "ready" once listening.
"""
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def http(host, port, name):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path.startswith("/slow"):
                time.sleep(0.3)
            body = name.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.send_header("x-backend", name)
            self.send_header("x-seen-version", self.request_version)
            self.send_header("x-seen-host", self.headers.get("host", ""))
            self.send_header("x-seen-upgrade", self.headers.get("upgrade", ""))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = Server((host, port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def banner(host, port, text):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(text.encode() + b"\n")
            while True:
                data = self.request.recv(4096)
                if not data:
                    return
                self.request.sendall(data)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer((host, port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def ws(host, port, prefix):
    from websockets.sync.server import serve

    def echo(conn):
        for message in conn:
            conn.send(prefix + message)

    with serve(echo, host, port) as server:
        print("ready", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    mode, host, port, arg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    {"http": http, "banner": banner, "ws": ws}[mode](host, port, arg)
