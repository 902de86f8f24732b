package tls13

import (
	"crypto/cipher"
	"encoding/binary"
	"math"
	"slices"

	"github.com/swarmgate/swarmgate/internal/wire"
)

// Role is the side of the connection this Conn plays. It matters for one
// rule only: a NewSessionTicket is a message a client may receive (and
// ignores), a protocol violation for a server.
type Role uint8

const (
	Server Role = iota
	Client
)

func (r Role) String() string {
	if r == Client {
		return "client"
	}
	return "server"
}

// Record sizes (RFC 8446 §5).
const (
	// HeaderLen is a record header: opaque_type, legacy_record_version,
	// length (§5.2).
	HeaderLen = 5
	// MaxPlaintext is the most content one record carries (§5.1: "The
	// record layer fragments information blocks into TLSPlaintext records
	// carrying data in chunks of 2^14 bytes or less"). AppendSeal fills
	// records to this size.
	MaxPlaintext = 1 << 14
	// MaxCiphertext is the largest encrypted_record a peer may send
	// (§5.2): "The length MUST NOT exceed 2^14 + 256 bytes."
	MaxCiphertext = MaxPlaintext + 256
	// maxInnerPlaintext bounds content, content type and padding (§5.4):
	// "the full encoded TLSInnerPlaintext MUST NOT exceed 2^14 + 1 octets".
	maxInnerPlaintext = MaxPlaintext + 1
	// RecordOverhead is what sealing adds to a record's content: header,
	// inner content type, tag. This package never pads.
	RecordOverhead = HeaderLen + 1 + TagLen
	// keyUpdateRecordLen is a sealed KeyUpdate: header, the 4-byte
	// handshake header, request_update, content type, tag.
	keyUpdateRecordLen = HeaderLen + 4 + 1 + 1 + TagLen
	// MaxSealGrowth is the most SealInPlace adds to its buffer: the content
	// type and tag, and the KeyUpdate records it may insert in front (the
	// one the peer asked for and one at the key-usage limit). A caller that
	// keeps this much spare capacity behind a record is never reallocated.
	MaxSealGrowth = 1 + TagLen + 2*keyUpdateRecordLen
	// MaxControlLen bounds what AppendPending or AppendAlert append: a
	// KeyUpdate, or an alert record (header, level, description, content
	// type, tag).
	MaxControlLen = keyUpdateRecordLen
	// maxControlRun bounds the records in a row that carry no application
	// data (KeyUpdate, NewSessionTicket, empty application_data). A
	// KeyUpdate costs three HKDF expansions and a new AEAD (about 5 µs) for
	// 27 bytes on the wire, and one with update_requested makes us write; 16
	// is crypto/tls's own bound (maxUselessRecords), so peers that work
	// with crypto/tls today work here.
	maxControlRun = 16
)

// ContentType values (§5.1).
const (
	typeChangeCipherSpec = 20
	typeAlert            = 21
	typeHandshake        = 22
	typeApplicationData  = 23
)

// HandshakeType values that may follow the handshake (§4).
const (
	hsNewSessionTicket = 4
	hsKeyUpdate        = 24
	// nstMinLen is the shortest NewSessionTicket body (§4.6.1):
	// ticket_lifetime(4) ticket_age_add(4) ticket_nonce<0..255>(1)
	// ticket<1..2^16-1>(2+1) extensions<0..2^16-2>(2).
	nstMinLen = 14
)

// AlertLevel values (§6). TLS 1.3 ignores the level on receipt.
const (
	levelWarning = 1
	levelFatal   = 2
)

// Result says what a record carried besides its bytes.
type Result uint8

const (
	// Data: application data; the plaintext (possibly empty) is returned.
	Data Result = iota
	// Handshake: a post-handshake message was consumed: a KeyUpdate that
	// asked for nothing (the read key moved on), a NewSessionTicket
	// (client role, ignored), or part of a fragmented message. Nothing to
	// deliver, nothing to send.
	Handshake
	// KeyUpdateRequested: the peer updated its key and asked us to update
	// ours. Our KeyUpdate is queued (Pending reports it) and goes out in
	// front of the next sealed record; the caller should write soon even
	// with no data, with AppendPending.
	KeyUpdateRequested
	// CloseNotify: the peer closed its side cleanly. Every later Open
	// reports CloseNotify again and consumes its input: "Any data received
	// after a closure alert has been received MUST be ignored." (§6.1)
	CloseNotify
)

func (r Result) String() string {
	switch r {
	case Data:
		return "data"
	case Handshake:
		return "handshake"
	case KeyUpdateRequested:
		return "key_update_requested"
	case CloseNotify:
		return "close_notify"
	}
	return "result(?)"
}

// direction is one direction's protection: the current traffic secret (to
// derive the next one on KeyUpdate, and the key when the AEAD is rebuilt),
// the static IV and the record sequence number.
type direction struct {
	aead cipher.AEAD // nil until first use and after Release
	seq  uint64
	// nonce is the per-record nonce scratch, kept here so it does not
	// escape to the heap on every record; nonce[:4] always equals iv[:4].
	nonce  [ivLen]byte
	iv     [ivLen]byte
	secret [maxSecretLen]byte
}

// setNonce forms the per-record nonce (§5.3): "1. The 64-bit record
// sequence number is encoded in network byte order and padded to the left
// with zeros to iv_length. 2. The padded sequence number is XORed with
// either the static client_write_iv or server_write_iv".
func (d *direction) setNonce() {
	binary.BigEndian.PutUint64(d.nonce[4:], binary.BigEndian.Uint64(d.iv[4:])^d.seq)
}

// Conn flags.
const (
	flagReadClosed       = 1 << iota // close_notify received
	flagWriteClosed                  // close_notify or an error alert sent
	flagKeyUpdatePending             // the peer asked for our KeyUpdate
)

// Conn is the TLS 1.3 record layer of one connection after its handshake:
// traffic secrets, sequence numbers and AEAD states, nothing else. It is
// sans-IO: Open decrypts records the caller read, the Append methods seal
// into the caller's buffer. It starts no goroutine and takes no lock, and
// is not safe for concurrent use: the two sides share state (a KeyUpdate
// the peer asks for is answered by the write side; an alert received
// closes both), so one owner calls it, the engine under the connection's
// lock. Neither side allocates in steady state; building an AEAD (after
// New, a KeyUpdate or Release) does.
type Conn struct {
	r, w  direction
	suite *suite
	role  Role
	flags uint8
	// run counts records in a row without application data.
	run uint8
	// A handshake message fragmented across records (§5.1 allows it):
	// hsHdr holds its 4-byte header (type, uint24 length) once hsHdrN
	// reaches 4; hsLeft is the body still to come.
	hsHdrN uint8
	hsHdr  [4]byte
	hsLeft uint32
	rerr   *Error // the read side's failure, returned by every later Open
}

// New returns the record layer for a connection whose handshake negotiated
// suite (tls.ConnectionState().CipherSuite) and produced these application
// traffic secrets: for a server, read is client_application_traffic_secret_0
// and write is server_application_traffic_secret_0; for a client the
// reverse. Both sequence numbers start at 0 (§5.3): the caller vouches that
// no record was sent or received under these keys yet (see the package
// documentation for why that holds after crypto/tls's handshake). The
// secrets are copied; the caller should wipe its copies.
func New(role Role, suiteID uint16, readSecret, writeSecret []byte) (*Conn, error) {
	s := suiteByID(suiteID)
	if s == nil {
		return nil, ErrUnsupportedSuite
	}
	if len(readSecret) != s.hashLen || len(writeSecret) != s.hashLen {
		return nil, ErrSecretLength
	}
	c := &Conn{suite: s, role: role}
	c.install(&c.r, readSecret)
	c.install(&c.w, writeSecret)
	return c, nil
}

// install makes secret the direction's traffic secret: a new IV, sequence
// number 0 ("Each sequence number is set to zero at the beginning of a
// connection and whenever the key is changed; the first record transmitted
// under a particular traffic key MUST use sequence number 0." §5.3), and
// the AEAD rebuilt on first use.
func (c *Conn) install(d *direction, secret []byte) {
	clear(d.secret[:])
	copy(d.secret[:], secret)
	iv := c.suite.trafficIV(secret)
	copy(d.iv[:], iv)
	copy(d.nonce[:4], iv[:4])
	d.seq = 0
	d.aead = nil
}

// cipher returns the direction's AEAD, deriving the key from the traffic
// secret and building it when absent.
func (c *Conn) cipher(d *direction) cipher.AEAD {
	if d.aead == nil {
		key := c.suite.trafficKey(d.secret[:c.suite.hashLen])
		a, err := c.suite.aead(key)
		clear(key)
		if err != nil {
			// The AEAD constructors fail only for a key of the wrong
			// length, and the suite table fixes the length.
			panic("tls13: " + err.Error())
		}
		d.aead = a
	}
	return d.aead
}

// update moves a direction to the next traffic secret (§7.2) and forgets
// the current one: "Once client_/server_application_traffic_secret_N+1 and
// its associated traffic keys have been computed, implementations SHOULD
// delete client_/server_application_traffic_secret_N and its associated
// traffic keys."
func (c *Conn) update(d *direction) {
	next := c.suite.nextSecret(d.secret[:c.suite.hashLen])
	c.install(d, next)
	clear(next)
}

// Release drops both AEAD states, keeping only the secrets, IVs and
// sequence numbers; the next Open or seal rebuilds what it needs (a key
// derivation and an AEAD: about 2 µs, and 1.2 KiB of allocation for
// AES-GCM). Call it when the connection goes idle: an idle Conn is then
// Sizeof(Conn) bytes (224), where two AES-GCM states add 1.5 KiB.
func (c *Conn) Release() {
	c.r.aead, c.w.aead = nil, nil
}

// Holding reports whether an AEAD state is built, that is whether Release
// would free anything.
func (c *Conn) Holding() bool { return c.r.aead != nil || c.w.aead != nil }

// Close forgets the secrets and keys ("Servers and clients MUST forget the
// secret values and keys established in failed connections", §6) and
// closes both sides; the Conn is unusable afterwards.
func (c *Conn) Close() {
	c.r, c.w = direction{}, direction{}
	c.flags |= flagReadClosed | flagWriteClosed
}

func (c *Conn) fail(e *Error) ([]byte, int, Result, error) {
	c.rerr = e
	return nil, 0, 0, e
}

// Open decrypts the record at the front of b in place and returns its
// result and the bytes it occupied. For application data, data is the
// plaintext (possibly empty); it aliases b and stays valid until the
// caller reuses b. Control records (Result Handshake, KeyUpdateRequested,
// CloseNotify) return no data.
//
// Open returns wire.ErrNeedMore, and modifies nothing, while b holds less
// than one complete record; it decides a header it must reject (wrong
// record type, a length over the limits) at once, without waiting for the
// body. Any other error is an *Error: the connection has failed, every
// later Open returns the same error, and unless Error.Remote is set the
// caller sends AppendAlert(dst, err.Alert) and closes. The record's bytes
// in b are overwritten even when it fails to authenticate.
func (c *Conn) Open(b []byte) (data []byte, n int, r Result, err error) {
	if c.rerr != nil {
		return nil, 0, 0, c.rerr
	}
	if c.flags&flagReadClosed != 0 {
		return nil, len(b), CloseNotify, nil
	}
	if len(b) < HeaderLen {
		return nil, 0, 0, wire.ErrNeedMore
	}
	l := int(binary.BigEndian.Uint16(b[3:HeaderLen]))
	switch {
	case b[0] == typeChangeCipherSpec:
		// §5: "If an implementation detects a change_cipher_spec record
		// received before the first ClientHello message or after the
		// peer's Finished message, it MUST be treated as an unexpected
		// record type".
		return c.fail(ErrChangeCipherSpec)
	case b[0] != typeApplicationData:
		// §5.2: the outer opaque_type "is always set to the value 23
		// (application_data)"; §5: "If a TLS implementation receives an
		// unexpected record type, it MUST terminate the connection with
		// an "unexpected_message" alert."
		return c.fail(ErrRecordType)
	case l > MaxCiphertext:
		// §5.2: "An endpoint that receives a record from its peer with
		// TLSCiphertext.length larger than 2^14 + 256 octets MUST
		// terminate the connection with a "record_overflow" alert."
		return c.fail(ErrRecordOverflow)
	case l > maxInnerPlaintext+TagLen:
		// §5.4: "the full encoded TLSInnerPlaintext MUST NOT exceed 2^14
		// + 1 octets"; every suite here adds exactly TagLen, so the
		// header already tells.
		return c.fail(ErrRecordOverflow)
	case l < TagLen:
		// Too short to hold a tag: it cannot authenticate (§5.2: "If the
		// decryption fails, the receiver MUST terminate the connection
		// with a "bad_record_mac" alert.").
		return c.fail(ErrBadRecordMAC)
	}
	// legacy_record_version is not checked: §5.1 "This field is
	// deprecated and MUST be ignored for all purposes." It is still
	// authenticated as part of the additional data.
	n = HeaderLen + l
	if len(b) < n {
		return nil, 0, 0, wire.ErrNeedMore
	}
	d := &c.r
	// §5.3: "If a TLS implementation would need to wrap a sequence
	// number, it MUST either rekey (Section 4.6.3) or terminate the
	// connection." Only the peer can rekey its direction.
	if d.seq == math.MaxUint64 {
		return c.fail(ErrSequenceExhausted)
	}
	aead := c.cipher(d)
	d.setNonce()
	// §5.2: additional_data = TLSCiphertext.opaque_type ||
	// TLSCiphertext.legacy_record_version || TLSCiphertext.length
	inner, err := aead.Open(b[HeaderLen:HeaderLen], d.nonce[:], b[HeaderLen:n], b[:HeaderLen])
	if err != nil {
		return c.fail(ErrBadRecordMAC)
	}
	d.seq++
	// §5.4: "the receiving implementation scans the field from the end
	// toward the beginning until it finds a non-zero octet. This non-zero
	// octet is the content type of the message." and "Implementations
	// MUST limit their scanning to the cleartext returned from the AEAD
	// decryption. If a receiving implementation does not find a non-zero
	// octet in the cleartext, it MUST terminate the connection with an
	// "unexpected_message" alert."
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 {
		i--
	}
	if i < 0 {
		return c.fail(ErrNoContentType)
	}
	typ, content := inner[i], inner[:i]
	// §5.1: "Handshake messages MUST NOT be interleaved with other record
	// types. That is, if a handshake message is split over two or more
	// records, there MUST NOT be any other records between them."
	if typ != typeHandshake && (c.hsHdrN > 0 || c.hsLeft > 0) {
		return c.fail(ErrInterleaved)
	}
	switch typ {
	case typeApplicationData:
		// §5.1: "Zero-length fragments of Application Data MAY be sent";
		// they count towards the run of records without data.
		if len(content) == 0 {
			if e := c.control(); e != nil {
				return c.fail(e)
			}
		} else {
			c.run = 0
		}
		return content, n, Data, nil
	case typeAlert:
		return c.alert(content, n)
	case typeHandshake:
		// §5.4: "Implementations MUST NOT send Handshake and Alert records
		// that have a zero-length TLSInnerPlaintext.content; if such a
		// message is received, the receiving implementation MUST terminate
		// the connection with an "unexpected_message" alert."
		if len(content) == 0 {
			return c.fail(ErrEmptyControl)
		}
		if e := c.control(); e != nil {
			return c.fail(e)
		}
		r, e := c.handshake(content)
		if e != nil {
			return c.fail(e)
		}
		return nil, n, r, nil
	case typeChangeCipherSpec:
		// §5: "An implementation which receives any other
		// change_cipher_spec value or which receives a protected
		// change_cipher_spec record MUST abort the handshake with an
		// "unexpected_message" alert."
		return c.fail(ErrChangeCipherSpec)
	}
	return c.fail(ErrRecordType)
}

// control counts a record without application data.
func (c *Conn) control() *Error {
	if c.run >= maxControlRun {
		return ErrTooManyControl
	}
	c.run++
	return nil
}

// alert handles an alert record's content.
func (c *Conn) alert(content []byte, n int) ([]byte, int, Result, error) {
	switch len(content) {
	case 0:
		return c.fail(ErrEmptyControl) // §5.4, quoted in Open
	case 2:
	default:
		// §5.1: "a record with an Alert type MUST contain exactly one
		// message", and struct Alert is two bytes (§6); §6: "Peers which
		// receive a message which cannot be parsed according to the syntax
		// ... MUST terminate the connection with a "decode_error" alert."
		return c.fail(ErrDecode)
	}
	// §6: the level "can safely be ignored"; "All the alerts listed in
	// Section 6.2 MUST be treated as error alerts when received regardless
	// of the AlertLevel in the message. Unknown Alert types MUST be
	// treated as error alerts."
	if a := Alert(content[1]); a != AlertCloseNotify {
		// §6: "Upon receiving an error alert, the TLS implementation
		// SHOULD indicate an error to the application and MUST NOT allow
		// any further data to be sent or received on the connection."
		// (writable refuses once rerr is a remote alert.)
		e := remoteAlert(a)
		c.rerr = e
		return nil, 0, 0, e
	}
	// §6: "Upon receiving such an alert, the TLS implementation SHOULD
	// indicate end-of-data to the application."
	c.flags |= flagReadClosed
	return nil, n, CloseNotify, nil
}

// handshake consumes post-handshake handshake messages, which may be
// coalesced in one record or fragmented across several (§5.1).
func (c *Conn) handshake(p []byte) (Result, *Error) {
	res := Handshake
	for len(p) > 0 {
		if c.hsHdrN < 4 {
			k := copy(c.hsHdr[c.hsHdrN:], p)
			c.hsHdrN += uint8(k)
			p = p[k:]
			if c.hsHdrN < 4 {
				break // the header continues in the next record
			}
			l := uint32(c.hsHdr[1])<<16 | uint32(c.hsHdr[2])<<8 | uint32(c.hsHdr[3])
			switch c.hsHdr[0] {
			case hsKeyUpdate:
				// §4.6.3: struct { KeyUpdateRequest request_update; }
				if l != 1 {
					return 0, ErrDecode
				}
			case hsNewSessionTicket:
				// §4.6.1: "At any time after the server has received the
				// client Finished message, it MAY send a NewSessionTicket
				// message." A client ignores it: this layer does not
				// resume sessions. A server never receives one.
				if c.role != Client {
					return 0, ErrHandshakeMessage
				}
				if l < nstMinLen {
					return 0, ErrDecode
				}
			default:
				// Everything else (a post-handshake CertificateRequest we
				// never allowed, a second Finished, ...) is unexpected.
				return 0, ErrHandshakeMessage
			}
			c.hsLeft = l
		}
		k := uint32(min(uint64(len(p)), uint64(c.hsLeft)))
		var request byte
		if k > 0 {
			request = p[0] // read only for a KeyUpdate, whose body is 1 byte
		}
		p = p[k:]
		c.hsLeft -= k
		if c.hsLeft > 0 {
			break // the body continues in the next record
		}
		c.hsHdrN = 0
		if c.hsHdr[0] != hsKeyUpdate {
			continue
		}
		// §5.1: "Handshake messages MUST NOT span key changes.
		// Implementations MUST verify that all messages immediately
		// preceding a key change align with a record boundary; if not,
		// then they MUST terminate the connection with an
		// "unexpected_message" alert."
		if len(p) > 0 {
			return 0, ErrKeyUpdateAlignment
		}
		switch request {
		case 0: // update_not_requested
		case 1: // update_requested
			// §4.6.3: "If the request_update field is set to
			// "update_requested", then the receiver MUST send a KeyUpdate
			// of its own with request_update set to
			// "update_not_requested" prior to sending its next Application
			// Data record. This mechanism allows either side to force an
			// update to the entire connection, but causes an
			// implementation which receives multiple KeyUpdates while it
			// is silent to respond with a single update." One flag
			// coalesces them.
			if c.flags&flagWriteClosed == 0 {
				c.flags |= flagKeyUpdatePending
				res = KeyUpdateRequested
			}
		default:
			// §4.6.3: "If an implementation receives any other value, it
			// MUST terminate the connection with an "illegal_parameter"
			// alert."
			return 0, ErrKeyUpdateValue
		}
		// §4.6.3: "Upon receiving a KeyUpdate, the receiver MUST update
		// its receiving keys." The old key opens nothing after this:
		// "both sides MUST enforce that a KeyUpdate with the old key is
		// received before accepting any messages encrypted with the new
		// key."
		c.update(&c.r)
	}
	return res, nil
}

// SealedLen returns how many bytes n bytes of plaintext become as
// application_data records of at most MaxPlaintext bytes each (an empty
// plaintext yields no record). AppendSeal may add a KeyUpdate record in
// front; Conn.SealedLen counts it.
func SealedLen(n int) int {
	records := (n + MaxPlaintext - 1) / MaxPlaintext
	return n + records*RecordOverhead
}

// MaxSealable returns the most plaintext whose sealed form fits in room
// bytes whatever the Conn's state: Conn.SealedLen(MaxSealable(room)) <=
// room always (it leaves space for the two KeyUpdate records AppendSeal may
// put in front). For the engine's pooled 64 KiB outbound buffer,
// MaxSealable(64<<10) is 65394 bytes of plaintext in four records.
func MaxSealable(room int) int {
	room -= 2 * keyUpdateRecordLen
	full := room / (MaxPlaintext + RecordOverhead)
	rest := room - full*(MaxPlaintext+RecordOverhead)
	return max(0, full*MaxPlaintext+max(0, rest-RecordOverhead))
}

// SealedLen returns exactly how many bytes AppendSeal(dst, p) with len(p)
// == n appends now: the data records and the KeyUpdate records that go in
// front of them (one the peer asked for, and one when the write sequence
// number reaches the suite's key-usage limit).
func (c *Conn) SealedLen(n int) int {
	records := uint64((n + MaxPlaintext - 1) / MaxPlaintext)
	return SealedLen(n) + c.keyUpdatesBefore(records)*keyUpdateRecordLen
}

// keyUpdatesBefore counts the KeyUpdate records sealing this many data
// records emits: the pending one, then one each time the sequence number
// reaches the limit (appendData's rule).
func (c *Conn) keyUpdatesBefore(records uint64) int {
	if records == 0 {
		return 0
	}
	limit := c.suite.keyUpdateAfter
	seq, updates := c.w.seq, 0
	if c.flags&flagKeyUpdatePending != 0 {
		seq, updates = 0, 1
	}
	first := uint64(0) // records sealed before the first limit update
	if seq < limit {
		first = limit - seq
	}
	if records > first {
		updates += 1 + int((records-first-1)/limit)
	}
	return updates
}

// Pending reports whether a KeyUpdate the peer asked for is queued: the
// caller should write it (AppendPending) even when it has no data.
func (c *Conn) Pending() bool {
	return c.flags&flagKeyUpdatePending != 0 && c.flags&flagWriteClosed == 0
}

// writable reports why nothing may be sealed, if so.
func (c *Conn) writable() error {
	if c.flags&flagWriteClosed != 0 {
		return ErrWriteClosed
	}
	if c.rerr != nil {
		// The connection failed: after the peer's error alert (§6, quoted
		// in alert) or our own, only our alert may still go out.
		return ErrWriteClosed
	}
	return nil
}

// AppendPending appends the queued KeyUpdate, if any, to dst.
func (c *Conn) AppendPending(dst []byte) ([]byte, error) {
	if err := c.writable(); err != nil {
		return dst, err
	}
	return c.appendPending(dst), nil
}

func (c *Conn) appendPending(dst []byte) []byte {
	if c.flags&flagKeyUpdatePending != 0 {
		dst = c.appendKeyUpdate(dst, false)
	}
	return dst
}

// AppendSeal seals plaintext into application_data records of MaxPlaintext
// bytes (the last one shorter) appended to dst, after a queued KeyUpdate.
// An empty plaintext appends no data record. It reserves Conn.SealedLen
// bytes at once, so a dst with that much spare capacity is not
// reallocated. plaintext is copied once into dst (the content type byte
// must follow it inside the AEAD input) and sealed there in place; it must
// not overlap dst's spare capacity.
func (c *Conn) AppendSeal(dst, plaintext []byte) ([]byte, error) {
	if err := c.writable(); err != nil {
		return dst, err
	}
	dst = slices.Grow(dst, c.SealedLen(len(plaintext)))
	dst = c.appendPending(dst)
	for len(plaintext) > 0 {
		k := min(len(plaintext), MaxPlaintext)
		dst = c.appendData(dst, plaintext[:k])
		plaintext = plaintext[k:]
	}
	return dst, nil
}

// AppendRecord seals plaintext (at most MaxPlaintext bytes, possibly
// empty) as exactly one application_data record appended to dst, after a
// queued KeyUpdate.
func (c *Conn) AppendRecord(dst, plaintext []byte) ([]byte, error) {
	if err := c.writable(); err != nil {
		return dst, err
	}
	if len(plaintext) > MaxPlaintext {
		return dst, ErrTooLarge
	}
	dst = slices.Grow(dst, len(plaintext)+RecordOverhead+c.keyUpdatesBefore(1)*keyUpdateRecordLen)
	dst = c.appendPending(dst)
	return c.appendData(dst, plaintext), nil
}

// appendData seals one application_data record, after a KeyUpdate when the
// write key has sealed its share of records (§5.3: "If a TLS
// implementation would need to wrap a sequence number, it MUST either
// rekey (Section 4.6.3) or terminate the connection."; §5.5 for AES-GCM).
func (c *Conn) appendData(dst, content []byte) []byte {
	if c.w.seq >= c.suite.keyUpdateAfter {
		dst = c.appendKeyUpdate(dst, false)
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0)
	dst = append(dst, content...)
	return c.seal(dst, start, typeApplicationData)
}

// SealInPlace seals one application_data record whose content the caller
// wrote in place: buf[start:start+HeaderLen] is room the caller reserved
// for the header, buf[start+HeaderLen:] is the content (at most
// MaxPlaintext bytes). It writes the header, appends the content type and
// the tag (TagLen+1 bytes; give buf that much spare capacity to avoid a
// reallocation) and returns the extended buf. A KeyUpdate due in front of
// the record is inserted at start and the record moved behind it, so the
// record may shift by up to 2*keyUpdateRecordLen bytes.
func (c *Conn) SealInPlace(buf []byte, start int) ([]byte, error) {
	if err := c.writable(); err != nil {
		return buf, err
	}
	if len(buf)-start-HeaderLen > MaxPlaintext {
		return buf, ErrTooLarge
	}
	end := len(buf)
	buf = c.appendPending(buf)
	if c.w.seq >= c.suite.keyUpdateAfter {
		buf = c.appendKeyUpdate(buf, false)
	}
	if k := len(buf) - end; k > 0 {
		// The KeyUpdate records were sealed behind the content; move them
		// in front, in sealing order.
		var ku [2 * keyUpdateRecordLen]byte
		copy(ku[:], buf[end:])
		copy(buf[start+k:], buf[start:end])
		copy(buf[start:], ku[:k])
		start += k
	}
	return c.seal(buf, start, typeApplicationData), nil
}

// AppendKeyUpdate appends a KeyUpdate and moves the write side to the next
// traffic secret (§4.6.3: "Both sender and receiver MUST encrypt their
// KeyUpdate messages with the old keys."; "After sending a KeyUpdate
// message, the sender SHALL send all its traffic using the next generation
// of keys"). With requestPeer the peer is asked to update its key too
// (update_requested). A KeyUpdate the peer asked for goes first, so it is
// answered with update_not_requested as §4.6.3 requires.
func (c *Conn) AppendKeyUpdate(dst []byte, requestPeer bool) ([]byte, error) {
	if err := c.writable(); err != nil {
		return dst, err
	}
	answered := c.flags&flagKeyUpdatePending != 0
	dst = c.appendPending(dst)
	if requestPeer || !answered {
		dst = c.appendKeyUpdate(dst, requestPeer)
	}
	return dst, nil
}

func (c *Conn) appendKeyUpdate(dst []byte, requestPeer bool) []byte {
	start := len(dst)
	var req byte
	if requestPeer {
		req = 1
	}
	dst = append(dst, 0, 0, 0, 0, 0, hsKeyUpdate, 0, 0, 1, req)
	dst = c.seal(dst, start, typeHandshake)
	c.flags &^= flagKeyUpdatePending
	c.update(&c.w)
	return dst
}

// AppendAlert appends alert a and closes the write side: close_notify
// ends it cleanly (§6.1: "Each party MUST send a "close_notify" alert
// before closing its write side of the connection, unless it has already
// sent some error alert."), any other alert is fatal. Once the write side
// is closed it appends nothing.
func (c *Conn) AppendAlert(dst []byte, a Alert) []byte {
	if c.flags&flagWriteClosed != 0 {
		return dst
	}
	// §6: "All the alerts listed in Section 6.2 MUST be sent with
	// AlertLevel=fatal"; the closure alerts (§6.1) keep the warning level
	// TLS 1.2 peers expect.
	level := byte(levelFatal)
	if a == AlertCloseNotify || a == AlertUserCanceled {
		level = levelWarning
	}
	start := len(dst)
	dst = slices.Grow(dst, HeaderLen+2+1+TagLen)
	dst = append(dst, 0, 0, 0, 0, 0, level, byte(a))
	dst = c.seal(dst, start, typeAlert)
	c.flags |= flagWriteClosed
	return dst
}

// seal encrypts the record that starts at buf[start]: header room, then
// content up to len(buf). It appends the content type (no padding: §5.4
// "When generating a TLSCiphertext record, implementations MAY choose to
// pad.") and the tag, writes the header, and seals in place.
func (c *Conn) seal(buf []byte, start int, typ byte) []byte {
	d := &c.w
	aead := c.cipher(d)
	buf = append(buf, typ)
	buf = slices.Grow(buf, TagLen)
	inner := buf[start+HeaderLen:]
	l := len(inner) + TagLen
	// §5.1: legacy_record_version "MUST be set to 0x0303 for all records
	// generated by a TLS 1.3 implementation other than an initial
	// ClientHello"; §5.2: opaque_type "is always set to the value 23".
	buf[start] = typeApplicationData
	buf[start+1], buf[start+2] = 3, 3
	buf[start+3], buf[start+4] = byte(l>>8), byte(l)
	d.setNonce()
	aead.Seal(inner[:0], d.nonce[:], inner, buf[start:start+HeaderLen])
	d.seq++
	return buf[:start+HeaderLen+l]
}
