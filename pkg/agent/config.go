// Package agent wires ovs-agent together: configuration, start-up order
// (bridge, gateway, pipeline, state restore, CNI server), readiness and
// shutdown. It owns no networking logic of its own.
package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Config is ovs-agent's configuration file (YAML). Every field has a
// default; see DefaultConfig and docs/agent.md.
type Config struct {
	// Bridge is the OVS integration bridge Weir owns.
	Bridge string `json:"bridge"`
	// DatapathType is "system" (the kernel datapath, production default)
	// or "netdev" (OVS's userspace datapath, for machines without the
	// kernel module).
	DatapathType string `json:"datapathType"`
	// OVSRunDir holds ovs-vswitchd's <bridge>.mgmt OpenFlow socket.
	OVSRunDir string `json:"ovsRunDir"`
	// OVSDBEndpoint is ovsdb-server's socket, e.g. unix:/var/run/openvswitch/db.sock.
	OVSDBEndpoint string `json:"ovsdbEndpoint"`
	// PodCIDR is the node's pod subnet; the gateway gets its first address.
	// An IPv4 CIDR, or an IPv6 one for an IPv6-only node. When empty, the
	// agent reads its pod CIDRs from its Node object (spec.podCIDRs), which
	// needs NodeName.
	PodCIDR string `json:"podCIDR"`
	// PodCIDRv6, with a static IPv4 PodCIDR, makes the node dual-stack:
	// pods also get an address of this IPv6 subnet (the gateway its first).
	// With the pod CIDRs read from the Node, an IPv6 entry of
	// spec.podCIDRs does.
	PodCIDRv6 string `json:"podCIDRv6"`
	// Kubeconfig is the path of a kubeconfig file for reaching the API
	// server; empty means the in-cluster configuration (service account).
	Kubeconfig string `json:"kubeconfig"`
	// KubeAPIServerOverride, e.g. "https://172.31.250.1:6443", is the API
	// server to use with the in-cluster service-account credentials (when
	// Kubeconfig is empty) instead of the kubernetes Service's ClusterIP, so
	// the agent does not depend on kube-proxy.
	KubeAPIServerOverride string `json:"kubeAPIServerOverride"`
	// NodeName is the name of this node's Node object. It defaults to the
	// NODE_NAME environment variable (set from spec.nodeName with the
	// downward API in the DaemonSet).
	NodeName string `json:"nodeName"`
	// GatewayName is the gateway interface (an OVS internal port).
	GatewayName string `json:"gatewayName"`
	// MTU of pod interfaces and the gateway. 0 (the default) means auto:
	// with a tunnel, the underlay's MTU less the Geneve overhead
	// (nodenet.PodMTU); without one, 1500. An explicit value wins.
	MTU int `json:"mtu"`
	// TunnelPort is the Geneve port on Bridge (OpenFlow port 1), created in
	// cluster mode (NodeName set).
	TunnelPort string `json:"tunnelPort"`
	// UnderlayInterface optionally names the NIC whose IPv4 address is the
	// node's tunnel endpoint. With datapathType netdev the agent moves its
	// addresses (IPv4 and global IPv6) and gateway routes onto the OVS
	// bridge br-phy at start (nodenet.SetupUnderlay); with the kernel
	// datapath it is only read for the MTU.
	UnderlayInterface string `json:"underlayInterface"`
	// CNISocket is where the CNI server listens (mode 0600).
	CNISocket string `json:"cniSocket"`
	// StateDir keeps the IPAM allocations across restarts.
	StateDir string `json:"stateDir"`
	// CTZone is the conntrack zone of pod traffic.
	CTZone uint16 `json:"ctZone"`
	// SNAT masquerades pod traffic that leaves the node other than through
	// the gateway (i.e. to destinations outside the cluster) to the node's
	// address, in the nftables table "ip weir" (nodenet.ReconcileSNAT).
	// Default true; false removes that table at start.
	SNAT bool `json:"snat"`
	// ServiceCIDR is the cluster's ClusterIP range (kube-apiserver
	// --service-cluster-ip-range): one CIDR, or "IPv4,IPv6" on a
	// dual-stack cluster (an IPv6-only cluster: its IPv6 CIDR). A range of
	// a family the node has no pods of is ignored (logged). A pod's packets to it are not subject to
	// egress NetworkPolicy before kube-proxy translated them: policy applies
	// to the Service's endpoints, as Kubernetes specifies. Default
	// 10.96.0.0/12 (kubeadm's default); empty disables the exemption, so an
	// egress-isolated pod then needs a rule allowing the ClusterIPs.
	ServiceCIDR string `json:"serviceCIDR"`
	// ProxyMode chooses who load-balances Services (docs/proxy.md): "off"
	// (the default; empty means off): pods' Service traffic goes to the
	// node's kube-proxy through the gateway; "coexist": Weir's own proxy
	// load-balances pods' Service traffic in OVS (select groups, ct(nat))
	// and kube-proxy, still running, the node's and external traffic and
	// the health check node ports. Needs cluster mode. "all": the
	// kube-proxy-free mode: Weir also load-balances the node's own and
	// external Service traffic (NodePorts, ExternalIPs, LB IPs) and serves
	// the health check node ports; needs kubeAPIServerOverride (or a
	// kubeconfig) and serviceCIDR.
	ProxyMode string `json:"proxyMode"`
	// MetricsAddress is where the agent serves Prometheus metrics (/metrics)
	// and its health endpoints (/healthz, /readyz), e.g. ":9495"; empty
	// disables the server. See docs/tooling.md, "Metrics and health".
	MetricsAddress string `json:"metricsAddress"`
	// APISocket is where the operator tooling API (weir.agent.v1.AgentService,
	// docs/tooling.md) listens (mode 0600). Empty (the default) means
	// agent.sock next to CNISocket: /var/run/weir/agent.sock by default.
	APISocket string `json:"apiSocket"`
	// APITCPAddress, e.g. ":10351", additionally serves the tooling API on
	// TCP with TLS (APITLSCertFile, APITLSKeyFile). Empty: unix socket only.
	APITCPAddress  string `json:"apiTCPAddress"`
	APITLSCertFile string `json:"apiTLSCertFile"`
	APITLSKeyFile  string `json:"apiTLSKeyFile"`
}

// The values of Config.ProxyMode.
const (
	ProxyOff     = "off"
	ProxyCoexist = "coexist"
	// ProxyAll is the kube-proxy-free mode (docs/proxy.md): Weir also
	// serves the node's own and external Service traffic.
	ProxyAll = "all"
)

// ProxyEnabled reports whether Weir's own Service proxy runs.
func (c Config) ProxyEnabled() bool { return c.ProxyMode == ProxyCoexist || c.ProxyMode == ProxyAll }

// ProxyAllEnabled reports whether Weir's proxy replaces kube-proxy.
func (c Config) ProxyAllEnabled() bool { return c.ProxyMode == ProxyAll }

// NodeNameEnv is the environment variable NodeName defaults to.
const NodeNameEnv = "NODE_NAME"

// DefaultConfig returns the defaults. NodeName comes from the NODE_NAME
// environment variable.
func DefaultConfig() Config {
	return Config{
		NodeName:       os.Getenv(NodeNameEnv),
		Bridge:         "br-int",
		DatapathType:   "system",
		OVSRunDir:      "/var/run/openvswitch",
		OVSDBEndpoint:  "unix:/var/run/openvswitch/db.sock",
		GatewayName:    "weir-gw0",
		TunnelPort:     "weir-tun0",
		CNISocket:      "/var/run/weir/cni.sock",
		StateDir:       "/var/lib/weir",
		CTZone:         65520,
		SNAT:           true,
		ServiceCIDR:    "10.96.0.0/12",
		MetricsAddress: ":9495",
	}
}

// LoadConfig reads a YAML file over the defaults. Unknown fields are an
// error, so a typo does not silently fall back to a default.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("reading agent config: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return cfg, fmt.Errorf("parsing agent config %s: %w", path, err)
	}
	return cfg, nil
}

// ClusterMode reports whether the agent works with the API server: NodeName
// is set, so it watches Nodes for tunnel peers (and, without a static
// PodCIDR, reads its own pod CIDR from its Node).
func (c Config) ClusterMode() bool { return c.NodeName != "" }

// APISocketPath is where the tooling API listens: APISocket, else
// agent.sock next to CNISocket.
func (c Config) APISocketPath() string {
	if c.APISocket != "" {
		return c.APISocket
	}
	return filepath.Join(filepath.Dir(c.CNISocket), "agent.sock")
}

// MgmtSocket is the bridge's OpenFlow management socket.
func (c Config) MgmtSocket() string { return filepath.Join(c.OVSRunDir, c.Bridge+".mgmt") }

// Validate checks the configuration and names every problem it finds.
func (c Config) Validate() error {
	var errs []error
	if c.Bridge == "" || len(c.Bridge) > 15 {
		errs = append(errs, fmt.Errorf("bridge %q: need a name of 1 to 15 characters", c.Bridge))
	}
	if c.DatapathType != "system" && c.DatapathType != "netdev" {
		errs = append(errs, fmt.Errorf("datapathType %q: must be \"system\" or \"netdev\"", c.DatapathType))
	}
	if c.GatewayName == "" || len(c.GatewayName) > 15 {
		errs = append(errs, fmt.Errorf("gatewayName %q: need a name of 1 to 15 characters", c.GatewayName))
	}
	switch {
	case c.PodCIDR == "" && c.NodeName == "":
		errs = append(errs, errors.New("podCIDR is required (e.g. 10.244.1.0/24, or fd00:10:244:1::/64 for an IPv6-only node) "+
			"unless nodeName (or $NODE_NAME) names the Node to read spec.podCIDRs from"))
	case c.PodCIDR == "" && c.PodCIDRv6 != "":
		errs = append(errs, errors.New("podCIDRv6 needs a static IPv4 podCIDR (for an IPv6-only node, set podCIDR to the IPv6 CIDR)"))
	case c.PodCIDR != "":
		if _, err := c.ParsePodCIDRs(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.KubeAPIServerOverride != "" {
		if err := validateAPIServerURL(c.KubeAPIServerOverride); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ServiceCIDR != "" {
		if _, _, err := c.ParseServiceCIDRs(); err != nil {
			errs = append(errs, err)
		}
	}
	switch c.ProxyMode {
	case "", ProxyOff:
	case ProxyCoexist:
		if !c.ClusterMode() {
			errs = append(errs, fmt.Errorf("proxyMode %q needs nodeName (cluster mode): the proxy watches Services", c.ProxyMode))
		}
	case ProxyAll:
		// Without kube-proxy nothing load-balances the kubernetes
		// Service's ClusterIP before the agent has synced the Services, so
		// the agent must reach the API server another way; and the node's
		// routes and reject rule are per Service CIDR.
		if !c.ClusterMode() {
			errs = append(errs, fmt.Errorf("proxyMode %q needs nodeName (cluster mode): the proxy watches Services", c.ProxyMode))
		}
		if c.KubeAPIServerOverride == "" && c.Kubeconfig == "" {
			errs = append(errs, fmt.Errorf("proxyMode %q needs kubeAPIServerOverride (or a kubeconfig): without kube-proxy the API server's ClusterIP is served only once the agent runs", c.ProxyMode))
		}
		if c.ServiceCIDR == "" {
			errs = append(errs, fmt.Errorf("proxyMode %q needs serviceCIDR: the node routes it into OVS and rejects it without endpoints", c.ProxyMode))
		}
	default:
		errs = append(errs, fmt.Errorf("proxyMode %q: want %q, %q or %q", c.ProxyMode, ProxyOff, ProxyCoexist, ProxyAll))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 9000) {
		errs = append(errs, fmt.Errorf("mtu %d: must be 0 (auto) or between 576 and 9000", c.MTU))
	}
	if c.TunnelPort == "" || len(c.TunnelPort) > 15 {
		errs = append(errs, fmt.Errorf("tunnelPort %q: need a name of 1 to 15 characters", c.TunnelPort))
	}
	if len(c.UnderlayInterface) > 15 {
		errs = append(errs, fmt.Errorf("underlayInterface %q: interface names have at most 15 characters", c.UnderlayInterface))
	}
	if !strings.HasPrefix(c.OVSDBEndpoint, "unix:") && !strings.HasPrefix(c.OVSDBEndpoint, "tcp:") {
		errs = append(errs, fmt.Errorf("ovsdbEndpoint %q: must start with unix: or tcp:", c.OVSDBEndpoint))
	}
	for name, p := range map[string]string{"cniSocket": c.CNISocket, "stateDir": c.StateDir, "ovsRunDir": c.OVSRunDir} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q: must be an absolute path", name, p))
		}
	}
	if c.APISocket != "" && !filepath.IsAbs(c.APISocket) {
		errs = append(errs, fmt.Errorf("apiSocket %q: must be an absolute path", c.APISocket))
	}
	if c.APITCPAddress != "" && (c.APITLSCertFile == "" || c.APITLSKeyFile == "") {
		errs = append(errs, fmt.Errorf("apiTCPAddress %q: needs apiTLSCertFile and apiTLSKeyFile (the API is only served on TCP with TLS)",
			c.APITCPAddress))
	}
	return errors.Join(errs...)
}

// ParsePodCIDRs returns the static pod CIDRs: PodCIDR, IPv4 or (an
// IPv6-only node) IPv6, and PodCIDRv6 beside an IPv4 PodCIDR (dual-stack).
func (c Config) ParsePodCIDRs() (PodCIDRs, error) {
	if c.PodCIDR == "" {
		return PodCIDRs{}, errors.New("podCIDR is required (e.g. 10.244.1.0/24)")
	}
	ip, _, err := net.ParseCIDR(c.PodCIDR)
	if err != nil {
		return PodCIDRs{}, fmt.Errorf("podCIDR %q: %w", c.PodCIDR, err)
	}
	if ip.To4() == nil {
		if c.PodCIDRv6 != "" {
			return PodCIDRs{}, fmt.Errorf("podCIDR %q is IPv6 and podCIDRv6 %q is set too: give an IPv4 podCIDR with podCIDRv6 "+
				"(dual-stack), or the IPv6 CIDR alone (IPv6-only)", c.PodCIDR, c.PodCIDRv6)
		}
		v6, err := parseIPv6PodCIDR(c.PodCIDR)
		return PodCIDRs{IPv6: v6}, err
	}
	v4, err := parseIPv4PodCIDR(c.PodCIDR)
	if err != nil {
		return PodCIDRs{}, err
	}
	out := PodCIDRs{IPv4: v4}
	if c.PodCIDRv6 != "" {
		if out.IPv6, err = parseIPv6PodCIDR(c.PodCIDRv6); err != nil {
			return PodCIDRs{}, err
		}
	}
	return out, nil
}

// parseIPv6PodCIDR parses s as an IPv6 pod subnet: canonical (no host
// bits), from /48 to /120 (the controller-manager gives nodes /64).
func parseIPv6PodCIDR(s string) (*net.IPNet, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("pod CIDR %q: %w", s, err)
	}
	if ip.To4() != nil {
		return nil, fmt.Errorf("pod CIDR %q is not IPv6", s)
	}
	if !ip.Equal(n.IP) {
		return nil, fmt.Errorf("pod CIDR %q has host bits set (the network is %s)", s, n)
	}
	if ones, _ := n.Mask.Size(); ones < 48 || ones > 120 {
		return nil, fmt.Errorf("IPv6 pod CIDR %q: prefix length /%d is outside /48../120", s, ones)
	}
	return n, nil
}

// parseIPv4PodCIDR parses s as a pod subnet: IPv4, with room for the
// gateway and at least one pod.
func parseIPv4PodCIDR(s string) (*net.IPNet, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("podCIDR %q: %w", s, err)
	}
	if ip.To4() == nil {
		return nil, fmt.Errorf("podCIDR %q is not IPv4", s)
	}
	if ones, _ := n.Mask.Size(); ones > 30 {
		return nil, fmt.Errorf("podCIDR %q: too small, need at least a /30", s)
	}
	return n, nil
}

// ParseServiceCIDRs returns the ServiceCIDR ranges by family (nil for a
// family it does not name). Like kube-apiserver's
// --service-cluster-ip-range it is one CIDR, or an IPv4 and an IPv6 CIDR
// separated by a comma (dual-stack).
func (c Config) ParseServiceCIDRs() (v4, v6 *net.IPNet, err error) {
	if c.ServiceCIDR == "" {
		return nil, nil, nil
	}
	for _, s := range strings.Split(c.ServiceCIDR, ",") {
		ip, n, err := net.ParseCIDR(strings.TrimSpace(s))
		if err != nil {
			return nil, nil, fmt.Errorf("serviceCIDR %q: %w", c.ServiceCIDR, err)
		}
		switch {
		case ip.To4() != nil && v4 == nil:
			v4 = n
		case ip.To4() == nil && v6 == nil:
			v6 = n
		default:
			return nil, nil, fmt.Errorf("serviceCIDR %q: at most one CIDR per family", c.ServiceCIDR)
		}
	}
	return v4, v6, nil
}
