package mux

import (
	"time"

	"github.com/swarmgate/swarmgate/internal/bufpool"
)

// InitialWindow is the per-stream, per-direction flow-control window both
// sides assume at stream open without any exchange (spec.md "Flow Control":
// 256 KiB). It is not configurable: a smaller value would be a protocol
// violation by us, a larger one is granted with window updates.
const InitialWindow = 256 << 10

// Default limits. Each one bounds what a peer can make us hold.
const (
	// DefaultMaxStreams bounds live inbound streams and, separately, live
	// outbound streams. go-yamux MaxIncomingStreams and js-yamux
	// maxInboundStreams default to 1000. Worst-case buffered receive memory
	// is MaxStreams × InitialWindow if handlers never consume.
	DefaultMaxStreams = 1000

	// DefaultAcceptBacklog bounds inbound streams not yet accepted by the
	// embedder, and our own un-ACKed outbound SYNs (go-yamux AcceptBacklog;
	// the spec asks for at most 256 un-ACKed streams).
	DefaultAcceptBacklog = 256

	// DefaultMaxRefusedStreams is how many SYNs in a row we refuse with RST
	// (limits reached, or going away; the session's own or those the
	// embedder enforces by resetting the stream inside OnStream) before
	// treating the peer as flooding and ending the session with
	// GoAway(protocol error). The count resets whenever an inbound stream
	// is admitted.
	DefaultMaxRefusedStreams = 256

	// DefaultMaxWindow caps the receive window auto-tuning grants one
	// stream. go-yamux allows 16 MiB; a server multiplexing many
	// connections keeps it at 4 MiB (≈ 40 MB/s at 100 ms RTT per stream).
	DefaultMaxWindow = 4 << 20

	// DefaultMaxWindowGrowth caps, per session, the sum over streams of
	// (receive window − InitialWindow): auto-tuning stops when it is used
	// up, so a session never promises more than
	// MaxStreams×InitialWindow + MaxWindowGrowth bytes of receive buffer.
	DefaultMaxWindowGrowth = 16 << 20

	// DefaultMaxFramePayload is the largest Data payload we send:
	// go-yamux MaxMessageSize (64 KiB) minus the header. Inbound Data
	// frames are bounded by the receive window instead (js-yamux sends
	// frames as large as the window).
	DefaultMaxFramePayload = 64<<10 - HeaderLen

	// DefaultMaxOutput bounds the queued outbound stream data (headers
	// included). Stream writes beyond it are short (ErrWouldBlock), so a
	// peer that never reads cannot make the queue grow.
	DefaultMaxOutput = 256 << 10

	// DefaultMaxControlOutput bounds queued control frames (window updates,
	// pongs, RSTs, SYN/ACK). Those are provoked by the peer; if it keeps
	// provoking them without reading, the session ends with
	// GoAway(internal error) instead of growing the queue.
	DefaultMaxControlOutput = 64 << 10

	// DefaultPingBacklog is how many pongs may wait in the output queue;
	// extra pings are dropped (go-yamux PingBacklog).
	DefaultPingBacklog = 32

	// DefaultKeepAliveInterval: after this long without receiving a frame
	// we send a ping (go-yamux KeepAliveInterval).
	DefaultKeepAliveInterval = 30 * time.Second

	// DefaultPingTimeout: a ping unanswered for this long ends the session
	// with ErrKeepAliveTimeout (go-yamux ConnectionWriteTimeout, which it
	// uses as its ping timeout).
	DefaultPingTimeout = 10 * time.Second

	// DefaultHeldDataTimeout resets a stream whose handler has left
	// received bytes unconsumed this long without consuming any. A handler
	// that stopped (an echo whose peer does not read our answers) would
	// otherwise pin its receive buffer, up to its window, for the life of
	// the connection; 30 s is three times the libp2p negotiation timeout
	// and far longer than any handler that makes progress waits.
	DefaultHeldDataTimeout = 30 * time.Second
)

// Reasons the session refuses or resets a stream on its own, reported to
// Config.OnRefuse (stable tokens for metrics).
const (
	RefuseStreamLimit = "stream_limit" // MaxStreams inbound streams are open
	RefuseBacklog     = "backlog"      // AcceptBacklog streams await Accept
	RefuseGoingAway   = "going_away"   // we sent GoAway
	RefuseNoHandler   = "no_handler"   // Config.OnStream is nil
	RefuseMemory      = "memory"       // the Meter cannot afford a new stream's window
	ResetHeldData     = "held_data"    // unconsumed data held past HeldDataTimeout
	ResetMemory       = "memory_reset" // data within the window did not fit Memory
)

// Config holds a session's limits and callbacks. The zero value of every
// numeric field means "use the default".
type Config struct {
	// OnStream is called (from Input) when the peer opens a stream. The
	// embedder calls st.Accept(handler) now or later, or st.Reset() to
	// refuse. Until accepted, the stream counts against AcceptBacklog and
	// its data is buffered (within the initial window). A nil OnStream
	// refuses every inbound stream with RST.
	OnStream func(st *Stream)

	MaxStreams        int
	AcceptBacklog     int
	MaxRefusedStreams int
	MaxWindow         uint32
	MaxWindowGrowth   int64
	MaxFramePayload   int
	MaxOutput         int
	MaxControlOutput  int
	PingBacklog       int

	// KeepAliveInterval < 0 disables keepalive pings (and the initial RTT
	// ping).
	KeepAliveInterval time.Duration
	PingTimeout       time.Duration

	// Memory, when set, is charged for every buffer a peer can make the
	// session hold: stream receive buffers are reserved (a stream whose
	// data, within the window we granted, does not fit is reset:
	// ErrStreamMemory) and the output queues are charged (never refused:
	// MaxOutput and MaxControlOutput bound them).
	// Before it comes to that, window updates are withheld while Memory
	// cannot afford the window they would grant (the peer slows down, as
	// flow control intends; they resume as buffers are released), and
	// inbound streams are refused with RST while it cannot afford one
	// InitialWindow.
	Memory Meter
	// MemoryHeadroom is what the layers below may still charge to Memory
	// without refusal (a partial frame a transport keeps between reads):
	// like the output queues' room up to MaxOutput and MaxControlOutput,
	// it is kept free when window is granted and streams admitted, so
	// that data we promised a peer never pushes the share over.
	MemoryHeadroom int
	// HeldDataTimeout resets (RST, OnReset with ErrHeldData) a stream whose
	// handler has left received bytes unconsumed this long without
	// consuming any (0: DefaultHeldDataTimeout; < 0: never).
	HeldDataTimeout time.Duration
	// OnRefuse, when set, is told each time the session refuses an inbound
	// stream or resets one on its own, with a Refuse*/Reset* reason.
	OnRefuse func(reason string)
	// OnStreamEnd, when set, is called once for every stream that leaves
	// the session (closed both ways, reset, or ended with the session), for
	// the embedder's per-stream accounting (Stream.Tag).
	OnStreamEnd func(st *Stream)
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxStreams, DefaultMaxStreams)
	def(&c.AcceptBacklog, DefaultAcceptBacklog)
	def(&c.MaxRefusedStreams, DefaultMaxRefusedStreams)
	def(&c.MaxFramePayload, DefaultMaxFramePayload)
	def(&c.MaxOutput, DefaultMaxOutput)
	def(&c.MaxControlOutput, DefaultMaxControlOutput)
	def(&c.PingBacklog, DefaultPingBacklog)
	if c.MaxWindow == 0 {
		c.MaxWindow = DefaultMaxWindow
	}
	if c.MaxWindow < InitialWindow {
		c.MaxWindow = InitialWindow
	}
	if c.MaxWindowGrowth <= 0 {
		c.MaxWindowGrowth = DefaultMaxWindowGrowth
	}
	if c.MaxOutput < HeaderLen+1 {
		c.MaxOutput = HeaderLen + 1
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = DefaultPingTimeout
	}
	if c.HeldDataTimeout == 0 {
		c.HeldDataTimeout = DefaultHeldDataTimeout
	}
}

// A receive queue of a fresh stream fills exactly one pool class.
var _ = [1]struct{}{}[InitialWindow-bufpool.Large]
