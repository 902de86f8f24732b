// Package engine runs swarmgate's connections on a netpoll event loop.
//
// A connection is a pipeline of incremental stages over byte buffers: TCP,
// the HTTP upgrade, WebSocket frames, then the stage a Handler returns for
// the request path. Stages run inside netpoll's read callback, one callback
// per connection at a time, and return as soon as they need more bytes: no
// goroutine ever waits for input, and an idle connection owns no goroutine,
// no timer and no buffer beyond its small state (see README "Memory").
//
// The same pipeline runs in the client role (Dial), so one process can hold
// tens of thousands of client connections without a goroutine each.
package engine

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/simd"
	"github.com/swarmgate/swarmgate/ws"
)

// Defaults for Config's zero values. Each bounds what one peer can make the
// engine hold or wait for.
const (
	// DefaultHandshakeTimeout bounds TCP accept to completed upgrade, as
	// go-libp2p's WebSocket transport does (15 s).
	DefaultHandshakeTimeout = 15 * time.Second
	// DefaultMaxOutbound is how many bytes a connection may queue before the
	// engine stops processing its input and flushes, waiting for the peer to
	// drain (at most WriteTimeout).
	DefaultMaxOutbound = 256 << 10
	// DefaultWriteTimeout is how long a flush may wait for a peer that does
	// not read before the connection is cut.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultCloseTimeout is how long the engine waits for the peer's Close
	// after sending its own before it closes TCP (RFC 6455 §7.1.1).
	DefaultCloseTimeout = 2 * time.Second
	// DefaultMaxInboundBuffered bounds the bytes netpoll may have read ahead
	// for a connection while the engine is paused on its outbound queue.
	// netpoll v0.7 cannot stop reading a socket (cloudwego/netpoll#422), so
	// a peer that floods while not reading is cut instead.
	DefaultMaxInboundBuffered = 32 << 20
	// readBufferSize is netpoll's read buffer for a connection. netpoll
	// frees a connection's read buffer whenever its input is fully consumed,
	// but only once the connection's read-size mark is above one page (8 KiB);
	// starting above that mark means an idle connection keeps no read buffer
	// at all and borrows one from netpoll's pool while bytes arrive (README
	// "Memory").
	readBufferSize = 16 << 10
	// DefaultTick is the timer wheel's resolution.
	DefaultTick = 100 * time.Millisecond
	// maxPass bounds the input handled between two flushes, so output does
	// not pile up behind a long pass.
	maxPass = 64 << 10
)

// Config tunes an Engine. The zero value is usable: every limit has a named
// default.
type Config struct {
	HandshakeTimeout   time.Duration // DefaultHandshakeTimeout
	MaxRequestSize     int           // ws.DefaultMaxRequestSize
	MaxMessageSize     int64         // ws.DefaultMaxMessageSize
	MaxOutbound        int           // DefaultMaxOutbound
	MaxInboundBuffered int           // DefaultMaxInboundBuffered
	WriteTimeout       time.Duration // DefaultWriteTimeout
	CloseTimeout       time.Duration // DefaultCloseTimeout
	Tick               time.Duration // DefaultTick

	// TLS configures /tls/ws and /wss listeners: Certificates, or
	// GetCertificate for certificates that change (an ACME manager such as
	// certmagic, libp2p AutoTLS, CertReloader), CurvePreferences (nil: Go's
	// defaults, X25519MLKEM768 first), MinVersion (0: TLS 1.2). The engine
	// sets NextProtos to http/1.1 only. nil, or no certificate, on a
	// loopback listener: a self-signed ECDSA P-256 certificate whose SHA-256
	// fingerprint is logged; elsewhere Listen fails with ErrNoCertificate.
	TLS *tls.Config
	// TLSClient configures dials to /tls/ws: RootCAs (nil: the system's),
	// InsecureSkipVerify for loopback measurement. The server name comes
	// from the address's /sni, DNS name or IP. Each dial runs on a clone
	// with session tickets disabled (the TLS 1.3 record layer starts its
	// sequence numbers at 0 and does not resume), so a ClientSessionCache
	// here is not used; a KeyLogWriter still receives every line.
	TLSClient *tls.Config
	// MaxConcurrentTLSHandshakes bounds server TLS handshakes in progress
	// (DefaultMaxConcurrentTLSHandshakes).
	MaxConcurrentTLSHandshakes int

	// Limits bounds what connecting peers may hold (admission at accept,
	// the buffer memory budget); zero values are the named defaults.
	// SetLimits replaces them at run time.
	Limits admission.Limits
	// TrustedProxies, when set, are the load balancers whose client
	// address headers are believed: their connections are charged to the
	// client's address once the request is read.
	TrustedProxies *admission.TrustedProxies

	// CheckOrigin decides whether a browser's Origin may connect; nil
	// accepts every origin, as libp2p does.
	CheckOrigin func(origin, host []byte) bool

	// Registerer receives the engine's Prometheus metrics; nil keeps them
	// unregistered.
	Registerer prometheus.Registerer
	// Logger gets lifecycle logs; nil uses slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil uses time.Now. Tests pass their own.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxRequestSize <= 0 {
		c.MaxRequestSize = ws.DefaultMaxRequestSize
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = ws.DefaultMaxMessageSize
	}
	if c.MaxOutbound <= 0 {
		c.MaxOutbound = DefaultMaxOutbound
	}
	if c.MaxInboundBuffered <= 0 {
		c.MaxInboundBuffered = DefaultMaxInboundBuffered
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.MaxConcurrentTLSHandshakes <= 0 {
		c.MaxConcurrentTLSHandshakes = DefaultMaxConcurrentTLSHandshakes
	}
	if c.Tick <= 0 {
		c.Tick = DefaultTick
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Engine owns listeners, dialed connections, the timer wheel and metrics.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	wheel   *wheel
	tls     *engineTLS
	adm     *admission.Admission
	// epoch is the engine clock's origin: deadlines are kept as
	// nanoseconds since it (mono), so a wall-clock step cannot move them
	// (time.Time's monotonic reading survives Sub, not UnixNano).
	epoch time.Time

	mu        sync.Mutex
	listeners []*Listener
	conns     *Conn // head of the list of open connections
	closed    bool

	open atomic.Int64
}

var netpollOnce sync.Once

// configureNetpoll sets netpoll's process-wide read buffer size once.
func configureNetpoll() {
	netpollOnce.Do(func() {
		netpoll.Configure(netpoll.Config{BufferSize: readBufferSize})
	})
}

// dropReadBuffer returns a new connection's first read buffer to netpoll's
// pool before any byte has arrived: a peer that connects and stays silent
// then costs no buffer.
func dropReadBuffer(nc netpoll.Connection) {
	nc.Reader().Release()
}

// New starts an engine: its timer wheel runs until Close. The masking
// implementation chosen for this CPU is exported as a metric (and logged at
// debug level).
func New(cfg Config) *Engine {
	cfg.setDefaults()
	configureNetpoll()
	e := &Engine{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: newMetrics(cfg.Registerer),
		tls:     newEngineTLS(cfg.Registerer),
		adm:     admission.NewAdmission(cfg.Limits, cfg.Registerer),
		epoch:   cfg.Now(),
	}
	e.wheel = newWheel(cfg.Tick, e.monoNow, newTickLag(cfg.Registerer))
	e.metrics.simdImpl.WithLabelValues(simd.Impl()).Set(1)
	e.log.Debug("engine started", "mask_impl", simd.Impl())
	return e
}

// Now is the engine's clock (Config.Now).
func (e *Engine) Now() time.Time { return e.cfg.Now() }

// mono is t as nanoseconds since the engine's epoch, monotonic when t
// carries a monotonic reading (time.Now does); never 0, which means "no
// deadline".
func (e *Engine) mono(t time.Time) int64 {
	if d := int64(t.Sub(e.epoch)); d > 0 {
		return d
	}
	return 1
}

func (e *Engine) monoNow() int64 { return e.mono(e.cfg.Now()) }

// Mono is t as the engine's monotonic nanoseconds (≥ 1, so 0 can mean
// "none"): compact and safe from wall-clock steps, for instants a layer
// keeps per connection. MonoTime converts back.
func (e *Engine) Mono(t time.Time) int64 { return e.mono(t) }

// MonoTime is the instant of a Mono value.
func (e *Engine) MonoTime(m int64) time.Time { return e.epoch.Add(time.Duration(m)) }

// Logger is the engine's logger (Config.Logger).
func (e *Engine) Logger() *slog.Logger { return e.log }

// Registerer is where the engine's metrics are registered (Config.Registerer;
// nil: unregistered). Layers above register theirs on it too.
func (e *Engine) Registerer() prometheus.Registerer { return e.cfg.Registerer }

// ErrClosed reports use of an engine after Close.
var ErrClosed = errors.New("engine: closed")

// SetLimits replaces the admission limits in force (see
// Admission.SetLimits); connections already admitted are kept.
func (e *Engine) SetLimits(l admission.Limits) { e.adm.SetLimits(l) }

// Limits returns the admission limits in force, defaults applied.
func (e *Engine) Limits() admission.Limits { return e.adm.Limits() }

// Memory is the budget that buffers peers can make connections hold are
// charged to (bufpool.TryGet with it as the meter).
func (e *Engine) Memory() *admission.MemoryBudget { return e.adm.Budget() }

// OpenConns is the number of connections currently open in both roles.
func (e *Engine) OpenConns() int64 { return e.open.Load() }

func (e *Engine) track(c *Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	c.next = e.conns
	if c.next != nil {
		c.next.prev = c
	}
	e.conns = c
	e.open.Add(1)
	e.metrics.connsOpen.Inc()
	return true
}

func (e *Engine) untrack(c *Conn) {
	e.mu.Lock()
	if c.prev != nil || e.conns == c {
		if c.prev != nil {
			c.prev.next = c.next
		} else {
			e.conns = c.next
		}
		if c.next != nil {
			c.next.prev = c.prev
		}
		c.prev, c.next = nil, nil
		e.open.Add(-1)
		e.metrics.connsOpen.Dec()
	}
	e.mu.Unlock()
}

// Close stops the listeners and closes every connection at once, without a
// close handshake.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	lns := e.listeners
	var conns []*Conn
	for c := e.conns; c != nil; c = c.next {
		conns = append(conns, c)
	}
	e.mu.Unlock()
	for _, l := range lns {
		l.shutdown()
	}
	for _, c := range conns {
		c.nc.Close()
	}
	e.wheel.close()
	return nil
}
