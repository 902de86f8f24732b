// Package mux is a sans-IO yamux (/yamux/1.0.0) session for an event-driven
// server: no goroutines, no blocking, no net.Conn, no timers. The wire format
// follows go-yamux (v4.0.2 and v5.1.0) and spec.md; the control flow is the
// engine's event loop.
//
// # Driving a session
//
// The engine owns one *Session per connection and calls it under its
// per-connection lock:
//
//	s := mux.NewServer(mux.Config{OnStream: onStream}, now)
//
//	// bytes arrived (plaintext after Noise), in any split:
//	pending = append(pending, plaintext...)
//	n, err := s.Input(pending, now)   // handlers run inside
//	pending = pending[:copy(pending, pending[n:])] // ≤ 11 bytes stay
//	if err != nil { /* write the output once more (GoAway), then close */ }
//
//	// whenever s.HasOutput():
//	out = s.AppendOutput(out[:0], maxPlaintext) // control frames first
//	// encrypt and send out; call again while HasOutput()
//
//	// timer wheel: one entry per session
//	next, err := s.Tick(now)          // keepalive; err: close
//
// Input consumes everything except a trailing partial header (< 12 bytes).
// Data payloads are delivered as they arrive, so a large frame is never
// buffered whole by either side.
//
// # Streams
//
// Inbound streams are announced through Config.OnStream; the embedder calls
// Stream.Accept(handler) (now or later) or Stream.Reset. Outbound streams come
// from Session.Open(handler). A Handler gets OnData (borrowed bytes, returns
// how many it consumed), OnWritable (a short Write may resume), OnFIN and
// OnReset. Stream.Write never blocks: it returns a short count and
// ErrWouldBlock when the peer's window or the session's output queue is
// full. Unconsumed bytes stay in the stream's receive buffer, which never
// exceeds the window we granted; window is granted back only as the
// embedder consumes (OnData's return, Discard, Read).
//
// Any call into the session or one of its streams (Input, Tick, Open,
// Stream.Write, CloseWrite, Reset, Read, Discard, Accept) may queue output:
// check HasOutput afterwards. Window updates for consumed bytes use the time
// of the last Input or Tick call.
//
// # Memory
//
// A session holds, at most: MaxOutput bytes of queued stream data (plus one
// 12-byte FIN per stream), MaxControlOutput bytes of control frames, and per
// stream no more unread bytes than the window it granted (InitialWindow, or
// up to MaxWindow once auto-tuned, within MaxWindowGrowth per session). The
// worst case with handlers that never consume is (streams) × 256 KiB +
// MaxWindowGrowth, where streams ≤ MaxStreams inbound plus the outbound
// streams the embedder opened (also ≤ MaxStreams): 1000 × 256 KiB + 16 MiB
// for peer-driven memory with the defaults; lower MaxStreams to lower it. Buffers come
// from size-class pools and are returned when empty, so an idle session
// (≈ 460 B) and an idle stream (≈ 170 B) hold none.
//
// # Limits
//
// Every limit has a named default (DefaultMaxStreams, DefaultAcceptBacklog,
// DefaultMaxWindow, DefaultMaxOutput, ...). A peer that breaks the protocol
// (data beyond the window, window overflow, SYN floods past
// DefaultMaxRefusedStreams, wrong stream IDs) gets GoAway(CodeProtocolError)
// and Input returns an *Error.
package mux
