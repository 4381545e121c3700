package app

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// peerTLS is how a process verifies the seghub services it calls, so the
// internal key is only ever sent to a server that proved who it is.
type peerTLS struct {
	own   tls.Certificate
	roots *x509.CertPool
}

// loadPeerTLS trusts the CA bundle at caFile, or, without one, this process's
// own certificate (one self-signed certificate shared by every service).
func loadPeerTLS(certFile, keyFile, caFile string) (*peerTLS, error) {
	own, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("SEGHUB_TLS_CERT / SEGHUB_TLS_KEY: %w", err)
	}
	roots := x509.NewCertPool()
	if caFile == "" {
		for _, der := range own.Certificate {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("SEGHUB_TLS_CERT: %w", err)
			}
			roots.AddCert(c)
		}
	} else {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("SEGHUB_TLS_CA: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("SEGHUB_TLS_CA: %s holds no PEM certificate", caFile)
		}
	}
	return &peerTLS{own: own, roots: roots}, nil
}

// config verifies another service by the trusted roots and the host name of
// its address. This process calling itself (the all-in-one) is verified by
// its own certificate instead, since it dials a loopback address that a
// certificate issued for a host name does not carry.
func (t *peerTLS) config(self bool) *tls.Config {
	if !self {
		return &tls.Config{RootCAs: t.roots, MinVersion: tls.VersionTLS12}
	}
	leaf := t.own.Certificate[0]
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is the pin below, not the host name.
		InsecureSkipVerify: true, //nolint:gosec
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, leaf) {
				return errors.New("seghub: the local gRPC server did not present this process's certificate")
			}
			return nil
		},
	}
}
