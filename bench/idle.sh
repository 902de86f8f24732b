#!/usr/bin/env bash
# Idle raw WebSocket connections: what each one costs a server, measured from
# outside (resident memory from /proc/PID/status, goroutines from the
# server's /metrics), swarmgate (`loadgen serve`) against a gorilla/websocket
# goroutine-per-connection echo server, alternating so drift hits both.
# Before each RSS reading both servers are asked for two garbage collections
# through their pprof endpoints, so the figure is the steady idle state, not
# the garbage of the connection storm.
#
#   bench/idle.sh            # N=10000 connections, 2 rounds
#   N=5000 ROUNDS=1 bench/idle.sh
#   TLS=1 N=5000 bench/idle.sh   # also swarmgate on /tls/ws (self-signed on
#                                # loopback): raw wss echo and wss+noise+yamux
set -euo pipefail
N=${N:-10000}
ROUNDS=${ROUNDS:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/loadgen" ./loadgen)
(cd "$root/bench/peers" && go build -o "$bin/gorilla-echo" ./gorilla-echo)

# start NAME CMD...: runs a server, waits for its first stdout line (the
# listen multiaddr) and sets addr, pid and metrics.
start() {
  local name=$1; shift
  "$@" >"$bin/$name.out" 2>"$bin/$name.err" &
  pid=$!
  for _ in $(seq 100); do [ -s "$bin/$name.out" ] && break; sleep 0.1; done
  addr=$(head -n1 "$bin/$name.out")
  metrics=$(grep -o 'metrics_url=[^ ]*' "$bin/$name.err" | head -n1 | cut -d= -f2 || true)
}

echo "| server | connections | RSS per conn (B) | RSS added (MiB) | goroutines per conn | connect time |"
echo "|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  start swarmgate "$bin/loadgen" serve -listen /ip4/127.0.0.1/tcp/0/ws -ws-echo /echo -metrics 127.0.0.1:0
  "$bin/loadgen" idle -target "$addr" -path /echo -n "$N" -server-pid "$pid" -server-metrics "$metrics" -server-gc "${metrics%/metrics}/debug/pprof/heap?gc=1" -name swarmgate
  kill "$pid"; wait "$pid" 2>/dev/null || true

  if [ "${TLS:-0}" = 1 ]; then
    # TLS handshakes cost CPU on both ends of loopback: 64 in flight keeps
    # the server under its handshake cap.
    for stack in ws libp2p; do
      start "swarmgate-tls-$stack-$round" "$bin/loadgen" serve -listen /ip4/127.0.0.1/tcp/0/tls/ws -ws-echo /echo -metrics 127.0.0.1:0 \
        -max-conns-per-peer -1 -max-peer-streams -1  # loadgen idle is one peer ID for all its connections
      "$bin/loadgen" idle -target "$addr" -path /echo -n "$N" -par 64 -stack "$stack" -server-pid "$pid" -server-metrics "$metrics" -server-gc "${metrics%/metrics}/debug/pprof/heap?gc=1" -name "swarmgate /tls/ws $stack"
      kill "$pid"; wait "$pid" 2>/dev/null || true
    done
  fi

  start gorilla "$bin/gorilla-echo"
  port=${addr##*/tcp/}; port=${port%%/*}
  "$bin/loadgen" idle -target "$addr" -path /echo -n "$N" -server-pid "$pid" -server-metrics "http://127.0.0.1:$port/metrics" -server-gc "http://127.0.0.1:$port/debug/pprof/heap?gc=1" -name gorilla
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
