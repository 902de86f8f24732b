// Package pb holds the generated Go types of the /ipfs/kad/1.0.0 message
// (dht.proto). Nothing here is written by hand.
//
// Generated with protoc 3.21.12 (Debian protobuf-compiler) and
// protoc-gen-go v1.36.12 (the google.golang.org/protobuf version in go.mod:
// go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12).
// gen.sh puts go-libp2p-record's record.proto on the include path at the
// import path it is registered under.
package pb

//go:generate ./gen.sh
