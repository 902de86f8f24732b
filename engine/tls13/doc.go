// Package tls13 is the TLS 1.3 record layer (RFC 8446 §5) of a connection
// whose handshake crypto/tls has finished. The connection then keeps only
// what the record layer needs: the two application traffic secrets, their
// IVs and sequence numbers, and two AEAD states (Conn: 224 bytes, plus
// 2×768 bytes for AES-GCM or 2×32 for ChaCha20-Poly1305, dropped by
// Release while idle). crypto/tls's tls.Conn, its buffers, exporter and
// resumption secrets are released. TLS 1.2 connections stay on crypto/tls.
//
// The package is sans-IO: Open decrypts one record in place in the
// caller's buffer (wire.ErrNeedMore for any incomplete record), AppendSeal
// and SealInPlace seal into the caller's outbound buffer, AppendAlert and
// AppendKeyUpdate write control records. It starts no goroutine and takes
// no lock. ARCHITECTURE.md ("TLS 1.3 after the handshake") says what the
// engine does with it.
//
// # Where the secrets come from
//
// crypto/tls does not export traffic secrets; it writes them to
// Config.KeyLogWriter in the NSS key log format. For each handshake the
// caller clones its tls.Config and sets KeyLogWriter to a new KeyLog, which
// parses CLIENT_TRAFFIC_SECRET_0 and SERVER_TRAFFIC_SECRET_0 into fixed
// arrays, ignores every other label (the handshake secrets, TLS 1.2's
// CLIENT_RANDOM), zeroes each line once parsed, and holds at most one
// partial line (200 bytes). KeyLog.Conn builds the Conn and wipes the
// capture. Because the writer belongs to one connection, no table
// correlates lines with connections; the alternative, one shared writer
// keyed by the ClientHello random, needs a map, a lock and an eviction rule
// for handshakes that fail after logging, for the same formatting cost.
// Both roles work the same way (the dialer already clones its config per
// dial).
//
// KeyLogWriter's documentation warns that it compromises security: it is
// meant for writing secrets to a file. Here nothing is written anywhere;
// the KeyLog holds, in process memory and for the length of one handshake,
// the two secrets crypto/tls itself holds for the life of the connection.
// KeyLog never returns an error (crypto/tls would abort the handshake);
// anything it cannot use (TLS 1.2, a line that does not parse, two client
// randoms) makes Conn return ErrNoSecrets, and the caller keeps crypto/tls
// for that connection.
//
// Cost per handshake, measured with BenchmarkKeyLog and
// BenchmarkConfigClone (CPU, this machine): crypto/tls's formatting of the
// four lines, which it does only when KeyLogWriter is set, 3.0–3.2 µs and
// 16 allocations; parsing 0.4–0.7 µs, no allocation; Conn (two traffic IV
// derivations with crypto/hkdf, the Conn itself) 4.0–5.7 µs, 21
// allocations; the Config clone 0.4–0.7 µs, 832 bytes. About 9 µs and 3.3
// KB of garbage in all, under 1% of the 0.9–1.3 ms of CPU a whole TLS 1.3
// handshake costs both ends in process (BenchmarkHandshake, where the
// difference is inside the noise). The AEAD keys are derived on first use.
//
// # Sequence numbers, and why tickets are disabled on the server
//
// New starts both sequence numbers at 0 (§5.3: "the first record
// transmitted under a particular traffic key MUST use sequence number 0").
// That is right only if crypto/tls has neither read nor written a record
// under the application keys, and getting it wrong is worse than a failed
// connection: sealing a second record at a sequence number crypto/tls
// already used reuses an AES-GCM nonce under the same key.
//
// Reading: crypto/tls reads up to the peer's Finished and stops. The
// engine's pipe hands it one whole record at a time (engine/tls.go
// recordEnd), so it holds no byte past that record, and crypto/tls itself
// refuses handshake bytes buffered across a key change (§5.1), so nothing
// after Finished sits in its handshake buffer. Records behind the Finished
// stay in the engine's buffer for Open, starting at 0. A client's first
// records are usually the server's NewSessionTickets, which Open consumes
// and ignores (this layer does not resume sessions).
//
// Writing: Go 1.26's client writes nothing under its application key
// during Handshake. Its server, in sendServerFinished
// (handshake_server_tls13.go), writes a NewSessionTicket in the same flight
// as its Finished, under server_application_traffic_secret_0 at sequence
// number 0, whenever session tickets are enabled and the client offered
// psk_dhe_ke — browsers always do, Go's client only with a
// ClientSessionCache — and in more than one record if the ticket grows past
// 2^14 bytes (WrapSession, client certificates). No API reports whether,
// or how many records, it wrote. So the server's per-handshake clone sets
// SessionTicketsDisabled, and its write sequence starts at 0.
// TestServerTicketShiftsSequence pins this behaviour on every Go upgrade:
// with a ticket the first record must be 1, without one 0.
//
// Cost of that choice: no TLS session resumption on /tls/ws, which would
// have spared a returning client's server the certificate signature (not
// the key exchange: resumption requires psk_dhe_ke). It also saves the
// ticket encryption and its record on every full handshake. And tickets
// from per-handshake clones would not resume anyway unless the listener's
// ticket keys are set explicitly (Config.Clone copies the automatic ticket
// keys, which the listener config, never used for a handshake itself,
// would not have yet; each clone would mint its own). If resumption is
// wanted later: set the keys with SetSessionTicketKeys on the listener
// config, count the tickets through a WrapSession that calls EncryptTicket
// (one record each while a ticket stays under 2^14 bytes), and start the
// write sequence after them.
//
// # What the record layer enforces
//
// Every MUST of RFC 8446 §5 and §6 that applies after the handshake is
// quoted beside its check in conn.go: outer type application_data and
// length at most 2^14+256 (record_overflow), inner plaintext at most
// 2^14+1 (record_overflow, decided from the header), AEAD failure
// (bad_record_mac), padding stripped and an all-zero plaintext refused
// (unexpected_message), empty handshake or alert records, handshake
// messages interleaved with other types or spanning a key change
// (unexpected_message), change_cipher_spec after the handshake, protected
// or not (unexpected_message), alerts (close_notify is a clean end and
// everything after it is ignored; any other alert, whatever its level, is
// a fatal Error with Remote set), KeyUpdate (§4.6.3: the read key moves;
// update_requested queues one KeyUpdate of ours, however many arrive,
// sealed before our next record), NewSessionTicket (ignored by a client,
// unexpected_message to a server), any other post-handshake message
// (unexpected_message), and at most 16 records in a row without
// application data, crypto/tls's own bound.
//
// Key usage limits: the write side sends a KeyUpdate (update_not_requested)
// before its sequence number reaches 2^24 records for AES-GCM (§5.5 allows
// 2^24.5) or 2^62 for ChaCha20-Poly1305, so it never wraps; crypto/tls
// never rekeys and panics at wraparound. The read side cannot rekey the
// peer's direction: it fails (internal_error) before its sequence number
// would wrap (§5.3: "it MUST either rekey (Section 4.6.3) or terminate the
// connection").
//
// Where this layer and crypto/tls differ, RFC 8446 decides: a protected
// change_cipher_spec is refused (crypto/tls drops it), the record version
// is ignored (§5.1 "MUST be ignored for all purposes"; crypto/tls refuses
// anything but 0x0303), user_canceled is an error (crypto/tls skips it).
//
// # Cipher suites
//
// The three TLS 1.3 suites crypto/tls negotiates: TLS_AES_128_GCM_SHA256,
// TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256 (the CCM suites are
// refused by New). Config.CipherSuites does not apply to TLS 1.3, and
// between two Go peers AES-128-GCM is chosen with AES hardware and
// ChaCha20-Poly1305 when the client lacks it (GODEBUG=cpu.aes=off
// simulates that); AES-256-GCM only with a non-Go peer. The differential
// tests force each suite through crypto/tls's go:linkname'd preference
// lists, as quic-go's tests do.
//
// # Cost per byte
//
// CPU per byte of 16 KiB records (BenchmarkSeal, BenchmarkOpen, thread
// CPU time; crypto-tls is tls.Conn Write and Read through a pipe shaped
// like the engine's). The machine is shared (load average 9 on 2 cores),
// so the figures are the best of 13 runs; medians are 0–40% higher, for
// both implementations alike:
//
//	ns/byte              seal: AppendSeal  SealInPlace  crypto/tls   open: Open  crypto/tls
//	AES-128-GCM                0.24        0.23         0.27              0.27      0.29 (+1 alloc)
//	AES-256-GCM                0.27        0.27         0.30              0.27      0.33 (+1 alloc)
//	ChaCha20-Poly1305          0.39        0.37         0.41              0.38      0.43 (+1 alloc)
//
// No allocation per record in steady state. The AEAD work is the same as
// crypto/tls's; what this layer removes is around it: crypto/tls's
// buffers, a copy each way through its tls.Conn, and its per-record
// allocation.
package tls13
