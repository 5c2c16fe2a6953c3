package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weirnet/weir/test/k8stest"
	"github.com/weirnet/weir/test/testctx"
)

func TestValidateAPIServerURL(t *testing.T) {
	tests := []struct {
		url     string
		wantErr bool
	}{
		{"https://172.31.250.1:17443", false},
		{"http://10.0.0.1:8080", false},
		{"https://api.example.com", false},
		{"https://[fd00::1]:6443/", false},
		{"172.31.250.1:17443", true},
		{"tcp://172.31.250.1:17443", true},
		{"https://", true},
		{"https://:6443", true},
		{"https://h:6443/api", true},
		{"https://u:p@h:6443", true},
		{"https://h:6443?x=1", true},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			err := validateAPIServerURL(tc.url)
			if (err != nil) != tc.wantErr {
				t.Fatalf("validateAPIServerURL(%q) = %v, want error %v", tc.url, err, tc.wantErr)
			}
			cfg := DefaultConfig()
			cfg.NodeName, cfg.KubeAPIServerOverride = "n1", tc.url
			if err := cfg.Validate(); (err != nil) != tc.wantErr {
				t.Fatalf("Config.Validate with kubeAPIServerOverride %q = %v, want error %v", tc.url, err, tc.wantErr)
			}
		})
	}
}

// TestServiceAccountConfig builds the override configuration from a
// service-account directory holding a real token (TokenRequest for
// default/default) and the cluster CA, and checks that the real
// kube-apiserver authenticates the agent as that service account at the
// override URL.
func TestServiceAccountConfig(t *testing.T) {
	cp := k8stest.Shared(t)
	admin := cp.ClientSet(t)
	tr, err := admin.CoreV1().ServiceAccounts(metav1.NamespaceDefault).CreateToken(testctx.Timeout(t, 2*time.Minute), "default",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a service-account token: %v", err)
	}
	ca, err := os.ReadFile(filepath.Join(cp.Dir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	saDir := t.TempDir()
	write := func(dir, name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(saDir, "token", tr.Status.Token+"\n")
	write(saDir, "ca.crt", string(ca))

	cfg, err := serviceAccountConfig(saDir, cp.Host)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != cp.Host || cfg.BearerTokenFile != filepath.Join(saDir, "token") ||
		cfg.BearerToken != tr.Status.Token || cfg.CAFile != filepath.Join(saDir, "ca.crt") {
		t.Fatalf("config: host %q token file %q CA file %q (token matches: %v)", cfg.Host, cfg.BearerTokenFile,
			cfg.CAFile, cfg.BearerToken == tr.Status.Token)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	review, err := client.AuthenticationV1().SelfSubjectReviews().Create(testctx.Timeout(t, 2*time.Minute),
		&authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview at %s: %v", cp.Host, err)
	}
	if got, want := review.Status.UserInfo.Username, "system:serviceaccount:default:default"; got != want {
		t.Fatalf("authenticated as %q, want %q", got, want)
	}

	// Broken directories and URLs.
	empty, noCA, badCA := t.TempDir(), t.TempDir(), t.TempDir()
	write(empty, "token", " \n")
	write(empty, "ca.crt", string(ca))
	write(noCA, "token", "x")
	write(badCA, "token", "x")
	write(badCA, "ca.crt", "not a certificate")
	for _, tc := range []struct {
		name, dir, host, wantErr string
	}{
		{"no token", t.TempDir(), cp.Host, "reading the service-account token"},
		{"empty token", empty, cp.Host, "is empty"},
		{"no CA", noCA, cp.Host, "reading the service-account CA"},
		{"bad CA", badCA, cp.Host, "reading the service-account CA"},
		{"bad URL", saDir, "127.0.0.1:6443", "must be an https:// or http:// URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := serviceAccountConfig(tc.dir, tc.host)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
