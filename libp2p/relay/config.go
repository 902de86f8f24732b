package relay

import (
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config's zero values. Each bounds what peers can make the
// relay hold; negative values in Config disable a limit.
const (
	// DefaultReservationTTL is how long a reservation lasts unless renewed
	// by another RESERVE: go-libp2p's ReservationTTL (1 h). go clients
	// renew 2 minutes before expiry, js clients 5 minutes before.
	DefaultReservationTTL = time.Hour

	// DefaultMaxReservations bounds reservations held at once. A
	// reservation costs 65–110 bytes beyond its connection
	// (BenchmarkStoreMemory: 87 B each at 100,000 from distinct sources,
	// 108 B at 10,000), so the binding cost is the connection it keeps
	// open (a libp2p session is a few KB): 64 Ki reservations are a
	// quarter of the engine's default connection limit (256 Ki), leaving
	// three quarters of the connection slots to peers that do not ask to
	// be relayed. go-libp2p defaults to 128, js-libp2p to 15: both pay a
	// goroutine or promise per circuit and size for a laptop, not a fleet
	// node.
	DefaultMaxReservations = 64 << 10

	// DefaultMaxReservationsPerSource bounds reservations from one IPv4
	// address or IPv6 /56 (one host or one customer site, the engine's
	// admission unit). go-libp2p allows 8 per IP. A reservation needs its
	// own connection, and the engine admits 8 connections per source by
	// default, so with default admission this never binds first; it
	// matters when an operator raises per-source connection limits (for
	// carrier-grade NAT) and keeps one source from taking more than 8 of
	// the 64 Ki slots. Loopback is exempt, as in admission.
	DefaultMaxReservationsPerSource = 8

	// DefaultMaxCircuits bounds circuits open at once. A moving circuit
	// holds at most one ChunkSize buffer per direction (an idle one holds
	// none): 4096 × 2 × 16 KiB = 128 MiB in the worst case, an eighth of
	// the engine's default memory budget. Relayed connections are meant
	// for signalling and hole punching (DCUtR, WebRTC), not bulk data.
	DefaultMaxCircuits = 4096

	// DefaultMaxCircuitsPerPeer bounds circuits one peer takes part in, as
	// source or destination: go-libp2p's MaxCircuits (16).
	DefaultMaxCircuitsPerPeer = 16

	// DefaultCircuitDuration and DefaultCircuitBytes are the per-circuit
	// limit, announced in the Limit field and enforced: go-libp2p's
	// default limited relay (2 minutes, 128 KiB per direction).
	DefaultCircuitDuration = 2 * time.Minute
	DefaultCircuitBytes    = 128 << 10
)

// Timeouts of the hop and stop exchanges.
const (
	// HopTimeout bounds a hop stream from its opening until it is spliced
	// or done: the request must arrive, and a reply we wrote must be
	// followed by the peer's close, within it; then the stream is reset.
	// go-libp2p's relay waits 1 min for the request (StreamTimeout).
	HopTimeout = time.Minute
	// StopTimeout bounds the stop exchange, from opening the stop stream
	// to the destination's STATUS; past it the source gets
	// CONNECTION_FAILED. go destinations answer within 10 s
	// (AcceptTimeout), js relays allow 30 s for the whole exchange.
	StopTimeout = 30 * time.Second
)

// Config configures a relay. Zero values select the named defaults;
// negative values disable a limit (CircuitDuration and CircuitBytes both
// negative: an unlimited relay, which announces no Limit at all).
type Config struct {
	ReservationTTL           time.Duration // DefaultReservationTTL
	MaxReservations          int           // DefaultMaxReservations
	MaxReservationsPerSource int           // DefaultMaxReservationsPerSource
	// LimitLoopback applies MaxReservationsPerSource to loopback
	// addresses too (tests of the limit itself).
	LimitLoopback      bool
	MaxCircuits        int           // DefaultMaxCircuits
	MaxCircuitsPerPeer int           // DefaultMaxCircuitsPerPeer
	CircuitDuration    time.Duration // DefaultCircuitDuration, whole seconds on the wire
	CircuitBytes       int64         // DefaultCircuitBytes per direction

	// Addrs returns the relay's own addresses for reservation replies;
	// nil uses the host's listen addresses. Only public ones are sent
	// (like go-libp2p), each with /p2p/<relay> once.
	Addrs func() []ma.Multiaddr
	// AllowPrivateAddrs also sends private and loopback addresses (tests).
	AllowPrivateAddrs bool

	// Registerer receives the relay's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Now is the clock for reservation expiry; nil uses time.Now. Give it
	// the engine's clock (engine.Config.Now), which times circuits.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxReservations, DefaultMaxReservations)
	def(&c.MaxReservationsPerSource, DefaultMaxReservationsPerSource)
	def(&c.MaxCircuits, DefaultMaxCircuits)
	def(&c.MaxCircuitsPerPeer, DefaultMaxCircuitsPerPeer)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Addrs == nil {
		c.Addrs = func() []ma.Multiaddr { return nil }
	}
	if c.ReservationTTL <= 0 {
		c.ReservationTTL = DefaultReservationTTL
	}
	if c.CircuitDuration == 0 {
		c.CircuitDuration = DefaultCircuitDuration
	}
	if c.CircuitDuration > 0 {
		// Announced in whole seconds: enforce what is announced.
		c.CircuitDuration = max(c.CircuitDuration.Truncate(time.Second), time.Second)
	}
	if c.CircuitBytes == 0 {
		c.CircuitBytes = DefaultCircuitBytes
	}
	return c
}

// unlimited reports whether n (a count limit after defaults) is disabled.
func unlimited(n int) bool { return n < 0 }
