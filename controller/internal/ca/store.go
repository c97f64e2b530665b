package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// File names inside the CA directory.
const (
	KeyFile  = "ca.key"
	CertFile = "ca.crt"
)

const (
	caCommonName = "Berth CA"
	maxFileSize  = 64 << 10 // far above a real key or certificate
	pemKeyType   = "PRIVATE KEY"
	pemCertType  = "CERTIFICATE"
)

// ErrKeyPermissions means ca.key is accessible to group or others.
var ErrKeyPermissions = errors.New("ca: private key file is accessible to group or others")

// LoadOrCreate loads the CA from dir (ca.key and ca.crt), creating it there
// on first start; created reports that this call made the key. Concurrent
// calls on one directory, from goroutines or processes, all end up with the
// same CA: files are created with a hard link, which fails when the name
// exists, and everyone uses what is on disk.
//
// A ca.key that group or others can access is refused (ErrKeyPermissions).
// A ca.crt that does not belong to ca.key, is not a CA certificate, or has
// expired is refused. When ca.key exists but ca.crt does not (a crash between
// the two, or a deleted ca.crt), a new root certificate is made for the same
// key: its pin is unchanged.
func LoadOrCreate(dir string, opts Options) (*CA, bool, error) {
	if err := opts.CheckAndSetDefaults(); err != nil {
		return nil, false, err
	}
	if dir == "" {
		return nil, false, errors.New("ca: no directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("ca: create directory: %w", err)
	}
	keyPath := filepath.Join(dir, KeyFile)
	certPath := filepath.Join(dir, CertFile)

	created := false
	key, err := readKey(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		// A ca.crt without ca.key means the CA's key was lost: making a new
		// one silently would orphan every agent. Creators link ca.key before
		// ca.crt, so if ca.crt is there, ca.key must be too (look again in
		// case another process just made both).
		if _, statErr := os.Stat(certPath); statErr == nil {
			if key, err = readKey(keyPath); errors.Is(err, fs.ErrNotExist) {
				return nil, false, fmt.Errorf("ca: %s exists but %s does not: the CA's private key is missing; "+
					"restore it from a backup, or remove %s to create a new CA (every agent must then enroll again)",
					certPath, keyPath, certPath)
			}
		} else {
			created, err = createKey(dir)
			if err != nil {
				return nil, false, err
			}
			key, err = readKey(keyPath)
		}
	}
	if err != nil {
		return nil, false, err
	}

	now := opts.Now()
	cert, err := readCert(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		der, err := selfSign(key, now)
		if err != nil {
			return nil, false, err
		}
		if _, err := createFile(dir, CertFile, pem.EncodeToMemory(&pem.Block{Type: pemCertType, Bytes: der}), 0o644); err != nil {
			return nil, false, err
		}
		cert, err = readCert(certPath)
		if err != nil {
			return nil, false, err
		}
	} else if err != nil {
		return nil, false, err
	}
	if err := checkRoot(cert, key, now); err != nil {
		return nil, false, fmt.Errorf("ca: %s: %w", certPath, err)
	}
	return newCA(key, cert, opts), created, nil
}

// createKey makes a new CA key and links it into place; won is false when
// another process linked its key first.
func createKey(dir string) (won bool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, fmt.Errorf("ca: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return false, fmt.Errorf("ca: encode key: %w", err)
	}
	return createFile(dir, KeyFile, pem.EncodeToMemory(&pem.Block{Type: pemKeyType, Bytes: der}), 0o600)
}

// selfSign makes the root certificate for key.
func selfSign(key *ecdsa.PrivateKey, now time.Time) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: self-sign root certificate: %w", err)
	}
	return der, nil
}

// checkRoot checks that cert is a usable root for key at now. NotBefore is
// not checked: a root that is not valid yet only fails verifications, and
// refusing to start over clock skew would not help.
func checkRoot(cert *x509.Certificate, key *ecdsa.PrivateKey, now time.Time) error {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return fmt.Errorf("certificate does not belong to %s (was one of the two files replaced?)", KeyFile)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("not a CA certificate")
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return fmt.Errorf("not a valid self-signed certificate: %w", err)
	}
	if !now.Before(cert.NotAfter) {
		return fmt.Errorf("CA certificate expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// createFile writes data to dir/name atomically and exclusively: a temporary
// file is written, fsynced and chmodded, then hard-linked to name. It
// reports false, and leaves the existing file alone, when name exists.
func createFile(dir, name string, data []byte, mode os.FileMode) (bool, error) {
	final := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("ca: create %s: %w", final, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return false, fmt.Errorf("ca: chmod %s: %w", tmpName, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, fmt.Errorf("ca: write %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("ca: fsync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("ca: close %s: %w", tmpName, err)
	}
	if err := os.Link(tmpName, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("ca: create %s (the file system must support hard links): %w", final, err)
	}
	if err := syncDir(dir); err != nil {
		return false, fmt.Errorf("ca: fsync %s: %w", dir, err)
	}
	return true, nil
}

func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readKey reads and parses ca.key, refusing loose permissions first.
func readKey(path string) (*ecdsa.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("ca: open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ca: stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("ca: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrKeyPermissions, path, perm, path)
	}
	data, err := readLimited(f, path)
	if err != nil {
		return nil, err
	}
	der, err := onePEM(data, pemKeyType)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("ca: %s: want an ECDSA P-256 key, got %T", path, k)
	}
	return key, nil
}

// readCert reads and parses ca.crt.
func readCert(path string) (*x509.Certificate, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("ca: open %s: %w", path, err)
	}
	defer f.Close()
	data, err := readLimited(f, path)
	if err != nil {
		return nil, err
	}
	der, err := onePEM(data, pemCertType)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return cert, nil
}

func readLimited(f *os.File, path string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("ca: read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("ca: %s is larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// onePEM returns the bytes of the single PEM block of type typ in data.
func onePEM(data []byte, typ string) ([]byte, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM %q block", typ)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, typ)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unexpected data after the PEM block")
	}
	return block.Bytes, nil
}
