#!/usr/bin/env bash
# Runs every fuzz target of the main module briefly (FUZZTIME each, 10s by
# default) on top of its seed corpus. The seeds alone already run as unit
# tests in `go test`; this adds coverage-guided inputs. A failing input is
# written under the package's testdata/fuzz/ by the Go tool: commit it as a
# regression seed once the bug is fixed.
#
# Every new coverage-increasing input is minimized first, for up to 60 s by
# default; for the targets that cost milliseconds per input (loopback
# connections with a Noise handshake, Noise initiators) that would take the
# whole run, so minimization is capped at FUZZMINIMIZE executions per input.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
minimize=${FUZZMINIMIZE:-10x}
n=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  ls "$dir"/*_test.go >/dev/null 2>&1 || continue
  grep -qh '^func Fuzz' "$dir"/*_test.go || continue
  for target in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/'); do
    echo "fuzz: $pkg $target ($fuzztime)"
    run() { go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "$pkg" >/tmp/fuzz.$$.log 2>&1; }
    if ! run; then
      # Go's coordinator sometimes ends a run with "context deadline
      # exceeded" and no failing input when fuzztime expires while a worker
      # is mid-input (a tooling flake, not a finding): run that target once
      # more. A real failure writes its input and fails again.
      if grep -q 'context deadline exceeded' /tmp/fuzz.$$.log && ! grep -q 'Failing input written' /tmp/fuzz.$$.log; then
        echo "fuzz: $target ended with the coordinator's deadline and no failing input; running it again"
        run || { cat /tmp/fuzz.$$.log; exit 1; }
      else
        cat /tmp/fuzz.$$.log
        exit 1
      fi
    fi
    n=$((n + 1))
  done
done
rm -f /tmp/fuzz.$$.log
echo "fuzz: $n targets, $fuzztime each"
