package pgtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Names of the certificate and key in the server's temp dir. They live
// outside the data dir so that nothing initdb or a test writes there can
// collide with them.
const (
	certName = "server.crt"
	keyName  = "server.key"
)

// tlsSettings are the postgresql.conf settings Options.TLS manages: letting
// a caller point them elsewhere would make CACertPEM describe a certificate
// the server does not use.
var tlsSettings = []string{"ssl", "ssl_cert_file", "ssl_key_file"}

// certValidity is long enough for an --embedded server that runs for months
// and short enough that a leaked test key is not trusted forever.
const certValidity = 365 * 24 * time.Hour

// selfSigned makes a certificate for Host and localhost that is its own CA,
// and its key, both PEM.
func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generating certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "pgtest " + Host, Organization: []string{"pgtest"}},
		// Backdated so that a client whose clock is slightly behind ours
		// does not reject a certificate that is "not yet valid".
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP(Host)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding TLS key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// WriteSelfSignedCert writes a certificate for 127.0.0.1 and localhost that
// is its own CA (cert.pem) and its key (key.pem) into dir, for tests of TLS
// servers other than PostgreSQL: clients verify it with cert.pem as CA.
func WriteSelfSignedCert(dir string) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeServerCert generates a self-signed certificate and its key in dir and
// returns the certificate's PEM and the settings that make Postgres use them.
//
// The certificate is its own CA (the setup the PostgreSQL manual describes
// for self-signed servers), so clients verify it with sslrootcert pointing
// at the certificate itself, both in Go and in libpq/OpenSSL.
func (r runAs) writeServerCert(dir string) (certPEM []byte, settings map[string]string, err error) {
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return nil, nil, err
	}
	certPath := filepath.Join(dir, certName)
	keyPath := filepath.Join(dir, keyName)
	// Postgres refuses to start unless the key belongs to its OS user and
	// is not readable by group or others, which is what writeFile does.
	if err := r.writeFile(keyPath, string(keyPEM)); err != nil {
		return nil, nil, err
	}
	if err := r.writeFile(certPath, string(certPEM)); err != nil {
		return nil, nil, err
	}
	return certPEM, map[string]string{
		"ssl":           "on",
		"ssl_cert_file": certPath,
		"ssl_key_file":  keyPath,
	}, nil
}

// CACertPEM returns the PEM certificate clients should trust to verify the
// server, or nil when it was started without Options.TLS. The server's
// certificate is self-signed, so this is the certificate itself.
func (p *Postgres) CACertPEM() []byte {
	if p.certPEM == nil {
		return nil
	}
	return append([]byte(nil), p.certPEM...)
}

// CACertFile returns the path of the file holding CACertPEM, for clients
// such as psql that take sslrootcert, or "" without Options.TLS. It is
// deleted by Stop, and only the server's OS user and root can read it.
func (p *Postgres) CACertFile() string {
	if p.certPEM == nil {
		return ""
	}
	return filepath.Join(p.dir, certName)
}
