#!/usr/bin/env bash
# The project's test command (README "Run the tests"). It installs what it
# needs on a fresh Debian machine (qemu-user for the arm64 masking tests) and
# runs every check CI runs. Traffic stays on loopback; every load test is
# bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS=${GOFLAGS:--buildvcs=false}

step() { printf '\n== %s\n' "$*"; }

step "format, vet, go.mod tidy, layering"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '/testdata/') || true)
if [ -n "$unformatted" ]; then
  echo "gofmt needed: $unformatted" >&2
  exit 1
fi
go vet ./...
go mod tidy -diff

step "js-libp2p peers: node, npm packages, chromium"
# Node interop tests in this module (kad-dht, circuit relay) and the nested
# bench/peers module need them; with SWARMGATE_REQUIRE_JS set a missing
# piece fails those tests instead of skipping them.
bash bench/peers/js/setup.sh
export SWARMGATE_REQUIRE_JS=1

step "tests: every package, under the race detector where goroutines meet"
# simd and mux are single-threaded sans-IO code whose heavy volumes take
# minutes under -race; bench and loadgen are measurement tools. They run
# without it; everything else (engine, libp2p, security's interop pumps,
# admission, the server, the layering test) runs with it.
norace='/(simd|mux|bench|loadgen)(/|$)'
go test -count=1 -race $(go list ./... | grep -Ev "$norace")
go test -count=1 $(go list ./... | grep -E "$norace")

step "fuzz: every target briefly"
bash .ci/fuzz.sh

step "simd: pure-Go build"
go test -count=1 -tags purego ./simd/...

step "simd: arm64 NEON under qemu-user"
if ! command -v qemu-aarch64 >/dev/null && ! command -v qemu-aarch64-static >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user) >/dev/null
  fi
fi
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
if [ -z "$qemu" ]; then
  echo "qemu-aarch64 is missing and could not be installed" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOARCH=arm64 go test -c -o "$tmp/simd.arm64.test" ./simd
"$qemu" "$tmp/simd.arm64.test" -test.count=1
GOARCH=arm64 go test -c -tags purego -o "$tmp/simd.arm64.purego.test" ./simd
"$qemu" "$tmp/simd.arm64.purego.test" -test.count=1

step "simd: generated assembly is up to date"
sh simd/_asm/check.sh

step "deploy: manifests, unit, Dockerfile, binary flags (nested module)"
(cd deploy && go vet ./... && go test -count=1 ./...)

step "real peers: go-libp2p host, nbio, js-libp2p in Node and Chromium (nested module)"
(cd bench/peers && go vet ./... && go test -count=1 ./...)
