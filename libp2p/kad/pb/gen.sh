#!/bin/sh
# Regenerates dht.pb.go from dht.proto. Needs protoc and protoc-gen-go
# (see gen.go); run from this directory (go generate does). The file is
# registered as libp2p/kad/pb/dht.proto, relative to the module root.
set -eu
root=../../..
rec=$(go list -m -f '{{.Dir}}' github.com/libp2p/go-libp2p-record)
inc=$(mktemp -d)
trap 'rm -rf "$inc"' EXIT
mkdir -p "$inc/github.com/libp2p/go-libp2p-record/pb"
cp "$rec/pb/record.proto" "$inc/github.com/libp2p/go-libp2p-record/pb/"
protoc -I "$root" -I "$inc" --go_out="$root" --go_opt=paths=source_relative libp2p/kad/pb/dht.proto
