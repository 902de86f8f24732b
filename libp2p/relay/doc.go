// Package relay is a circuit relay v2 (libp2p/specs relay/circuit-v2.md)
// for swarmgate: the /libp2p/circuit/relay/0.2.0/hop server, which holds
// reservations and splices circuits, and our client role (reserve, connect,
// accept stop) for tests and loadgen. It is wire-compatible with go-libp2p
// v0.51 and js-libp2p (protocol-notes-kad-relay.md §2) and event-driven:
// no goroutine per reservation, circuit or stream.
//
// # Layers
//
//   - msg.go: framing (uvarint-delimited, ≤ MaxMessageSize) over
//     go-libp2p's generated protobufs; ParseHop/ParseStop are incremental
//     (wire.ErrNeedMore) and leave the bytes behind a message alone.
//   - store.go: Store, the reservations and circuit counts (a leaf mutex).
//   - service.go: Service, the hop server's decisions without I/O
//     (RESERVE replies with voucher and addresses, CONNECT's checks in
//     go-libp2p's order), and its metrics (metrics.go).
//   - splice.go: the byte pipe between two streams of two connections.
//   - relay.go and client.go: the libp2p binding, the only files that
//     import libp2p (Host.Handle, Host.Notify, PeerConn.{Post, OpenStream,
//     After, StopTimer}).
//
// # A circuit
//
//	source ──hop: CONNECT──▶ relay (source's lock)
//	                            Service.Connect: checks, counts the circuit
//	                            Post(openStop) ──▶ destination's connection
//	                                         (its lock) opens stop on the
//	                                         reserving connection, never
//	                                         dials; STOP CONNECT{peer, limit}
//	destination ──stop: STATUS OK──▶ (destination's lock)
//	                            Post(spliceSource) ──▶ source's connection:
//	                            hop STATUS OK{limit}, then bytes flow
//
// Bytes the source sent behind its CONNECT, and bytes the destination sent
// behind its STATUS (possibly in the same read), stay in their streams'
// receive buffers and are relayed after both OKs: the hop OK is posted to
// the source's connection before any relayed chunk, and posts to one
// connection run in order.
//
// # Locks
//
// Each connection's callbacks run under that connection's lock. Code here
// never holds two: work for the other connection of a circuit is posted to
// its mailbox (libp2p.PeerConn.Post, engine.Conn.Post), which runs it under that lock either
// when the lock's current holder finishes its callback or on a goroutine
// started for an idle connection. The only other locks taken from a
// callback are leaves (the store's mutex, the mailbox's queue), never held
// while taking anything else. So there is no lock order and no deadlock
// between two connections relaying to each other on two netpoll workers.
//
// # Memory
//
// A reservation is a slot in the store's map (≈ 65–110 B, measured by
// BenchmarkStoreMemory at 10k and 100k); the peer ID's bytes are the
// connection's own, and the end of its connection is learnt from the
// host's Notifiee, which costs nothing per connection. A circuit
// that moves no bytes holds its small state and no buffer; one that moves
// bytes holds at most one ChunkSize buffer per direction, and the yamux
// windows bound the rest.
//
// # Limits
//
// Every limit is a named default in config.go with its reason: total
// reservations, per source (IPv4 address, IPv6 /56, loopback exempt),
// circuits in total and per peer, and the per-circuit duration and data
// (2 minutes, 128 KiB per direction), announced in Limit and enforced: past
// either, both streams are reset (the byte boundary is documented in
// splice.go).
package relay
