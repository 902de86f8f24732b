package security

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"slices"

	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise/pb"
	"google.golang.org/protobuf/proto"
)

// NoiseID is the multistream-select protocol id of Noise.
const NoiseID = "/noise"

// Limits. They are checked before any allocation that depends on the input.
const (
	// MaxHandshakeMessage is the largest Noise handshake message: the Noise
	// spec's 65535-byte message limit, which the 2-byte length prefix also
	// imposes.
	MaxHandshakeMessage = 65535

	// MaxStreamMuxers is the longest stream_muxers list we act on; a longer
	// list is ignored (muxer falls back to multistream), as go-libp2p does
	// (maxProtoNum) "for security".
	MaxStreamMuxers = 100

	// MaxRSAKeyBits is the largest RSA identity key accepted: verifying
	// with larger keys costs quadratic time (CVE-2023-39533). go-libp2p's
	// core/crypto enforces the same bound after parsing; we additionally
	// refuse the DER encoding of anything larger before parsing it.
	MaxRSAKeyBits = 8192

	// maxRSAKeyDER bounds the PKIX encoding of an RSA key of MaxRSAKeyBits
	// (1,062 bytes with e = 65537) with room for a larger exponent.
	maxRSAKeyDER = MaxRSAKeyBits/8 + 128
)

// sigPrefix is prepended to the Noise static key before signing it with the
// libp2p identity key (libp2p noise spec).
const sigPrefix = "noise-libp2p-static-key:"

// Noise is the immutable configuration shared by every Noise handshake of a
// node, in both roles: the libp2p identity, one X25519 static key and the
// handshake payload signed once.
//
// The libp2p noise spec lets a node reuse its static key across sessions
// ("the static key ... may be reused"); go-libp2p instead generates a new
// static key and signature for every handshake. Reusing it saves one key
// generation and one signature per handshake; forward secrecy still comes
// from the ephemeral keys.
type Noise struct {
	key    crypto.PrivKey
	id     peer.ID
	muxers []string

	static     *ecdh.PrivateKey
	staticPriv []byte
	staticPub  []byte
	payload    []byte // marshalled NoiseHandshakePayload

	rand io.Reader // ephemeral key source; tests inject a deterministic one
}

// NewNoise returns a configuration for the identity key and the stream
// muxers to offer inside the handshake, in order of preference (normally
// just "/yamux/1.0.0"; none disables the inlined muxer negotiation).
func NewNoise(key crypto.PrivKey, muxers ...string) (*Noise, error) {
	static := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, static); err != nil {
		return nil, err
	}
	return newNoise(key, muxers, static)
}

func newNoise(key crypto.PrivKey, muxers []string, staticPriv []byte) (*Noise, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	static, err := ecdh.X25519().NewPrivateKey(staticPriv)
	if err != nil {
		return nil, err
	}
	n := &Noise{
		key:        key,
		id:         id,
		muxers:     slices.Clone(muxers),
		static:     static,
		staticPriv: staticPriv,
		staticPub:  static.PublicKey().Bytes(),
		rand:       rand.Reader,
	}
	pub, err := crypto.MarshalPublicKey(key.GetPublic())
	if err != nil {
		return nil, err
	}
	sig, err := key.Sign(append([]byte(sigPrefix), n.staticPub...))
	if err != nil {
		return nil, err
	}
	p := &pb.NoiseHandshakePayload{IdentityKey: pub, IdentitySig: sig}
	if len(muxers) > 0 {
		// Spec: the initiator MUST NOT send extensions in msg 1; we send
		// them in msg 2 (responder) and msg 3 (initiator).
		p.Extensions = &pb.NoiseExtensions{StreamMuxers: n.muxers}
	}
	if n.payload, err = proto.Marshal(p); err != nil {
		return nil, err
	}
	// msg 2 = e (32) + encrypted s (32+16) + encrypted payload (+16).
	if 32+48+len(n.payload)+16 > MaxHandshakeMessage {
		return nil, ErrTooLarge
	}
	return n, nil
}

// LocalPeer returns the peer ID of the configured identity.
func (n *Noise) LocalPeer() peer.ID { return n.id }

// Handshake steps.
//
//	responder: hsReadMsg1 -(msg1 in, msg2 out)-> hsReadMsg3 -(msg3 in)-> hsDone
//	initiator: hsStart -(Start: msg1 out)-> hsReadMsg2 -(msg2 in, msg3 out)-> hsDone
//
// Any error moves to hsFailed, which is terminal.
const (
	hsStart uint8 = iota
	hsReadMsg1
	hsReadMsg2
	hsReadMsg3
	hsDone
	hsFailed
)

// Handshake is one Noise XX handshake in either role. It is not safe for
// concurrent use; one event loop owns it.
type Handshake struct {
	cfg       *Noise
	hs        *xx // released once done
	dh        x25519
	expected  peer.ID
	step      uint8
	initiator bool
	err       error

	result  Result
	session Session
	hash    []byte // handshake hash (channel binding), kept for tests
}

// Result is what a completed handshake established.
type Result struct {
	// RemotePeer is derived from RemoteKey (its canonical encoding).
	RemotePeer peer.ID
	// RemoteKey is the remote's verified libp2p identity key.
	RemoteKey crypto.PubKey
	// Muxer is the stream muxer agreed inside the handshake (the first entry
	// of the initiator's stream_muxers that the responder also lists), or ""
	// when either side sent no list or they share none: then the muxer is
	// negotiated with multistream-select over the session, as go-libp2p
	// does.
	Muxer string
}

// NewResponder returns the server-side handshake. If expected is not empty
// the initiator must prove that identity.
func (n *Noise) NewResponder(expected peer.ID) *Handshake {
	h := &Handshake{step: hsReadMsg1}
	h.init(n, false, expected)
	return h
}

// NewInitiator returns the client-side handshake. If expected is not empty
// the responder must prove that identity (go-libp2p always checks it when
// dialling a known peer).
func (n *Noise) NewInitiator(expected peer.ID) *Handshake {
	h := &Handshake{step: hsStart}
	h.init(n, true, expected)
	return h
}

func (h *Handshake) init(n *Noise, initiator bool, expected peer.ID) {
	h.cfg, h.expected, h.initiator = n, expected, initiator
	h.dh = x25519{static: n.static}
	h.hs = new(xx)
	h.hs.init(&h.dh, n.staticPub, n.rand, initiator)
}

// Start appends the initiator's first message (its ephemeral key, empty
// payload) to out. It does nothing for a responder.
func (h *Handshake) Start(out []byte) ([]byte, error) {
	if h.step != hsStart {
		return out, nil
	}
	out, err := h.write(out, 1, nil)
	if err != nil {
		return out, h.fail(err)
	}
	h.step = hsReadMsg2
	return out, nil
}

// Input consumes the complete handshake messages at the front of in and
// appends the messages to send to out (also when err != nil, out is valid).
//
// consumed counts whole messages only; a partial message is left in place
// for the caller to present again with more bytes appended. When Done
// becomes true Input stops consuming: in[consumed:] holds transport frames
// the peer pipelined behind its last message, to be opened with Session. An
// error is terminal (the caller closes the connection) and is returned
// again by later calls.
func (h *Handshake) Input(out, in []byte) (_ []byte, consumed int, err error) {
	for {
		switch h.step {
		case hsDone:
			return out, consumed, nil
		case hsFailed:
			return out, consumed, h.err
		case hsStart:
			return out, consumed, h.fail(ErrState)
		}
		msg, n, err := parseHandshakeMessage(in[consumed:])
		if err == ErrNeedMore {
			return out, consumed, nil
		}
		if err != nil {
			return out, consumed, h.fail(err)
		}
		consumed += n
		switch h.step {
		case hsReadMsg1:
			// msg 1 payload: go ignores it, rust requires it empty. It is
			// unauthenticated plaintext, so we ignore it.
			if _, err := h.read(1, msg); err != nil {
				return out, consumed, h.fail(err)
			}
			if out, err = h.write(out, 2, h.cfg.payload); err != nil {
				return out, consumed, h.fail(err)
			}
			h.step = hsReadMsg3
		case hsReadMsg2:
			payload, err := h.read(2, msg)
			if err != nil {
				return out, consumed, h.fail(err)
			}
			// Verify the responder before revealing our identity in msg 3.
			remote, err := h.verify(payload)
			if err != nil {
				return out, consumed, h.fail(err)
			}
			if out, err = h.write(out, 3, h.cfg.payload); err != nil {
				return out, consumed, h.fail(err)
			}
			h.finish()
			h.result.Muxer = matchMuxers(h.cfg.muxers, remote)
			h.step, h.hs = hsDone, nil
		case hsReadMsg3:
			payload, err := h.read(3, msg)
			if err != nil {
				return out, consumed, h.fail(err)
			}
			remote, err := h.verify(payload)
			if err != nil {
				return out, consumed, h.fail(err)
			}
			h.finish()
			h.result.Muxer = matchMuxers(remote, h.cfg.muxers)
			h.step, h.hs = hsDone, nil
		}
	}
}

func (h *Handshake) fail(err error) error {
	h.step, h.err, h.hs = hsFailed, err, nil
	return err
}

// Done reports whether the handshake completed successfully.
func (h *Handshake) Done() bool { return h.step == hsDone }

// Result returns the handshake's outcome; it is valid once Done.
func (h *Handshake) Result() Result { return h.result }

// Session returns the transport cipher states; valid once Done. The
// pointer points into h (the Noise handshake state itself has been
// released by then, so keeping h costs a few hundred bytes). The caller may
// instead copy *h.Session() by value before the first Seal or Open and drop
// h; never copy a Session after use (two copies would reuse nonces).
func (h *Handshake) Session() *Session { return &h.session }

// write appends one length-prefixed handshake message, number msg of the
// pattern, carrying payload.
func (h *Handshake) write(out []byte, msg int, payload []byte) ([]byte, error) {
	start := len(out)
	out, err := h.hs.writeMessage(append(out, 0, 0), msg, payload)
	if err != nil {
		return out[:start], classify(err)
	}
	binary.BigEndian.PutUint16(out[start:], uint16(len(out)-start-2))
	return out, nil
}

// read processes handshake message number msg and returns its decrypted
// payload.
func (h *Handshake) read(msg int, in []byte) ([]byte, error) {
	payload, err := h.hs.readMessage(msg, in)
	if err != nil {
		return nil, classify(err)
	}
	return payload, nil
}

// finish keys the transport session from Split: the initiator encrypts
// with the first key and decrypts with the second, the responder the other
// way round (Noise spec §5.2 Split).
func (h *Handshake) finish() {
	h.hash = append(h.hash[:0], h.hs.sym.h[:]...)
	k1, k2 := h.hs.sym.split()
	if h.initiator {
		h.session.init(k1, k2)
	} else {
		h.session.init(k2, k1)
	}
	clear(k1[:])
	clear(k2[:])
}

// verify checks the remote payload against the remote static key from the
// handshake state and records the result. It returns the remote's muxer
// list (nil if absent or too long).
func (h *Handshake) verify(payload []byte) ([]string, error) {
	key, id, muxers, err := verifyPayload(payload, h.hs.rs[:], h.expected)
	if err != nil {
		return nil, err
	}
	h.result.RemoteKey, h.result.RemotePeer = key, id
	return muxers, nil
}

// classify maps a handshake state error to our reason tokens by type: a
// short message or a failed X25519 is malformed, a tag that did not verify
// is an authentication failure, anything else (the random source) is
// reported as malformed too.
func classify(err error) error {
	if errors.Is(err, errDecrypt) {
		return ErrAuthFailed.wrap(err)
	}
	return ErrMalformed.wrap(err)
}

// parseHandshakeMessage returns the next length-prefixed handshake message.
func parseHandshakeMessage(b []byte) (msg []byte, n int, err error) {
	if len(b) < 2 {
		return nil, 0, ErrNeedMore
	}
	l := int(binary.BigEndian.Uint16(b)) // ≤ MaxHandshakeMessage by construction
	if len(b) < 2+l {
		return nil, 0, ErrNeedMore
	}
	return b[2 : 2+l], 2 + l, nil
}

// verifyPayload decodes and verifies a remote NoiseHandshakePayload
// (libp2p noise spec, "Validating the handshake payload").
func verifyPayload(payload, remoteStatic []byte, expected peer.ID) (crypto.PubKey, peer.ID, []string, error) {
	var p pb.NoiseHandshakePayload
	if err := proto.Unmarshal(payload, &p); err != nil {
		return nil, "", nil, ErrMalformed.wrap(err)
	}
	key, err := unmarshalPublicKey(p.GetIdentityKey())
	if err != nil {
		return nil, "", nil, err
	}
	// Peer IDs are derived from the canonical re-encoding of the key, never
	// from the received bytes.
	id, err := peer.IDFromPublicKey(key)
	if err != nil {
		return nil, "", nil, ErrBadKey.wrap(err)
	}
	if expected != "" && id != expected {
		return nil, "", nil, ErrPeerIDMismatch
	}
	// Spec: verify identity_sig over "noise-libp2p-static-key:" || the
	// remote static key from the handshake; if invalid, the handshake
	// MUST be terminated immediately.
	var msg [len(sigPrefix) + 32]byte
	if len(remoteStatic) != 32 {
		return nil, "", nil, ErrMalformed
	}
	copy(msg[copy(msg[:], sigPrefix):], remoteStatic)
	if ok, err := key.Verify(msg[:], p.GetIdentitySig()); err != nil || !ok {
		return nil, "", nil, ErrBadSignature.wrap(err)
	}
	var muxers []string
	if ext := p.GetExtensions(); ext != nil && len(ext.StreamMuxers) <= MaxStreamMuxers {
		muxers = ext.StreamMuxers
	}
	return key, id, muxers, nil
}

// unmarshalPublicKey decodes a libp2p PublicKey protobuf with core/crypto.
func unmarshalPublicKey(b []byte) (crypto.PubKey, error) {
	var pk cryptopb.PublicKey
	if err := proto.Unmarshal(b, &pk); err != nil {
		return nil, ErrBadKey.wrap(err)
	}
	return publicKeyFromProto(&pk)
}

// publicKeyFromProto parses a decoded PublicKey with core/crypto, refusing
// oversized RSA keys before they are parsed and mapping the failures to
// reason tokens.
func publicKeyFromProto(pk *cryptopb.PublicKey) (crypto.PubKey, error) {
	if pk == nil {
		return nil, ErrBadKey
	}
	switch pk.GetType() {
	case cryptopb.KeyType_Ed25519, cryptopb.KeyType_Secp256k1, cryptopb.KeyType_ECDSA:
	case cryptopb.KeyType_RSA:
		if len(pk.GetData()) > maxRSAKeyDER {
			return nil, ErrRSATooLarge
		}
	default:
		return nil, ErrKeyType
	}
	key, err := crypto.PublicKeyFromProto(pk)
	switch {
	case err == nil:
		return key, nil
	case errors.Is(err, crypto.ErrRsaKeyTooBig):
		return nil, ErrRSATooLarge
	case errors.Is(err, crypto.ErrRsaKeyTooSmall):
		return nil, ErrRSATooSmall
	case errors.Is(err, crypto.ErrBadKeyType):
		return nil, ErrKeyType
	default:
		return nil, ErrBadKey.wrap(err)
	}
}

// matchMuxers returns the first of the initiator's muxers that the
// responder also lists (libp2p inlined muxer negotiation spec; go-libp2p's
// matchMuxers), or "".
func matchMuxers(initiator, responder []string) string {
	for _, m := range initiator {
		if slices.Contains(responder, m) {
			return m
		}
	}
	return ""
}
