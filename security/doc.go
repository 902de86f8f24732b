// Package security implements the libp2p security handshakes of swarmgate as
// sans-IO state machines: Noise (Noise_XX_25519_ChaChaPoly_SHA256 with the
// libp2p handshake payload, https://github.com/libp2p/specs/tree/master/noise)
// and, for tests and trusted networks only, /plaintext/2.0.0.
//
// Nothing here performs I/O, starts a goroutine or reads a clock. A machine
// is driven by an event loop:
//
//	out = h.Start(out)                  // initiator: first message
//	out, n, err = h.Input(out, in)      // bytes that arrived; append answers to out
//	in = in[n:]                         // unconsumed bytes stay with the caller
//
// Input consumes only whole handshake messages. A partial message is left
// unconsumed and must be presented again, with more bytes appended, on the
// next call; the machine keeps no reference to in after Input returns. After
// Done, the unconsumed bytes are the first transport frames (the peer may
// pipeline them behind its last handshake message) and belong to the
// caller. Handshake deadlines (go-libp2p: 15 s for the whole upgrade) are the
// caller's business.
//
// Failures are *Error values with a stable Reason token for metrics.
package security
