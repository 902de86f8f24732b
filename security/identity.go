package security

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// LoadOrCreateKey returns the libp2p identity key stored at path in
// libp2p's private-key protobuf encoding (core/crypto MarshalPrivateKey, as
// written by go-libp2p and kubo). If the file does not exist it generates
// an Ed25519 key and writes it with mode 0600, failing rather than
// overwriting if another process creates the file first.
//
// Any key type core/crypto supports is loaded; new keys are Ed25519, which
// browsers and go-libp2p use by default and which verifies fastest.
func LoadOrCreateKey(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("security: identity key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("security: identity key: %w", err)
	}
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := writeNewKey(path, k); err != nil {
		// Name the file the operator gave, not the temporary one.
		return nil, fmt.Errorf("security: creating identity key %s: %w", path, errors.Unwrap(err))
	}
	return k, nil
}

// writeNewKey writes k to path, which must not exist: a temporary file is
// written and linked into place, so the key appears complete or not at all
// and an existing file is never replaced. Errors are *fs.PathError.
func writeNewKey(path string, k crypto.PrivKey) error {
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return &fs.PathError{Op: "marshal", Path: path, Err: err}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".identity-*")
	if err != nil {
		return &fs.PathError{Op: "create", Path: path, Err: underlying(err)}
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return &fs.PathError{Op: "chmod", Path: path, Err: underlying(err)}
	}
	if _, err := tmp.Write(b); err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: underlying(err)}
	}
	if err := tmp.Sync(); err != nil {
		return &fs.PathError{Op: "sync", Path: path, Err: underlying(err)}
	}
	if err := tmp.Close(); err != nil {
		return &fs.PathError{Op: "close", Path: path, Err: underlying(err)}
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return &fs.PathError{Op: "link", Path: path, Err: underlying(err)}
	}
	return nil
}

// underlying strips the path (the temporary file's) from a *fs.PathError or
// *os.LinkError.
func underlying(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return pe.Err
	case errors.As(err, &le):
		return le.Err
	}
	return err
}
