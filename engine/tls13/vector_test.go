package tls13

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/swarmgate/swarmgate/internal/wire"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 8448 §3 "Simple 1-RTT Handshake" (TLS_AES_128_GCM_SHA256): traffic
// secrets with their derived keys and IVs, and the protected records of the
// trace.
const (
	rfc8448ServerHS    = "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38"
	rfc8448ServerHSKey = "3fce516009c21727d0f2e4e86ee403bc"
	rfc8448ServerHSIV  = "5d313eb2671276ee13000b30"
	rfc8448ClientAP    = "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5"
	rfc8448ClientAPKey = "17422dda596ed5d9acd890e3c63f5051"
	rfc8448ClientAPIV  = "5b78923dee08579033e523d9"
	rfc8448ServerAP    = "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643"
	rfc8448ServerAPKey = "9f02283b6c9c07efc26bb9f2ac92e356"
	rfc8448ServerAPIV  = "cf782b88dd83549aadf1e984"

	// {server} NewSessionTicket, the first record under the server's
	// application key (sequence number 0).
	rfc8448Ticket = `17030300de3a6b8f90414a97d6959c3487680de5134a2b240e6cffac116e95d4
		1d6af8f6b580dcf3d11d63c758db289a015940252f55713e061dc13e078891a3
		8efbcf5753ad8ef170ad3c7353d16d9da773b9ca7f2b9fa1b6c0d4a3d03f75e0
		9c30ba1e62972ac46f75f7b981be63439b2999ce13064615139891d5e4c5b406
		f16e3fc181a77ca475840025db2f0a77f81b5ab05b94c01346755f69232c8651
		9d86cbeeac87aac347d143f9605d64f650db4d023e70e952ca49fe5137121c74
		bc2697687e248746d6df353005f3bce18696129c8153556b3b6c6779b37bf159
		85684f`
	// {client} application data 00..31 (client sequence 0), then its
	// close_notify (1).
	rfc8448ClientData = `1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f
		2b9819a8a5b46b395bd54a9a20441e2b62974e1f5a6292a2977014bd1e3deae6
		3aeebb21694915e4`
	rfc8448ClientAlert = "1703030013c9872760655666b74d7ff1153efd6db6d0b0e3"
	// {server} application data 00..31 (server sequence 1), then its
	// close_notify (2).
	rfc8448ServerData = `17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36
		e30efaf97d90e6dffc602dcb501a59a8fcc49c4bf2e5f0a21c0047c2abf33254
		0dd032e167c2955d`
	rfc8448ServerAlert = "1703030013b58fd67166ebf599d24720cfbe7efa7a8864a9"
)

func TestRFC8448TrafficKeys(t *testing.T) {
	s := suiteByID(tls.TLS_AES_128_GCM_SHA256)
	for _, v := range []struct{ name, secret, key, iv string }{
		{"server handshake", rfc8448ServerHS, rfc8448ServerHSKey, rfc8448ServerHSIV},
		{"client application", rfc8448ClientAP, rfc8448ClientAPKey, rfc8448ClientAPIV},
		{"server application", rfc8448ServerAP, rfc8448ServerAPKey, rfc8448ServerAPIV},
	} {
		secret := unhex(t, v.secret)
		if got := s.trafficKey(secret); !bytes.Equal(got, unhex(t, v.key)) {
			t.Errorf("%s key = %x, want %s", v.name, got, v.key)
		}
		if got := s.trafficIV(secret); !bytes.Equal(got, unhex(t, v.iv)) {
			t.Errorf("%s iv = %x, want %s", v.name, got, v.iv)
		}
	}
}

// RFC 9001 Appendix A.5 (ChaCha20-Poly1305 short header packet): QUIC's
// keys are TLS 1.3 HKDF-Expand-Label outputs with other labels, so they pin
// the HkdfLabel encoding for a 32-byte key and the "update" derivation,
// and the packet pins the nonce construction and the ChaCha20-Poly1305
// AEAD.
func TestRFC9001ChaCha20Vectors(t *testing.T) {
	s := suiteByID(tls.TLS_CHACHA20_POLY1305_SHA256)
	secret := unhex(t, "9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b")
	for _, v := range []struct {
		label string
		n     int
		want  string
	}{
		{"quic key", 32, "c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8"},
		{"quic iv", 12, "e0459b3474bdd0e44a41c144"},
		{"quic hp", 32, "25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4"},
		{"quic ku", 32, "1223504755036d556342ee9361d253421a826c9ecdf3c7148684b36b714881f9"},
	} {
		if got := expandLabel(s.hash, secret, v.label, nil, v.n); !bytes.Equal(got, unhex(t, v.want)) {
			t.Errorf("%s = %x, want %s", v.label, got, v.want)
		}
	}
	// The packet: nonce = iv XOR packet number 654360564 (§5.3's rule),
	// additional data = the unprotected header 4200bff4, plaintext 01.
	d := direction{seq: 654360564}
	copy(d.iv[:], unhex(t, "e0459b3474bdd0e44a41c144"))
	copy(d.nonce[:4], d.iv[:4])
	d.setNonce()
	if want := unhex(t, "e0459b3474bdd0e46d417eb0"); !bytes.Equal(d.nonce[:], want) {
		t.Fatalf("nonce = %x, want %x", d.nonce, want)
	}
	aead, err := s.aead(unhex(t, "c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8"))
	if err != nil {
		t.Fatal(err)
	}
	got := aead.Seal(nil, d.nonce[:], []byte{1}, unhex(t, "4200bff4"))
	if want := unhex(t, "655e5cd55c41f69080575d7999c25a5bfb"); !bytes.Equal(got, want) {
		t.Fatalf("sealed = %x, want %x", got, want)
	}
}

// The RFC 8448 trace, as the client saw it: the server's NewSessionTicket
// (sequence 0, ignored), its data (1) and its close_notify (2) open; the
// client's own data and close_notify seal to the trace's bytes.
func TestRFC8448ClientRecords(t *testing.T) {
	c, err := New(Client, tls.TLS_AES_128_GCM_SHA256, unhex(t, rfc8448ServerAP), unhex(t, rfc8448ClientAP))
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 50)
	for i := range payload {
		payload[i] = byte(i)
	}

	in := append(unhex(t, rfc8448Ticket), unhex(t, rfc8448ServerData)...)
	in = append(in, unhex(t, rfc8448ServerAlert)...)
	data, n, r, err := c.Open(in)
	if err != nil || r != Handshake || data != nil || n != 227 {
		t.Fatalf("ticket: data %x n %d result %v err %v", data, n, r, err)
	}
	in = in[n:]
	data, n, r, err = c.Open(in)
	if err != nil || r != Data || !bytes.Equal(data, payload) || n != 72 {
		t.Fatalf("data: %x n %d result %v err %v", data, n, r, err)
	}
	in = in[n:]
	if _, n, r, err = c.Open(in); err != nil || r != CloseNotify || n != 24 {
		t.Fatalf("alert: n %d result %v err %v", n, r, err)
	}

	out, err := c.AppendSeal(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, rfc8448ClientData); !bytes.Equal(out, want) {
		t.Fatalf("sealed data\n got %x\nwant %x", out, want)
	}
	if got, want := c.AppendAlert(nil, AlertCloseNotify), unhex(t, rfc8448ClientAlert); !bytes.Equal(got, want) {
		t.Fatalf("sealed alert\n got %x\nwant %x", got, want)
	}
}

// The same trace as the server saw it. The server's data record is its
// second under the application key (the ticket was the first), which is
// exactly the sequence shift a server with session tickets has to account
// for (see the package documentation).
func TestRFC8448ServerRecords(t *testing.T) {
	c, err := New(Server, tls.TLS_AES_128_GCM_SHA256, unhex(t, rfc8448ClientAP), unhex(t, rfc8448ServerAP))
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 50)
	for i := range payload {
		payload[i] = byte(i)
	}
	in := append(unhex(t, rfc8448ClientData), unhex(t, rfc8448ClientAlert)...)
	data, n, r, err := c.Open(in)
	if err != nil || r != Data || !bytes.Equal(data, payload) {
		t.Fatalf("data: %x result %v err %v", data, r, err)
	}
	if _, _, r, err = c.Open(in[n:]); err != nil || r != CloseNotify {
		t.Fatalf("alert: result %v err %v", r, err)
	}

	// Written at sequence 0 the record differs from the trace, and the
	// trace's client could not open it.
	c0, _ := New(Server, tls.TLS_AES_128_GCM_SHA256, unhex(t, rfc8448ClientAP), unhex(t, rfc8448ServerAP))
	if out, _ := c0.AppendSeal(nil, payload); bytes.Equal(out, unhex(t, rfc8448ServerData)) {
		t.Fatal("sequence 0 produced the sequence 1 record")
	}
	c.w.seq = 1
	out, err := c.AppendSeal(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, rfc8448ServerData); !bytes.Equal(out, want) {
		t.Fatalf("sealed data\n got %x\nwant %x", out, want)
	}
	if got, want := c.AppendAlert(nil, AlertCloseNotify), unhex(t, rfc8448ServerAlert); !bytes.Equal(got, want) {
		t.Fatalf("sealed alert\n got %x\nwant %x", got, want)
	}
}

// A client opening the trace's records out of order, or the ticket as a
// server, fails with the right alert.
func TestRFC8448Misuse(t *testing.T) {
	c, _ := New(Client, tls.TLS_AES_128_GCM_SHA256, unhex(t, rfc8448ServerAP), unhex(t, rfc8448ClientAP))
	if _, _, _, err := c.Open(unhex(t, rfc8448ServerData)); !errors.Is(err, ErrBadRecordMAC) {
		t.Fatalf("data at sequence 0: %v, want bad_record_mac", err)
	}
	s, _ := New(Server, tls.TLS_AES_128_GCM_SHA256, unhex(t, rfc8448ServerAP), unhex(t, rfc8448ClientAP))
	if _, _, _, err := s.Open(unhex(t, rfc8448Ticket)); !errors.Is(err, ErrHandshakeMessage) {
		t.Fatalf("ticket to a server: %v, want unexpected_message", err)
	}
	var e *Error
	if _, _, _, err := s.Open(nil); !errors.As(err, &e) || e.Alert != AlertUnexpectedMessage || errors.Is(err, wire.ErrNeedMore) {
		t.Fatalf("failure is not sticky: %v", err)
	}
}
