package localcluster

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMkdirAllRecorded(t *testing.T) {
	base := t.TempDir()
	tests := []struct {
		name, dir string
		want      []string
	}{
		{"new chain", "a/b/c", []string{"a", "a/b", "a/b/c"}},
		{"parent exists", "a/b/d", []string{"a/b/d"}},
		{"exists", "a/b", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mkdirAllRecorded(filepath.Join(base, tt.dir))
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, w := range tt.want {
				want = append(want, filepath.Join(base, w))
			}
			if !slices.Equal(got, want) {
				t.Errorf("created %v, want %v", got, want)
			}
			if _, err := os.Stat(filepath.Join(base, tt.dir)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestRenderManifestReplacesAgentConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Manifest = filepath.Join("..", "..", "build", "yamls", "weir.yml")
	out, err := RenderManifest(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"datapathType: netdev", "underlayInterface: eth0", "kubeAPIServerOverride: " + cfg.APIServerURL(), "kind: DaemonSet"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rendered manifest lacks %q", want)
		}
	}
	cfg.Manifest = filepath.Join(t.TempDir(), "none.yml")
	if err := os.WriteFile(cfg.Manifest, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RenderManifest(cfg); err == nil {
		t.Error("a manifest without the weir-config ConfigMap was accepted")
	}
}

func TestNodeNamesAndAddresses(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Prefix, cfg.Subnet, cfg.PortBase = "h4", "172.31.230", 20000
	tests := []struct {
		idx      int
		name, ip string
	}{
		{ControlPlane, "h4-control-plane", "172.31.230.10"},
		{1, "h4-node1", "172.31.230.11"},
		{2, "h4-node2", "172.31.230.12"},
	}
	for _, tt := range tests {
		if got := cfg.NodeName(tt.idx); got != tt.name {
			t.Errorf("NodeName(%d) = %q, want %q", tt.idx, got, tt.name)
		}
		if got := cfg.NodeIP(tt.idx); got != tt.ip {
			t.Errorf("NodeIP(%d) = %q, want %q", tt.idx, got, tt.ip)
		}
	}
	// The API server lives on the control-plane node, not on the host bridge.
	if got, want := cfg.APIServerURL(), "https://172.31.230.10:20443"; got != want {
		t.Errorf("APIServerURL() = %q, want %q", got, want)
	}
}

func TestKubeletConfigClusterDNS(t *testing.T) {
	cfg := DefaultConfig()
	p, err := loadOrCreatePKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got := kubeletConfig(cfg, "weir-node1", p)
	for _, want := range []string{"clusterDomain: cluster.local\n", "clusterDNS: [10.96.0.10]\n", "cgroupRoot: /weir-node1\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("kubelet config lacks %q:\n%s", want, got)
		}
	}
}

func TestNsenterArgsKeepCallerDirectory(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bin/test-server", "probe", "--to", "x"}, "-t 42 -m -n --wd=/work/repo -- /work/repo/bin/test-server probe --to x"},
		{[]string{"./bin/weirctl", "get", "info"}, "-t 42 -m -n --wd=/work/repo -- /work/repo/bin/weirctl get info"},
		{[]string{"/usr/bin/ovs-ofctl", "show"}, "-t 42 -m -n --wd=/work/repo -- /usr/bin/ovs-ofctl show"},
		{[]string{"ip", "route"}, "-t 42 -m -n --wd=/work/repo -- ip route"}, // PATH lookup stays
	}
	for _, tt := range tests {
		in := slices.Clone(tt.args)
		if got := strings.Join(nsenterArgs(42, "/work/repo", tt.args), " "); got != tt.want {
			t.Errorf("nsenterArgs(%q) = %q, want %q", tt.args, got, tt.want)
		}
		if !slices.Equal(in, tt.args) {
			t.Errorf("nsenterArgs changed its argument: %q", tt.args)
		}
	}
}

func TestValidateExtraArgs(t *testing.T) {
	tests := []struct {
		name    string
		extra   map[string][]string
		wantErr string
	}{
		{"none", nil, ""},
		{"api server and etcd", map[string][]string{"kube-apiserver": {"--max-requests-inflight=800"}, "etcd": {"--quota-backend-bytes=8589934592"}}, ""},
		{"not a control-plane daemon", map[string][]string{"kubelet": {"--max-pods=200"}}, `extra args for "kubelet"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ExtraArgs = tt.extra
			err := cfg.Validate()
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestIPFamilies(t *testing.T) {
	tests := []struct {
		family                     string
		nodeIPs, clusterCIDRs, svc string
		wantErr                    string
	}{
		{IPFamilyIPv4, "172.31.250.11", "10.244.0.0/16", "10.96.0.0/16", ""},
		{IPFamilyDual, "172.31.250.11,fd00:172:31:250::11", "10.244.0.0/16,fd00:10:244::/56", "10.96.0.0/16,fd00:10:96::/112", ""},
		{IPFamilyIPv6, "", "", "", "not supported yet"},
		{"ipv5", "", "", "", "want ipv4 or dual"},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.IPFamily = tt.family
			err := cfg.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Validate: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.NodeIPs(1); got != tt.nodeIPs {
				t.Errorf("NodeIPs(1) = %q, want %q", got, tt.nodeIPs)
			}
			if got := cfg.ClusterCIDRs(); got != tt.clusterCIDRs {
				t.Errorf("ClusterCIDRs = %q, want %q", got, tt.clusterCIDRs)
			}
			if got := cfg.ServiceCIDRs(); got != tt.svc {
				t.Errorf("ServiceCIDRs = %q, want %q", got, tt.svc)
			}
			if !strings.Contains(cfg.AgentConfig(), "serviceCIDR: "+tt.svc+"\n") {
				t.Errorf("agent config lacks serviceCIDR %s:\n%s", tt.svc, cfg.AgentConfig())
			}
		})
	}
	t.Run("bad IPv6 cluster CIDR", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.ClusterCIDRv6 = "fd00:10:244::/64"
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "/60 or shorter") {
			t.Errorf("Validate: %v", err)
		}
	})
}

// TestResolveStateOfEarlierVersion: a cluster started before the IP family
// was recorded was IPv4-only, whatever today's default.
func TestResolveStateOfEarlierVersion(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	if err := os.WriteFile(cfg.statePath(), []byte(`{"prefix":"old","subnet":"172.31.1","portBase":3000,"nodes":[1]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := cfg.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if got.IPFamily != IPFamilyIPv4 || got.Prefix != "old" {
		t.Errorf("resolved family %q prefix %q, want ipv4 old", got.IPFamily, got.Prefix)
	}
}
