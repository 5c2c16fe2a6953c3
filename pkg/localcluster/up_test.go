package localcluster

import (
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
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
		// primary is the control-plane node's primary address, dns the
		// kube-dns ClusterIP.
		primary, apiURL, dns string
		wantErr              string
	}{
		{IPFamilyIPv4, "172.31.250.11", "10.244.0.0/16", "10.96.0.0/16",
			"172.31.250.10", "https://172.31.250.10:17443", "10.96.0.10", ""},
		{IPFamilyDual, "172.31.250.11,fd00:172:31:250::11", "10.244.0.0/16,fd00:10:244::/56", "10.96.0.0/16,fd00:10:96::/112",
			"172.31.250.10", "https://172.31.250.10:17443", "10.96.0.10", ""},
		{IPFamilyIPv6, "fd00:172:31:250::11", "fd00:10:244::/56", "fd00:10:96::/112",
			"fd00:172:31:250::10", "https://[fd00:172:31:250::10]:17443", "fd00:10:96::a", ""},
		{"ipv5", "", "", "", "", "", "", "want ipv4, dual or ipv6"},
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
			if got := cfg.PrimaryNodeIP(ControlPlane); got != tt.primary {
				t.Errorf("PrimaryNodeIP(ControlPlane) = %q, want %q", got, tt.primary)
			}
			if got := cfg.APIServerURL(); got != tt.apiURL {
				t.Errorf("APIServerURL = %q, want %q", got, tt.apiURL)
			}
			if got := cfg.DNSServiceIP(); got != tt.dns {
				t.Errorf("DNSServiceIP = %q, want %q", got, tt.dns)
			}
			// The agent reads this YAML: the values must survive parsing
			// (an IPv6 URL's brackets included).
			var agent struct {
				ServiceCIDR           string `json:"serviceCIDR"`
				KubeAPIServerOverride string `json:"kubeAPIServerOverride"`
			}
			if err := yaml.Unmarshal([]byte(cfg.AgentConfig()), &agent); err != nil {
				t.Fatalf("agent config: %v\n%s", err, cfg.AgentConfig())
			}
			if agent.ServiceCIDR != tt.svc || agent.KubeAPIServerOverride != tt.apiURL {
				t.Errorf("agent config has serviceCIDR %q, kubeAPIServerOverride %q; want %q, %q", agent.ServiceCIDR, agent.KubeAPIServerOverride, tt.svc, tt.apiURL)
			}
			p, err := loadOrCreatePKI(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			var kc struct {
				ClusterDNS []string `json:"clusterDNS"`
			}
			if err := yaml.Unmarshal([]byte(kubeletConfig(cfg, "n1", p)), &kc); err != nil || !slices.Equal(kc.ClusterDNS, []string{tt.dns}) {
				t.Errorf("kubelet config: clusterDNS %q (%v), want [%s]", kc.ClusterDNS, err, tt.dns)
			}
		})
	}
	t.Run("bad IPv6 cluster CIDR", func(t *testing.T) {
		for _, fam := range []string{IPFamilyDual, IPFamilyIPv6} {
			cfg := DefaultConfig()
			cfg.IPFamily = fam
			cfg.ClusterCIDRv6 = "fd00:10:244::/64"
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "/60 or shorter") {
				t.Errorf("%s: Validate: %v", fam, err)
			}
		}
	})
}

// TestControlPlaneArgs: the control plane's flags of each family. A
// single-family cluster gets its family's node mask flag only (the
// controller-manager refuses the other's); an IPv6-only one single-family
// ranges, the single-stack mask flag and an IPv6 advertise address (the
// kubernetes Service's endpoint must be of the primary service family).
func TestControlPlaneArgs(t *testing.T) {
	tests := []struct {
		family          string
		apiWant         []string
		cmWant, cmNever []string
	}{
		{IPFamilyIPv4,
			[]string{"--bind-address=0.0.0.0", "--advertise-address=172.31.250.10", "--service-cluster-ip-range=10.96.0.0/16"},
			[]string{"--cluster-cidr=10.244.0.0/16", "--node-cidr-mask-size-ipv4=24", "--service-cluster-ip-range=10.96.0.0/16"},
			// The controller-manager exits with the IPv6 flag on an IPv4-only cluster.
			[]string{"--node-cidr-mask-size=64", "--node-cidr-mask-size-ipv6=64"}},
		{IPFamilyDual,
			[]string{"--bind-address=0.0.0.0", "--advertise-address=172.31.250.10", "--service-cluster-ip-range=10.96.0.0/16,fd00:10:96::/112"},
			[]string{"--cluster-cidr=10.244.0.0/16,fd00:10:244::/56", "--node-cidr-mask-size-ipv4=24", "--node-cidr-mask-size-ipv6=64",
				"--service-cluster-ip-range=10.96.0.0/16,fd00:10:96::/112"},
			[]string{"--node-cidr-mask-size=64"}},
		{IPFamilyIPv6,
			[]string{"--bind-address=::", "--advertise-address=fd00:172:31:250::10", "--service-cluster-ip-range=fd00:10:96::/112"},
			[]string{"--cluster-cidr=fd00:10:244::/56", "--node-cidr-mask-size=64", "--service-cluster-ip-range=fd00:10:96::/112"},
			[]string{"--node-cidr-mask-size-ipv4=24", "--node-cidr-mask-size-ipv6=64"}},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.IPFamily = tt.family
			api := apiServerArgs(cfg, "/pki", "http://127.0.0.1:17379")
			for _, w := range tt.apiWant {
				if !slices.Contains(api, w) {
					t.Errorf("kube-apiserver lacks %s: %q", w, api)
				}
			}
			cm := controllerManagerArgs(cfg, "/pki")
			for _, w := range tt.cmWant {
				if !slices.Contains(cm, w) {
					t.Errorf("kube-controller-manager lacks %s: %q", w, cm)
				}
			}
			for _, n := range tt.cmNever {
				if slices.Contains(cm, n) {
					t.Errorf("kube-controller-manager has %s: %q", n, cm)
				}
			}
		})
	}
}

// TestAPIServerCertificateAndKubeconfigs: the API server's certificate
// names every address clients use (the IPv6 node address and the IPv6
// kubernetes ClusterIP on an IPv6-only cluster), and the kubeconfigs point
// at a URL client-go parses to that address.
func TestAPIServerCertificateAndKubeconfigs(t *testing.T) {
	tests := []struct {
		family  string
		want    []string
		notWant []string
	}{
		{IPFamilyIPv4, []string{"127.0.0.1", "172.31.250.10", "10.96.0.1"}, []string{"::1", "fd00:172:31:250::10"}},
		{IPFamilyDual, []string{"127.0.0.1", "172.31.250.10", "10.96.0.1", "::1", "fd00:172:31:250::10"}, []string{"fd00:10:96::1"}},
		{IPFamilyIPv6, []string{"127.0.0.1", "::1", "fd00:172:31:250::10", "fd00:10:96::1"}, []string{"172.31.250.10", "10.96.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.IPFamily, cfg.Dir = tt.family, t.TempDir()
			p, err := clusterPKI(cfg)
			if err != nil {
				t.Fatal(err)
			}
			cert, _, err := readPair(p.dir, "apiserver")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range cert.IPAddresses {
				got = append(got, ip.String())
			}
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("API server certificate IP SANs %v lack %s", got, w)
				}
			}
			for _, n := range tt.notWant {
				if slices.Contains(got, n) {
					t.Errorf("API server certificate IP SANs %v have %s", got, n)
				}
			}
			rc, err := clientcmd.BuildConfigFromFlags("", cfg.KubeconfigPath())
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(rc.Host)
			if err != nil {
				t.Fatalf("kubeconfig server %q: %v", rc.Host, err)
			}
			if u.Hostname() != cfg.PrimaryNodeIP(ControlPlane) || !slices.Contains(got, u.Hostname()) {
				t.Errorf("kubeconfig server %q: host %q, want %s (and in the certificate)", rc.Host, u.Hostname(), cfg.PrimaryNodeIP(ControlPlane))
			}
		})
	}
}

// TestNodeNetworkSteps: an IPv4 or dual-stack node's network as before the
// IPv6-only family existed (exact commands), and an IPv6-only node with no
// IPv4 address or route at all.
func TestNodeNetworkSteps(t *testing.T) {
	common := []string{
		"ip netns add weir-node1",
		"ip link add weir-v1 type veth peer name eth0 netns weir-node1",
		"ip link set weir-v1 master weir-br up",
		"ethtool -K weir-v1 tx off",
		"ip -n weir-node1 link set lo up",
	}
	v4 := []string{
		"ip -n weir-node1 addr add 172.31.250.11/24 dev eth0",
		"ip -n weir-node1 link set eth0 up",
		"ip -n weir-node1 route add default via 172.31.250.1",
		"ip -n weir-node1 route add unreachable 10.244.0.0/16",
	}
	v6 := []string{
		"ip -n weir-node1 addr add fd00:172:31:250::11/64 dev eth0 nodad",
		"ip -n weir-node1 -6 route add default via fd00:172:31:250::1",
		"ip -n weir-node1 -6 route add unreachable fd00:10:244::/56",
	}
	boot4 := []string{"addr flush dev eth0", "addr add 172.31.250.11/24 dev eth0", "link set eth0 up",
		"route replace default via 172.31.250.1", "route replace unreachable 10.244.0.0/16"}
	boot6 := []string{"addr add fd00:172:31:250::11/64 dev eth0 nodad", "-6 route replace default via fd00:172:31:250::1",
		"-6 route replace unreachable fd00:10:244::/56"}
	tests := []struct {
		family     string
		want, boot []string
	}{
		{IPFamilyIPv4, slices.Concat(common, v4), boot4},
		{IPFamilyDual, slices.Concat(common, v4, v6), slices.Concat(boot4, boot6)},
		{IPFamilyIPv6, slices.Concat(common, []string{"ip -n weir-node1 link set eth0 up"}, v6),
			slices.Concat([]string{"addr flush dev eth0", "link set eth0 up"}, boot6)},
	}
	join := func(steps [][]string) []string {
		var out []string
		for _, s := range steps {
			out = append(out, strings.Join(s, " "))
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.IPFamily = tt.family
			if got := join(cfg.nodeNetworkSteps(1)); !slices.Equal(got, tt.want) {
				t.Errorf("nodeNetworkSteps:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if got := join(cfg.bootNetworkSteps(1)); !slices.Equal(got, tt.boot) {
				t.Errorf("bootNetworkSteps:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.boot, "\n"))
			}
		})
	}
}

// TestRulesetsPerFamily: the leak guard and the node's ClusterIP reject rule
// hold exactly the cluster's families.
func TestRulesetsPerFamily(t *testing.T) {
	tests := []struct {
		family     string
		has, lacks []string
	}{
		{IPFamilyIPv4, []string{"ip daddr 10.96.0.0/16 counter reject", "elements = { 10.244.0.0/16, 10.96.0.0/16 }", "ip daddr @cluster drop"},
			[]string{"ip6 daddr", "cluster6"}},
		{IPFamilyDual, []string{"ip daddr 10.96.0.0/16 counter reject", "ip6 daddr fd00:10:96::/112 counter reject",
			"elements = { 10.244.0.0/16, 10.96.0.0/16 }", "elements = { fd00:10:244::/56, fd00:10:96::/112 }"}, nil},
		{IPFamilyIPv6, []string{"ip6 daddr fd00:10:96::/112 counter reject", "elements = { fd00:10:244::/56, fd00:10:96::/112 }", "ip6 daddr @cluster6 drop"},
			[]string{"ip daddr", "10.244.", "10.96.", "set cluster {", "set leaks {"}},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.IPFamily = tt.family
			rules := cfg.guardRuleset() + cfg.nodeRuleset()
			for _, h := range tt.has {
				if !strings.Contains(rules, h) {
					t.Errorf("rulesets lack %q:\n%s", h, rules)
				}
			}
			for _, l := range tt.lacks {
				if strings.Contains(rules, l) {
					t.Errorf("rulesets have %q:\n%s", l, rules)
				}
			}
		})
	}
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

// TestResolveIPv6Only: the family an Up recorded is what later commands
// act on, whatever their own default.
func TestResolveIPv6Only(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.IPFamily = IPFamilyIPv6
	if err := cfg.saveState(state{Prefix: "v6", Subnet: "172.31.2", PortBase: 3000, IPFamily: cfg.IPFamily}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(cfg.statePath())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"ipFamily": "ipv6"`) {
		t.Errorf("state.json lacks the family: %s", data)
	}
	other := DefaultConfig()
	other.Dir = cfg.Dir
	got, err := other.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if got.IPFamily != IPFamilyIPv6 || got.APIServerURL() != "https://[fd00:172:31:2::10]:3443" {
		t.Errorf("resolved family %q, API server %s; want ipv6, https://[fd00:172:31:2::10]:3443", got.IPFamily, got.APIServerURL())
	}
}
