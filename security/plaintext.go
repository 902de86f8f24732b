package security

import (
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/insecure/pb"
	"github.com/swarmgate/swarmgate/internal/wire"
	"google.golang.org/protobuf/proto"
)

// PlaintextID is the multistream-select protocol id of libp2p's insecure
// transport. It authenticates nothing (keys are exchanged, not proven):
// enable it only for tests and trusted networks.
const PlaintextID = "/plaintext/2.0.0"

// MaxPlaintextExchange bounds the peer's Exchange message. The largest
// legitimate one carries an 8192-bit RSA key (about 1.1 KB); go-libp2p
// reads up to 64 KiB, which we have no reason to buffer.
const MaxPlaintextExchange = 4096

// Plaintext is the immutable /plaintext/2.0.0 configuration: our Exchange
// message, encoded once.
//
// Wire format (go-libp2p p2p/security/insecure): each side sends, without
// waiting, uvarint(len) || Exchange{id = our peer ID bytes, pubkey = our
// PublicKey}. After it the connection carries application bytes unframed.
type Plaintext struct {
	msg []byte
}

// NewPlaintext returns the configuration announcing key.
func NewPlaintext(key crypto.PubKey) (*Plaintext, error) {
	pk, err := crypto.PublicKeyToProto(key)
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPublicKey(key)
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(&pb.Exchange{Id: []byte(id), Pubkey: pk})
	if err != nil {
		return nil, err
	}
	return &Plaintext{msg: wire.AppendDelimited(nil, b)}, nil
}

// NewHandshake returns the exchange machine; both roles behave the same.
// If expected is not empty the peer must announce that ID.
func (p *Plaintext) NewHandshake(expected peer.ID) *PlaintextHandshake {
	return &PlaintextHandshake{cfg: p, expected: expected}
}

// PlaintextHandshake is one /plaintext/2.0.0 exchange. Buffer rules are
// those of Handshake.Input; after Done, in[consumed:] is application data.
type PlaintextHandshake struct {
	cfg      *Plaintext
	expected peer.ID
	started  bool
	done     bool
	err      error
	result   Result
}

// Start appends our Exchange message to out (once; Input does it too if
// the caller did not).
func (h *PlaintextHandshake) Start(out []byte) ([]byte, error) {
	if h.started {
		return out, nil
	}
	h.started = true
	return append(out, h.cfg.msg...), nil
}

// Input consumes the peer's Exchange message once it is complete.
func (h *PlaintextHandshake) Input(out, in []byte) (_ []byte, consumed int, err error) {
	out, _ = h.Start(out)
	if h.done || h.err != nil {
		return out, 0, h.err
	}
	msg, n, err := wire.ParseDelimited(in, MaxPlaintextExchange)
	if err == ErrNeedMore {
		return out, 0, nil
	}
	if err == wire.ErrMessageTooLarge {
		err = ErrTooLarge
	}
	if err != nil {
		if err != ErrTooLarge {
			err = ErrMalformed.wrap(err) // unsigned-varint: MUST be minimal
		}
		h.err = err
		return out, 0, err
	}
	if h.result, err = verifyExchange(msg, h.expected); err != nil {
		h.err = err
		return out, 0, err
	}
	h.done = true
	return out, n, nil
}

// Done reports whether the exchange completed.
func (h *PlaintextHandshake) Done() bool { return h.done }

// Result returns the peer's announced identity (Muxer is always ""); valid
// once Done.
func (h *PlaintextHandshake) Result() Result { return h.result }

func verifyExchange(b []byte, expected peer.ID) (Result, error) {
	var m pb.Exchange
	if err := proto.Unmarshal(b, &m); err != nil {
		return Result{}, ErrMalformed.wrap(err)
	}
	key, err := publicKeyFromProto(m.GetPubkey())
	if err != nil {
		return Result{}, err
	}
	id, err := peer.IDFromBytes(m.GetId())
	if err != nil {
		return Result{}, ErrMalformed.wrap(err)
	}
	if !id.MatchesPublicKey(key) {
		return Result{}, ErrIDKeyMismatch
	}
	if expected != "" && id != expected {
		return Result{}, ErrPeerIDMismatch
	}
	return Result{RemotePeer: id, RemoteKey: key}, nil
}
