package cniserver

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

// supportedVersions are the CNI spec versions the server answers in.
var supportedVersions = map[string]bool{"0.4.0": true, "1.0.0": true, "1.1.0": true}

// netConf is the network configuration the runtime passes on stdin.
type netConf struct {
	types.PluginConf
	// MTU overrides the agent's pod MTU for this network (optional).
	MTU int `json:"mtu,omitempty"`
	// CNISocket is read by the CNI binary only.
	CNISocket string `json:"cniSocket,omitempty"`
	// RuntimeConfig carries the capabilities' arguments (bandwidth.go).
	RuntimeConfig runtimeConfig `json:"runtimeConfig,omitempty"`
	// DefaultRoute says whether the interface gets the default route via
	// the node's gateway. Unset, it is true for the primary interface
	// (CNI_IFNAME eth0, the interface Kubernetes runtimes create) and false
	// for any other (e.g. a Multus secondary interface net1), whose
	// container has its default route on eth0 already.
	DefaultRoute *bool `json:"defaultRoute,omitempty"`
	// Routes are extra routes via the node's gateway on this interface,
	// e.g. [{"dst": "10.96.0.0/12"}] for a secondary interface that should
	// reach the service CIDR. "gw", if given, must be the gateway.
	Routes []routeConf `json:"routes,omitempty"`
}

// routeConf is one entry of "routes".
type routeConf struct {
	Dst string `json:"dst"`
	GW  string `json:"gw,omitempty"`
}

// primaryIfName is the interface that gets the default route unless the
// network configuration says otherwise ("defaultRoute").
const primaryIfName = "eth0"

// wantsDefaultRoute applies "defaultRoute" and its default.
func (c *netConf) wantsDefaultRoute(ifName string) bool {
	if c.DefaultRoute != nil {
		return *c.DefaultRoute
	}
	return ifName == primaryIfName
}

// extraRoutes validates "routes" for a pod network with gateways gws (one
// per family the node serves): every destination a canonical CIDR of a
// family with a gateway, no duplicates, no default route when the default
// route is installed anyway, and "gw" (if set) the gateway of its family.
// The error is CodeInvalidNetworkConfig.
func (c *netConf) extraRoutes(ifName string, gws ...net.IP) ([]*net.IPNet, *cniError) {
	var out []*net.IPNet
	seen := map[string]bool{}
	for i, r := range c.Routes {
		ip, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: routes[%d].dst %q is not a CIDR", i, r.Dst)
		}
		if !ip.Equal(dst.IP) {
			return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: routes[%d].dst %q has host bits set (the network is %s)", i, r.Dst, dst)
		}
		// "::ffff:a.b.c.d/n" is IPv4 by its address (To4) and IPv6 by its
		// mask: of neither family, it would pass for an IPv4 route here
		// and reach the kernel with a 128-bit mask.
		if ip.To4() != nil && len(dst.Mask) != net.IPv4len {
			return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: routes[%d].dst %s is an IPv4-mapped IPv6 CIDR; give the IPv4 CIDR instead", i, r.Dst)
		}
		gw := sameFamily(ip, gws)
		if gw == nil {
			return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: routes[%d].dst %s is not of the pod network's family (gateway %s)", i, dst, joinIPs(gws))
		}
		if r.GW != "" && !net.ParseIP(r.GW).Equal(gw) {
			return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: routes[%d].gw %q: Weir routes via the node's gateway %s only", i, r.GW, gw)
		}
		if ones, _ := dst.Mask.Size(); ones == 0 && c.wantsDefaultRoute(ifName) {
			return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: routes[%d] is a default route, but interface %s gets the default route anyway (set \"defaultRoute\": false)", i, ifName)
		}
		if seen[dst.String()] {
			return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: routes[%d].dst %s is listed twice", i, dst)
		}
		seen[dst.String()] = true
		out = append(out, dst)
	}
	return out, nil
}

// sameFamily returns the address of ips of ip's family, nil if none.
func sameFamily(ip net.IP, ips []net.IP) net.IP {
	for _, o := range ips {
		if o != nil && (o.To4() == nil) == (ip.To4() == nil) {
			return o
		}
	}
	return nil
}

// ofFamily returns the routes of the family of ip.
func ofFamily(routes []*net.IPNet, ip net.IP) []*net.IPNet {
	var out []*net.IPNet
	for _, r := range routes {
		if (r.IP.To4() == nil) == (ip.To4() == nil) {
			out = append(out, r)
		}
	}
	return out
}

func joinIPs(ips []net.IP) string {
	var s []string
	for _, ip := range ips {
		s = append(s, ip.String())
	}
	return strings.Join(s, ", ")
}

// request is a validated CNI request.
type request struct {
	cmd         string
	containerID string
	netns       string
	ifName      string
	args        map[string]string // CNI_ARGS, e.g. K8S_POD_NAMESPACE
	conf        netConf
}

// key identifies the attachment (one interface of one container).
func (r *request) key() string { return r.containerID + "/" + r.ifName }

// cniError is a CNI error to return to the runtime.
type cniError struct {
	code    uint32
	msg     string
	details string
}

func (e *cniError) Error() string {
	if e.details != "" {
		return fmt.Sprintf("%s: %s", e.msg, e.details)
	}
	return e.msg
}

func errorf(code uint32, format string, args ...any) *cniError {
	return &cniError{code: code, msg: fmt.Sprintf(format, args...)}
}

func withDetails(code uint32, msg string, err error) *cniError {
	return &cniError{code: code, msg: msg, details: err.Error()}
}

// parseRequest validates a CNI call's arguments. needNetNS is false for DEL
// (the netns may be gone) and GC/STATUS (there is none).
func parseRequest(cmd string, a *cniv1.CniCmdArgs, needContainer, needNetNS bool) (*request, *cniError) {
	if a == nil {
		return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: empty CNI request")
	}
	r := &request{cmd: cmd, containerID: a.ContainerId, netns: a.Netns, ifName: a.Ifname}
	if err := json.Unmarshal(a.NetworkConfiguration, &r.conf); err != nil {
		return nil, withDetails(cniv1.CodeDecodingFailure, "weir: network configuration is not valid JSON", err)
	}
	if r.conf.CNIVersion == "" {
		return nil, errorf(cniv1.CodeIncompatibleVersion, "weir: network configuration has no cniVersion (supported: 0.4.0, 1.0.0, 1.1.0)")
	}
	if !supportedVersions[r.conf.CNIVersion] {
		return nil, errorf(cniv1.CodeIncompatibleVersion, "weir: cniVersion %q is not supported (supported: 0.4.0, 1.0.0, 1.1.0)", r.conf.CNIVersion)
	}
	if r.conf.MTU != 0 && (r.conf.MTU < 576 || r.conf.MTU > 9000) {
		return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: mtu %d in the network configuration is out of range 576-9000", r.conf.MTU)
	}
	// The network name identifies the attachments of a network (GC, CHECK
	// and DEL act on that network's only); STATUS concerns the plugin.
	if r.conf.Name == "" && cmd != "STATUS" {
		return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: network configuration has no \"name\"")
	}
	if !needContainer {
		return r, nil
	}
	if err := cniv1.ValidateContainerID(r.containerID); err != nil {
		return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: %v", err)
	}
	if err := cniv1.ValidateIfName(r.ifName); err != nil {
		return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: %v", err)
	}
	args, err := parseCNIArgs(a.Args)
	if err != nil {
		return nil, withDetails(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_ARGS is malformed", err)
	}
	r.args = args
	if needNetNS {
		if r.netns == "" {
			return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_NETNS is missing")
		}
		if !filepath.IsAbs(r.netns) {
			return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_NETNS %q must be an absolute path", r.netns)
		}
		if _, err := os.Stat(r.netns); err != nil {
			return nil, withDetails(cniv1.CodeInvalidEnvironmentVariables, fmt.Sprintf("weir: CNI_NETNS %s does not exist", r.netns), err)
		}
	}
	return r, nil
}

// prevResult returns the request's prevResult converted to the current
// result type, nil if there is none. The error is CodeDecodingFailure.
func (r *request) prevResult() (*current.Result, *cniError) {
	if r.conf.RawPrevResult == nil {
		return nil, nil
	}
	conf := r.conf.PluginConf // ParsePrevResult consumes RawPrevResult
	conf.RawPrevResult = maps.Clone(conf.RawPrevResult)
	if err := version.ParsePrevResult(&conf); err != nil {
		return nil, withDetails(cniv1.CodeDecodingFailure, "weir: prevResult cannot be decoded", err)
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, withDetails(cniv1.CodeDecodingFailure, "weir: prevResult cannot be converted to the current result type", err)
	}
	if cerr := checkPrevEntries(res); cerr != nil {
		return nil, cerr
	}
	return res, nil
}

// checkPrevEntries rejects the entries of a decoded prevResult that the
// CNI library accepts but nothing can use (found by FuzzCNIResult): a null
// interface, address or route (CHECK dereferenced it and the agent
// crashed), an address without "address" or a route without "dst" (ADD
// passed them on as "<nil>", a result no runtime can parse).
func checkPrevEntries(res *current.Result) *cniError {
	for i, ifc := range res.Interfaces {
		if ifc == nil {
			return errorf(cniv1.CodeDecodingFailure, "weir: prevResult interfaces[%d] is null", i)
		}
	}
	for i, ipc := range res.IPs {
		if ipc == nil || ipc.Address.IP == nil {
			return errorf(cniv1.CodeDecodingFailure, "weir: prevResult ips[%d] has no address", i)
		}
	}
	for i, rt := range res.Routes {
		if rt == nil || rt.Dst.IP == nil {
			return errorf(cniv1.CodeDecodingFailure, "weir: prevResult routes[%d] has no dst", i)
		}
	}
	return nil
}

// parseCNIArgs parses "K1=V1;K2=V2".
func parseCNIArgs(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}
