package engine

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// selfSignedValidity is how long a generated loopback certificate is valid:
// it lives only as long as the process, so a day is plenty.
const selfSignedValidity = 24 * time.Hour

// serverTLSConfig is the configuration of one TLS listener: Config.TLS with
// ALPN http/1.1, or a self-signed certificate on loopback.
func (e *Engine) serverTLSConfig(a wsAddr, ip net.IP) (*tls.Config, error) {
	cfg := &tls.Config{}
	if e.cfg.TLS != nil {
		cfg = e.cfg.TLS.Clone()
	}
	if len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil {
		if !ip.IsLoopback() {
			return nil, fmt.Errorf("%w: %s", ErrNoCertificate, a.hostPort())
		}
		hosts := []string{"localhost", ip.String()}
		if a.sni != "" {
			hosts = append(hosts, a.sni)
		}
		cert, err := SelfSignedCertificate(hosts...)
		if err != nil {
			return nil, err
		}
		e.log.Warn("TLS listener on loopback without a certificate: using a self-signed one",
			"addr", a.hostPort(), "sha256", CertificateFingerprint(cert.Leaf))
		cfg.Certificates = []tls.Certificate{cert}
	}
	cfg.NextProtos = alpnHTTP1
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg, nil
}

// clientTLSConfig is the configuration of one TLS dial: Config.TLSClient
// with ALPN http/1.1 and the server name from the address (its /sni, else
// its DNS name or IP).
func (e *Engine) clientTLSConfig(a wsAddr) *tls.Config {
	cfg := &tls.Config{}
	if e.cfg.TLSClient != nil {
		cfg = e.cfg.TLSClient.Clone()
	}
	cfg.NextProtos = alpnHTTP1
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if cfg.ServerName == "" {
		cfg.ServerName = a.serverName()
	}
	return cfg
}

// SelfSignedCertificate makes an ECDSA P-256 certificate for hosts (DNS
// names or IP literals), valid for a day. For loopback listeners and tests.
func SelfSignedCertificate(hosts ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "swarmgate self-signed"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so a test can put it in a RootCAs pool
	}
	tmpl.KeyUsage |= x509.KeyUsageCertSign
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// CertificateFingerprint is the SHA-256 of a certificate's DER, in hex with
// colons, as browsers show it.
func CertificateFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	h := hex.EncodeToString(sum[:])
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strings.ToUpper(h[i : i+2]))
	}
	return b.String()
}

// ErrUnknownCurve reports a name ParseCurves does not know.
var ErrUnknownCurve = errors.New("engine: unknown TLS curve")

// curveNames are the key exchanges ParseCurves accepts, by crypto/tls's
// names and the common short ones.
var curveNames = map[string]tls.CurveID{
	"x25519mlkem768":     tls.X25519MLKEM768,
	"secp256r1mlkem768":  tls.SecP256r1MLKEM768,
	"secp384r1mlkem1024": tls.SecP384r1MLKEM1024,
	"x25519":             tls.X25519,
	"p256":               tls.CurveP256,
	"p-256":              tls.CurveP256,
	"curvep256":          tls.CurveP256,
	"p384":               tls.CurveP384,
	"p-384":              tls.CurveP384,
	"curvep384":          tls.CurveP384,
	"p521":               tls.CurveP521,
	"p-521":              tls.CurveP521,
	"curvep521":          tls.CurveP521,
}

// ParseCurves parses a comma-separated preference list such as
// "X25519MLKEM768,X25519,P256" for tls.Config.CurvePreferences. Empty
// returns nil: Go's defaults (X25519MLKEM768 first).
func ParseCurves(s string) ([]tls.CurveID, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ids []tls.CurveID
	for _, f := range strings.Split(s, ",") {
		id, ok := curveNames[strings.ToLower(strings.TrimSpace(f))]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownCurve, f)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
