package localcluster

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func TestDNSServiceIP(t *testing.T) {
	tests := []struct{ family, cidr, want string }{
		{IPFamilyDual, "10.96.0.0/16", "10.96.0.10"},
		{IPFamilyIPv4, "10.100.0.0/24", "10.100.0.10"},
		{IPFamilyDual, "fd00::/108", ""}, // not of the primary family
		{IPFamilyDual, "nonsense", ""},
		// IPv6-only: the IPv6 range is the primary one.
		{IPFamilyIPv6, "fd00:10:96::/112", "fd00:10:96::a"},
		{IPFamilyIPv6, "10.96.0.0/16", ""},
		{IPFamilyIPv6, "fd00:10:96::/125", ""}, // 8 addresses: no tenth
	}
	for _, tt := range tests {
		cfg := DefaultConfig()
		cfg.IPFamily = tt.family
		if tt.family == IPFamilyIPv6 {
			cfg.ServiceCIDRv6 = tt.cidr
		} else {
			cfg.ServiceCIDR = tt.cidr
		}
		if got := cfg.DNSServiceIP(); got != tt.want {
			t.Errorf("%s: DNSServiceIP(%s) = %q, want %q", tt.family, tt.cidr, got, tt.want)
		}
	}
}

// TestRenderDNSManifest decodes every document of the CoreDNS manifest and
// checks what the cluster relies on: the Service's fixed ClusterIP, the
// image, and a Corefile serving cluster.local with pod records and no
// forwarding to an outside server.
func TestRenderDNSManifest(t *testing.T) {
	for _, tt := range []struct{ family, clusterIP string }{
		{IPFamilyDual, "10.96.0.10"}, {IPFamilyIPv4, "10.96.0.10"}, {IPFamilyIPv6, "fd00:10:96::a"},
	} {
		t.Run(tt.family, func(t *testing.T) { testRenderDNSManifest(t, tt.family, tt.clusterIP) })
	}
}

func testRenderDNSManifest(t *testing.T, family, clusterIP string) {
	cfg := DefaultConfig()
	cfg.IPFamily = family
	m, err := RenderDNSManifest(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(m)))
	kinds := map[string]int{}
	var svc corev1.Service
	var cm corev1.ConfigMap
	var dep appsv1.Deployment
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%v:\n%s", err, doc)
		}
		kinds[meta.Kind]++
		var into any
		switch meta.Kind {
		case "Service":
			into = &svc
		case "ConfigMap":
			into = &cm
		case "Deployment":
			into = &dep
		default:
			continue
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			t.Fatalf("%s: %v", meta.Kind, err)
		}
	}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"} {
		if kinds[k] != 1 {
			t.Errorf("%d objects of kind %s, want 1", kinds[k], k)
		}
	}
	if svc.Name != "kube-dns" || svc.Namespace != "kube-system" || svc.Spec.ClusterIP != clusterIP {
		t.Errorf("Service %s/%s clusterIP %s, want kube-system/kube-dns %s", svc.Namespace, svc.Name, svc.Spec.ClusterIP, clusterIP)
	}
	if len(dep.Spec.Template.Spec.Containers) != 1 || dep.Spec.Template.Spec.Containers[0].Image != CoreDNSImage {
		t.Errorf("Deployment containers %+v, want one with image %s", dep.Spec.Template.Spec.Containers, CoreDNSImage)
	}
	if dep.Spec.Template.Labels["k8s-app"] != "kube-dns" {
		t.Error("CoreDNS pods lack the label k8s-app=kube-dns")
	}
	cf := cm.Data["Corefile"]
	for _, want := range []string{"cluster.local:53", "kubernetes cluster.local in-addr.arpa ip6.arpa {", "pods insecure", "ready", "health"} {
		if !strings.Contains(cf, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, cf)
		}
	}
	if strings.Contains(cf, "forward") || strings.Contains(cf, ".:53") {
		t.Errorf("Corefile forwards or serves the root zone (the machine has no outside DNS):\n%s", cf)
	}
}

// TestCoreDNSVersionsAgree: the version hack/coredns-build.sh builds, the tag
// weir-image gives the image and the image the cluster deploys must agree.
func TestCoreDNSVersionsAgree(t *testing.T) {
	root := filepath.Join("..", "..")
	script, err := os.ReadFile(filepath.Join(root, "hack", "coredns-build.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`COREDNS_VERSION=\$\{COREDNS_VERSION:-(v[0-9.]+)\}`).FindSubmatch(script)
	if m == nil {
		t.Fatal("hack/coredns-build.sh: no default COREDNS_VERSION")
	}
	def, err := os.ReadFile(filepath.Join(root, "cmd", "weir-image", "coredns.go"))
	if err != nil {
		t.Fatal(err)
	}
	want := "weir-coredns:" + string(m[1])
	if CoreDNSImage != want {
		t.Errorf("localcluster.CoreDNSImage = %s, hack/coredns-build.sh builds %s", CoreDNSImage, want)
	}
	if !bytes.Contains(def, []byte(`repo: "weir-coredns", tag: "`+string(m[1])+`"`)) {
		t.Errorf("cmd/weir-image/coredns.go does not tag weir-coredns with %s", m[1])
	}
}
