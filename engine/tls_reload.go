package engine

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCertPollInterval is how often CertReloader.Watch checks the
// files: renewals (ACME, AutoTLS) happen days ahead of expiry, so a few
// seconds of delay costs nothing and a stat(2) of two files is free.
const DefaultCertPollInterval = 5 * time.Second

// CertReloader serves a certificate and key from PEM files and reloads them
// when they change, without touching open connections: a handshake reads
// the current certificate through GetCertificate, established connections
// keep their keys. Put its GetCertificate in Config.TLS.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	cur               atomic.Pointer[tls.Certificate]

	mu    sync.Mutex
	stamp [2]fileStamp // of the files last loaded
}

// fileStamp identifies a version of a file without reading it.
type fileStamp struct {
	mod  time.Time
	size int64
}

// NewCertReloader loads the pair once; an error here is fatal for the
// caller, later reload errors keep the previous certificate.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate: the current certificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// Certificate is the current certificate.
func (r *CertReloader) Certificate() *tls.Certificate { return r.cur.Load() }

// Reload reads the files now (SIGHUP). On error the previous certificate
// stays in use.
func (r *CertReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamps, err := r.stamps()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cur.Store(&cert)
	r.stamp = stamps
	r.log.Info("TLS certificate loaded", "cert", r.certFile, "sha256", CertificateFingerprint(cert.Leaf), "not_after", cert.Leaf.NotAfter)
	return nil
}

func (r *CertReloader) stamps() ([2]fileStamp, error) {
	var s [2]fileStamp
	for i, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return s, err
		}
		s[i] = fileStamp{fi.ModTime(), fi.Size()}
	}
	return s, nil
}

// changed reports whether either file's modification time or size moved
// since the last load.
func (r *CertReloader) changed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.stamps()
	return err == nil && s != r.stamp
}

// Watch polls the files' modification times every interval (0:
// DefaultCertPollInterval) and reloads on change until ctx ends. One
// goroutine for the process, whatever the number of connections.
func (r *CertReloader) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultCertPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if r.changed() {
				if err := r.Reload(); err != nil {
					r.log.Error("TLS certificate reload failed; keeping the previous one", "cert", r.certFile, "err", err)
				}
			}
		}
	}
}
