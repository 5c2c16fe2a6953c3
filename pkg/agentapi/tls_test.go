package agentapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

// TestServeTCPWithTLS: with apiTCPAddress the API is also served on TCP,
// with TLS only: a client trusting the certificate gets AgentInfo, a
// plaintext client does not; a TCP address without certificate is refused.
func TestServeTCPWithTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// A free port (the listener is closed again before Serve binds it).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	f := newFixture()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := f.srv.Serve(ctx, ServeConfig{UnixSocket: filepath.Join(dir, "x.sock"), TCPAddress: addr}); err == nil {
		t.Fatal("a TCP address without TLS files was accepted")
	}
	served := make(chan error, 1)
	go func() {
		served <- f.srv.Serve(ctx, ServeConfig{UnixSocket: filepath.Join(dir, "agent.sock"), TCPAddress: addr,
			TLSCertFile: certFile, TLSKeyFile: keyFile})
	}()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	call := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		info, err := agentv1.NewAgentServiceClient(conn).AgentInfo(cctx, &agentv1.AgentInfoRequest{})
		if err == nil && info.GetNodeName() != "node1" {
			t.Errorf("AgentInfo over TLS: node %q, want node1", info.GetNodeName())
		}
		return err
	}
	var tlsErr error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if tlsErr = call(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})); tlsErr == nil {
			break
		}
	}
	if tlsErr != nil {
		t.Fatalf("AgentInfo over TLS: %v", tlsErr)
	}
	if err := call(insecure.NewCredentials()); err == nil {
		t.Error("a plaintext client got an answer from the TLS listener")
	}
	cancel()
	if err := <-served; err != nil && ctx.Err() == nil {
		t.Errorf("Serve: %v", err)
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weir-agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
