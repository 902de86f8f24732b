#!/usr/bin/env bash
# What a full libp2p connection over /ws costs the server, against the
# crypto floor measured in the same run (issue 16): rounds alternate the
# floor benchmark (one X25519 key generation, three X25519, one Ed25519
# verification: security's BenchmarkHandshake/floor, CPU time) with a
# `loadgen run -scenario connect` against a fresh `loadgen serve` (server
# CPU from /proc: WebSocket upgrade, multistream, Noise, yamux, one echo
# round trip, the identify the server opens). Each round also measures the
# transport floor: a do-nothing Go server making the same accept, reads and
# writes, of the same sizes and in the same order (bench/peers/tcpfloor), so
# the table shows what is left for our code once the crypto and the
# kernel's part of the connection are taken out. Holds the benchmark lock.
#
#   bash bench/setup-cost.sh              # N=3000 connections, 3 rounds
#   N=5000 ROUNDS=5 bash bench/setup-cost.sh
#   BIN=/path/to/other/loadgen bash bench/setup-cost.sh   # another build's server
set -euo pipefail
N=${N:-3000}
ROUNDS=${ROUNDS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/loadgen" ./loadgen && go test -c -o "$bin/security.test" ./security)
(cd "$root/bench/peers" && go build -o "$bin/tcpfloor" ./tcpfloor)
lg=${BIN:-$bin/loadgen}

floor() {
  "$bin/security.test" -test.run '^$' -test.bench 'BenchmarkHandshake/floor' -test.benchtime 3s |
    awk '/floor/ { for (i = 1; i <= NF; i++) if ($(i+1) == "cpu-µs/handshake") print $i }'
}

transport() {
  "$bin/tcpfloor" -n "$N" | awk '$2 == 0 { print $1 }'
}

connect() {
  "$lg" serve -listen /ip4/127.0.0.1/tcp/0/ws -echo -metrics 127.0.0.1:0 \
    -max-conns-per-peer -1 -max-peer-streams -1 -max-protocol-streams -1 >"$bin/out" 2>"$bin/err" &
  local pid=$!
  for _ in $(seq 100); do [ -s "$bin/out" ] && grep -q metrics_url "$bin/err" && break; sleep 0.1; done
  local addr metrics
  addr=$(head -n1 "$bin/out")
  metrics=$(grep -o 'metrics_url=[^ ]*' "$bin/err" | head -n1 | cut -d= -f2)
  "$lg" run -target "$addr" -stack ws+noise -scenario connect -connect-n "$N" -duration 1s \
    -server-pid "$pid" -server-metrics "$metrics" -profiles none -json "$bin/r.json" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "import json; r = json.load(open('$bin/r.json'))['results'][0]; print(r['metrics']['server_cpu_us_per_conn'], r['errors'])"
}

echo "| round | crypto floor (cpu-µs) | transport floor (µs) | server CPU per connection (µs) | ratio to crypto floor | left for our code (µs) | errors |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
exec 9>/tmp/swarmgate-bench.lock
flock 9
for r in $(seq "$ROUNDS"); do
  f=$(floor)
  t=$(transport)
  read -r s errs < <(connect)
  printf '| %d | %.0f | %.0f | %.0f | %.2f× | %.0f | %d |\n' "$r" "$f" "$t" "$s" "$(python3 -c "print($s / $f)")" "$(python3 -c "print($s - $f - $t)")" "$errs"
done
