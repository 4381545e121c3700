package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/config"
)

// issue writes a certificate for 127.0.0.1 signed by parent (self-signed when
// parent is nil) and returns its files.
func issue(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (certFile, keyFile string, cert *x509.Certificate, key *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: isCA, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile, cert, key
}

// tlsServer serves gRPC health over TLS and counts calls that carried the
// internal key.
func tlsServer(t *testing.T, certFile, keyFile string) (addr string, sawKey *atomic.Int64) {
	t.Helper()
	creds, err := credentials.NewServerTLSFromFile(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	sawKey = &atomic.Int64{}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("authorization")) > 0 {
			sawKey.Add(1)
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), sawKey
}

func TestInternalCallsVerifyTheServer(t *testing.T) {
	t.Parallel()
	caFile, _, ca, caKey := issue(t, "ca", nil, nil, true)
	goodCert, goodKey, _, _ := issue(t, "segmentsync", ca, caKey, false)
	rogueCert, rogueKey, _, _ := issue(t, "rogue", nil, nil, false)
	good, goodSaw := tlsServer(t, goodCert, goodKey)
	rogue, rogueSaw := tlsServer(t, rogueCert, rogueKey)

	const internalKey = "internal-key-0123456789abcdef0123456789"
	call := func(peers *peerTLS, addr string, self bool) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(peers.config(self))),
			grpc.WithPerRPCCredentials(auth.InternalCredentials{Key: internalKey}))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}

	withCA, err := loadPeerTLS(goodCert, goodKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(withCA, good, false); err != nil {
		t.Fatalf("a service with a certificate from SEGHUB_TLS_CA: %v", err)
	}
	if err := call(withCA, rogue, false); err == nil {
		t.Fatal("a server whose certificate SEGHUB_TLS_CA did not sign was trusted")
	}
	ownOnly, err := loadPeerTLS(goodCert, goodKey, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := call(ownOnly, good, true); err != nil {
		t.Fatalf("this process calling itself: %v", err)
	}
	if err := call(ownOnly, rogue, true); err == nil {
		t.Fatal("a local server presenting another certificate was trusted as this process")
	}
	if err := call(ownOnly, rogue, false); err == nil {
		t.Fatal("without SEGHUB_TLS_CA, a certificate other than ours was trusted")
	}
	if goodSaw.Load() != 2 || rogueSaw.Load() != 0 {
		t.Fatalf("internal key seen by the verified server %d times (want 2), by the unverified one %d times (want 0)", goodSaw.Load(), rogueSaw.Load())
	}
	if _, err := loadPeerTLS(goodCert, goodKey, goodKey); err == nil || !strings.Contains(err.Error(), "SEGHUB_TLS_CA") {
		t.Fatalf("a CA file without certificates: %v", err)
	}
}

func TestShortInternalKeyRefused(t *testing.T) {
	t.Parallel()
	env := map[string]string{"SEGHUB_INTERNAL_KEY": strings.Repeat("k", config.MinInternalKeyLength-1)}
	_, err := config.Load(nil, func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "at least 32 bytes") {
		t.Fatalf("a 31-byte internal key: %v", err)
	}
	env["SEGHUB_INTERNAL_KEY"] = strings.Repeat("k", config.MinInternalKeyLength)
	if _, err := config.Load(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatalf("a 32-byte internal key: %v", err)
	}
}
