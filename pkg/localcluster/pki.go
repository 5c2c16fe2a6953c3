package localcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the throw-away certificate authority of one local cluster. Keys are
// ECDSA P-256: every Kubernetes component accepts them and they are generated
// in microseconds, which keeps `up` fast.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// certSpec describes one certificate signed by the cluster CA.
type certSpec struct {
	name   string // file name stem: <name>.crt / <name>.key
	cn     string
	orgs   []string
	server bool // serverAuth (with SANs) in addition to clientAuth
	dns    []string
	ips    []net.IP
}

// loadOrCreatePKI loads the CA from dir or creates it, so that certificates of
// a cluster survive `down`/`up` and kubeconfigs handed out stay valid.
func loadOrCreatePKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating PKI directory: %w", err)
	}
	p := &pki{dir: dir}
	cert, key, err := readPair(dir, "ca")
	if err == nil {
		p.caCert, p.caKey = cert, key
		return p, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "weir-local-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-signing CA: %w", err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	if err := writePair(dir, "ca", der, key); err != nil {
		return nil, err
	}
	p.caCert, p.caKey = cert, key
	return p, nil
}

func (p *pki) path(name, ext string) string { return filepath.Join(p.dir, name+"."+ext) }

// ensure creates the certificate unless it already exists.
func (p *pki) ensure(s certSpec) error {
	if _, err := os.Stat(p.path(s.name, "crt")); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating key for %s: %w", s.name, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if s.server {
		usages = append(usages, x509.ExtKeyUsageServerAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usages,
		DNSNames:     s.dns,
		IPAddresses:  s.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return fmt.Errorf("signing certificate %s: %w", s.name, err)
	}
	return writePair(p.dir, s.name, der, key)
}

// ensureKey creates a bare key pair (the service-account signing key).
func (p *pki) ensureKey(name string) error {
	if _, err := os.Stat(p.path(name, "key")); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating key %s: %w", name, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writeKey(p.path(name, "key"), key); err != nil {
		return err
	}
	return os.WriteFile(p.path(name, "pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// kubeconfig writes a kubeconfig for the named client certificate.
func (p *pki) kubeconfig(file, server, certName string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: weir-local
  cluster: {certificate-authority: %q, server: %q}
users:
- name: %s
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: weir-local
  context: {cluster: weir-local, user: %s}
current-context: weir-local
`, p.path("ca", "crt"), server, certName, p.path(certName, "crt"), p.path(certName, "key"), certName)
	return os.WriteFile(file, []byte(cfg), 0o600)
}

func writePair(dir, name string, der []byte, key *ecdsa.PrivateKey) error {
	if err := writeKey(filepath.Join(dir, name+".key"), key); err != nil {
		return err
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), crt, 0o644); err != nil {
		return fmt.Errorf("writing certificate %s: %w", name, err)
	}
	return nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("writing key %s: %w", path, err)
	}
	return nil
}

func readPair(dir, name string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	crtPEM, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(crtPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("%s: not PEM", name)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s.crt: %w", name, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s.key: %w", name, err)
	}
	return cert, key, nil
}
