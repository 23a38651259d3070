#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: weft-proxy and nginx
# (and HAProxy) side by side. Unlike time, instruction counts repeat exactly run to run, whatever
# else the machine does, so small data-path changes show up here before they show in proxy-bench.
# Kernel work (loopback, wake-ups) is not counted; MODE=syscalls counts the system calls per
# request instead (strace), which is what a proxy asks of the kernel.
#
# Needs valgrind (or strace), nginx, haproxy, curl and release builds: cargo build --release --bins
# Usage: [KEEP=dir] [MODE=syscalls] [HOP=h2-upstream|h2-client] benches/instructions.sh [requests]
# (default 2000; each proxy is run twice, with requests/4 and requests, and the difference divided,
# so start-up and config cost cancel out). HOP measures weft-proxy alone on one side of the HTTP/2
# hop between sidecars, without TLS (which costs an HTTP/1.1 hop alike): h2-upstream, HTTP/1.1 in
# and HTTP/2 (h2c, prior knowledge) to the origin, as the near sidecar; h2-client, HTTP/2 in and
# HTTP/1.1 to the origin, as the far one (the client is Python's h2 package, `pip install h2`:
# curl 7.88 cannot reuse an h2c connection for a second request).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
HOP=${HOP:-}
SMALL=$((N / 4))
BIN=target/release
TMP=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 400); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on port $1" >&2; return 1; }

BODY=$(head -c 1024 /dev/zero | tr '\0' x)
ORIGIN=$(port)
cat > "$TMP/origin.conf" <<EOF
daemon off; worker_processes 1; pid $TMP/origin.pid; error_log $TMP/origin.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN$([ "$HOP" = h2-upstream ] && echo " http2"); location / { return 200 '$BODY'; } } }
EOF
nginx -c "$TMP/origin.conf" -e "$TMP/origin.err" & pids+=($!)
wait_port "$ORIGIN"

# The control plane, with one explicit listener per run pointing at the origin.
XDS=$(port)
mkdir "$TMP/reg"
mesh() {
  cat > "$TMP/reg/mesh.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: bench-0, namespace: b, labels: {app: bench}}
spec: {containers: [{name: c}]}
status: {podIP: 127.0.0.9}
---
apiVersion: weft.io/v1alpha1
kind: Sidecar
metadata: {name: s, namespace: b}
spec: {outboundListeners: [{bind: "127.0.0.1:$1", service: origin, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: origin, namespace: b}
spec: {clusterIP: 127.99.0.1, ports: [{name: $PORT_NAME, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: origin-a, namespace: b, labels: {kubernetes.io/service-name: origin}}
addressType: IPv4
ports: [{name: $PORT_NAME, port: $ORIGIN}]
endpoints: [{addresses: ["127.0.0.1"]}]
EOF
}
PORT_NAME=$([ "$HOP" = h2-upstream ] && echo http2 || echo http)
mesh 1
"$BIN/weft" serve --registry "$TMP/reg" --xds-addr "127.0.0.1:$XDS" --admin-addr "127.0.0.1:$(port)" 2>"$TMP/cp.log" & pids+=($!)
wait_port "$XDS"

# HTTP/2 (h2c, prior knowledge) requests one after another on one connection: port, count.
cat > "$TMP/h2load.py" <<'EOF'
import socket, sys
import h2.config, h2.connection, h2.events
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
c.initiate_connection()
s.sendall(c.data_to_send())
for _ in range(n):
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "GET"), (":path", "/bench"), (":scheme", "http"),
                         (":authority", "127.0.0.1:%d" % port), ("user-agent", "h2load"),
                         ("accept", "*/*")], end_stream=True)
    s.sendall(c.data_to_send())
    ended = False
    while not ended:
        data = s.recv(65536)
        if not data:
            sys.exit("connection closed")
        for e in c.receive_data(data):
            if isinstance(e, h2.events.DataReceived):
                c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                ended = True
            elif isinstance(e, h2.events.StreamReset):
                sys.exit("stream reset")
        s.sendall(c.data_to_send())
c.close_connection()
s.sendall(c.data_to_send())
EOF

# Sends $2 keep-alive requests to port $1 over one connection.
load() {
  if [ "$HOP" = h2-client ]; then python3 "$TMP/h2load.py" "$1" "$2"; return; fi
  local urls=()
  for _ in $(seq "$2"); do urls+=("http://127.0.0.1:$1/bench"); done
  curl -sS "${urls[@]}" >/dev/null
}

# Instructions of one run: starts the proxy under callgrind ($1 name, $2 port, rest: command),
# sends the requests, stops it gracefully and reads the total. MODE=syscalls: the proxy runs
# plainly and strace, attached after the warm-up, counts its system calls.
run() {
  local name=$1 listen=$2 n=$3; shift 3
  local out="$TMP/$name.$n.cg"
  if [ "${MODE:-}" = syscalls ]; then
    "$@" >"$TMP/$name.log" 2>&1 &
  else
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$TMP/$name.log" 2>&1 &
  fi
  local pid=$!
  wait_port "$listen" || { cat "$TMP/$name.log" >&2; return 1; }
  load "$listen" 20          # warm: pools, lazy init
  if [ "${MODE:-}" = syscalls ]; then
    strace -f -c -p "$pid" -o "$out" 2>/dev/null & local tracer=$!
    sleep 0.5                # attached before the load
    load "$listen" "$n"
    kill -INT "$tracer"; wait "$tracer" || true
    kill -TERM "$pid"; wait "$pid" || true
    [ -n "${KEEP:-}" ] && cp "$out" "$KEEP/$name.$n.strace"   # the per-call breakdown
    awk '$NF == "total" { print $(NF - 2) }' "$out"
    return
  fi
  load "$listen" "$n"
  kill -TERM "$pid"; wait "$pid" || true
  [ -n "${KEEP:-}" ] && cp "$out" "$KEEP/"   # KEEP=dir keeps the profiles for callgrind_annotate
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

per_request() { # name, make-command function
  local name=$1 make=$2 a b p
  p=$(port); a=$(run "$name" "$p" "$SMALL" $($make "$p"))
  p=$(port); b=$(run "$name" "$p" "$N" $($make "$p"))
  awk -v a="$a" -v b="$b" -v n=$((N - SMALL)) 'BEGIN { d = (b - a) / n; printf (d < 100 ? "%.2f\n" : "%d\n"), d }'
}

weft_cmd() {
  mesh "$1"
  echo "$BIN/weft-proxy --xds-addr 127.0.0.1:$XDS --node-id bench-0.b --admin-addr 127.0.0.1:$(port) --health-addr 127.0.0.1:$(port) --outbound-capture-addr 127.0.0.1:$(port) --inbound-capture-addr 127.0.0.1:$(port) --log warn"
}
nginx_cmd() {
  cat > "$TMP/proxy-$1.conf" <<EOF
daemon off; master_process off; pid $TMP/proxy-$1.pid; error_log $TMP/proxy-$1.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server { listen 127.0.0.1:$1; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
  echo "nginx -c $TMP/proxy-$1.conf -e $TMP/proxy-$1.err"
}
haproxy_cmd() {
  printf 'global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:%s\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 127.0.0.1:%s\n' "$1" "$ORIGIN" > "$TMP/haproxy-$1.cfg"
  echo "haproxy -f $TMP/haproxy-$1.cfg -db"
}

if [ "${MODE:-}" = syscalls ]; then what="system calls per request (strace)"; else what="user-space instructions per request (callgrind)"; fi
case "$HOP" in
  h2-upstream) hop="HTTP/1.1 keep-alive in, HTTP/2 (h2c) to the origin" ;;
  h2-client) hop="HTTP/2 (h2c, one connection) in, HTTP/1.1 keep-alive to the origin" ;;
  *) hop="HTTP/1.1 keep-alive" ;;
esac
echo "# $what, $hop, 1 KB responses, $((N - SMALL)) requests"
w=$(per_request weft-proxy weft_cmd); echo "weft-proxy $w"
# nginx proxies to HTTP/2 upstreams only for gRPC, and HAProxy's HTTP/2 is another program: the
# HTTP/2 hops are compared with weft-proxy's own HTTP/1.1 figure.
[ -n "$HOP" ] && exit 0
g=$(per_request nginx nginx_cmd); echo "nginx      $g"
if command -v haproxy >/dev/null; then h=$(per_request haproxy haproxy_cmd); echo "haproxy    $h"; fi
awk -v w="$w" -v g="$g" 'BEGIN { printf "weft-proxy / nginx: %.2fx\n", w / g }'
