#!/usr/bin/env bash
# The side-by-side comparison: swarmgate against go-libp2p v0.51.0, nbio
# v1.6.7 and gorilla/websocket, loadgen as the common client, targets
# alternating. Writes the "comparison" section of bench/RESULTS.md and
# bench/charts/*.svg. Takes about 10 minutes on 2 cores; it holds the
# machine-wide benchmark lock so no other benchmark runs meanwhile.
#
#   bash bench/run.sh                  # full run (1,000 / 5,000 / 15,000 idle connections)
#   bash bench/run.sh -quick           # smoke run, prints instead of writing
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/bench/peers"
exec flock /tmp/swarmgate-bench.lock go run ./compare -root "$root" "$@"
