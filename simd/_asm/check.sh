#!/bin/sh
# Regenerates simd/mask_amd64.s from gen.go and fails if the committed file
# differs, so the assembly can only change through the generator.
# Usage (from anywhere): sh simd/_asm/check.sh
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go run . -out "$tmp/mask_amd64.s"
# The header names the output path the generator was given; compare the rest.
sed 1d ../mask_amd64.s >"$tmp/old"
sed 1d "$tmp/mask_amd64.s" >"$tmp/new"
if ! diff -u "$tmp/old" "$tmp/new"; then
	echo "simd/mask_amd64.s is stale: run 'go generate ./simd' and commit it" >&2
	exit 1
fi
echo "simd/mask_amd64.s is up to date"
