// Package podnet owns the plumbing of a pod's network interface: the veth
// pair between a pod sandbox's network namespace and the node's network
// namespace, the pod side's MAC, MTU, addresses (one, or one per family with
// VethConfig.Second) and routes (per address, the default route of its
// family unless VethConfig.NoDefaultRoute, plus its Routes), the
// checksum offload setting the OVS userspace datapath needs, and removing
// and verifying all of that. It knows nothing of OVS: attaching the host side
// to the bridge is the caller's job.
//
// SetupVeth creates the pair with one RTM_NEWLINK request issued in the host
// namespace: the host side is created there and the pod side directly in the
// sandbox namespace under its final name (for example eth0) and MAC, so there
// is never a half-created pair or a temporary name to clean up. It then
// configures both sides and, if a later step fails, deletes the pair again.
// When the pair already exists exactly as configured it returns the existing
// interfaces (the leftover of an ADD cut short before the caller recorded
// it; pkg/cniserver refuses a repeated ADD of an attachment it knows, as the
// CNI spec requires); a stale or differently configured host veth of the
// same name is deleted and the pair recreated. A pod-side interface of the
// requested name that is not the peer of the host veth is never touched:
// SetupVeth fails with ErrIfNameInUse.
// TeardownVeth is idempotent and succeeds when the namespace or the
// interfaces are already gone. CheckVeth reports every difference between
// the live interfaces and a configuration.
//
// Namespaces: the host side lives in the network namespace named by
// VethConfig.HostNetNSPath, or, when that is empty, in the network namespace
// of the calling goroutine's OS thread (the node namespace of an agent; tests
// use a separate namespace for the node). Every operation inside a namespace
// runs through ns.NetNS.Do from containernetworking/plugins, which runs it on
// a dedicated, locked OS thread and lets that thread die if switching back
// fails, so no goroutine of the caller ever runs in the wrong namespace.
//
// Host interface names come from HostIfName: "weir" followed by 11 hex
// digits of a SHA-256 of the container id and interface name (15 bytes, the
// kernel's limit). A MAC left empty in the configuration is derived from the
// pod IP by MACFromIP.
package podnet

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// VethConfig describes a pod interface.
type VethConfig struct {
	// HostNetNSPath is the network namespace of the host side, e.g.
	// /var/run/netns/node1. Empty means the namespace of the calling
	// goroutine's OS thread.
	HostNetNSPath string
	// NetNSPath is the pod sandbox's network namespace, e.g.
	// /var/run/netns/cni-1234 or /proc/<pid>/ns/net. Required.
	NetNSPath string
	// IfName is the interface name inside the pod, e.g. eth0. Required.
	IfName string
	// HostIfName is the name of the host side, see HostIfName. Required.
	HostIfName string
	// MAC of the pod side. Optional: if nil, MACFromIP(IPNet.IP) is used.
	MAC net.HardwareAddr
	// MTU of both sides. Optional: 0 keeps the kernel default (1500).
	MTU int
	// IPNet is the pod address with its prefix length, e.g. 10.244.1.5/24,
	// of either family: the pod's only address on a single-family node
	// (fd00:10:244:1::5/64 on an IPv6-only one), the first of two on a
	// dual-stack node. Required.
	IPNet *net.IPNet
	// Gateway is the next hop of the pod's default route and of Routes. It
	// is installed as an on-link next hop, so it need not be inside IPNet.
	// Required.
	Gateway net.IP
	// NoDefaultRoute leaves out the default route via Gateway, for a
	// secondary interface (e.g. a Multus net1) whose container already has
	// its default route on another interface.
	NoDefaultRoute bool
	// Routes are extra routes installed via Gateway (on-link), each a
	// destination of the pod address's family.
	Routes []*net.IPNet
	// Second, if set, is an address of the other family (a dual-stack
	// pod), with its own gateway and extra routes; its default route
	// follows NoDefaultRoute as the first one's does.
	Second *Address
	// TxChecksumOff turns off transmit checksum offload on the pod side
	// (ethtool -K IfName tx off), which the OVS userspace datapath needs:
	// it does not complete partial checksums of packets it receives from a
	// veth. The kernel adjusts the features that depend on it (TSO for
	// IPv4) as it does for ethtool.
	TxChecksumOff bool
}

// Address is one address of a pod interface with the gateway of its family
// and the extra routes via that gateway.
type Address struct {
	IPNet   *net.IPNet
	Gateway net.IP
	Routes  []*net.IPNet
}

// addresses returns the pod's addresses: the first (IPNet, Gateway, Routes)
// and Second.
func (cfg VethConfig) addresses() []Address {
	out := []Address{{IPNet: cfg.IPNet, Gateway: cfg.Gateway, Routes: cfg.Routes}}
	if cfg.Second != nil {
		out = append(out, *cfg.Second)
	}
	return out
}

// VethResult describes the interfaces SetupVeth created or found.
type VethResult struct {
	HostIfName       string
	HostIfIndex      int
	HostMAC          net.HardwareAddr
	ContainerIfName  string
	ContainerIfIndex int
	ContainerMAC     net.HardwareAddr
}

// ErrIfNameInUse is wrapped by the error of SetupVeth when the pod
// namespace already has an interface of the requested name that is not the
// peer of the host interface: the CNI spec requires ADD to fail then.
var ErrIfNameInUse = errors.New("interface name already in use in the pod network namespace")

// ErrNetNSNotFound is wrapped by errors of SetupVeth and CheckVeth when a
// network namespace path does not exist or is not a network namespace.
var ErrNetNSNotFound = errors.New("network namespace not found")

// SetupError is returned by SetupVeth. Step names the step that failed.
// When the pair had been created it was removed again; RollbackErr says why
// that failed, if it did.
type SetupError struct {
	HostIfName  string
	Step        string
	Err         error
	RollbackErr error
}

func (e *SetupError) Error() string {
	msg := fmt.Sprintf("podnet: setting up veth %s: %s: %v", e.HostIfName, e.Step, e.Err)
	if e.RollbackErr != nil {
		msg += fmt.Sprintf(" (rollback failed, interfaces may be left behind: %v)", e.RollbackErr)
	}
	return msg
}

func (e *SetupError) Unwrap() error { return e.Err }

// CheckError is returned by CheckVeth; Problems lists every difference found.
type CheckError struct {
	HostIfName string
	Problems   []string
}

func (e *CheckError) Error() string {
	return fmt.Sprintf("podnet: check of veth %s failed: %s", e.HostIfName, strings.Join(e.Problems, "; "))
}

// validate checks cfg and returns a copy with defaults filled in.
func (cfg VethConfig) validate() (VethConfig, error) {
	var problems []string
	if cfg.NetNSPath == "" {
		problems = append(problems, "NetNSPath is empty")
	}
	if err := validIfName(cfg.IfName); err != nil {
		problems = append(problems, fmt.Sprintf("IfName: %v", err))
	}
	if err := validIfName(cfg.HostIfName); err != nil {
		problems = append(problems, fmt.Sprintf("HostIfName: %v", err))
	}
	if cfg.MTU != 0 && (cfg.MTU < 68 || cfg.MTU > 65535) {
		problems = append(problems, fmt.Sprintf("MTU %d out of range [68, 65535]", cfg.MTU))
	}
	var podIP net.IP
	for i, a := range cfg.addresses() {
		what := ""
		if i == 1 {
			what = "Second."
		}
		ip, p := validateAddress(what, a)
		problems = append(problems, p...)
		switch {
		case i == 0:
			podIP = ip
		case ip != nil && podIP != nil && (ip.To4() == nil) == (podIP.To4() == nil):
			problems = append(problems, fmt.Sprintf("Second address %s is of the same family as %s", ip, podIP))
		}
	}
	if cfg.MAC != nil {
		switch {
		case len(cfg.MAC) != 6:
			problems = append(problems, fmt.Sprintf("MAC %s is not a 48-bit address", cfg.MAC))
		case cfg.MAC[0]&1 != 0:
			problems = append(problems, fmt.Sprintf("MAC %s is a multicast address", cfg.MAC))
		case string(cfg.MAC) == "\x00\x00\x00\x00\x00\x00":
			problems = append(problems, "MAC is all zeros")
		}
	}
	if len(problems) > 0 {
		return cfg, fmt.Errorf("invalid configuration: %s", strings.Join(problems, "; "))
	}
	out := cfg
	if out.MAC == nil {
		out.MAC = MACFromIP(podIP)
	}
	// Keep the caller's IPNet intact; use the 4-byte form for IPv4.
	out.IPNet = canonical(cfg.IPNet)
	if cfg.Second != nil {
		second := *cfg.Second
		second.IPNet = canonical(second.IPNet)
		out.Second = &second
	}
	return out, nil
}

// canonical returns a copy of n with the 4-byte form of an IPv4 address and
// mask.
func canonical(n *net.IPNet) *net.IPNet {
	ip, mask := n.IP, n.Mask
	if v4 := ip.To4(); v4 != nil {
		ip = v4
		if len(mask) == net.IPv6len {
			mask = mask[12:]
		}
	}
	return &net.IPNet{IP: ip, Mask: mask}
}

// validateAddress lists the problems of one address (what names it in the
// messages) and returns its IP when it has one.
func validateAddress(what string, a Address) (net.IP, []string) {
	var problems []string
	var podIP net.IP
	if a.IPNet == nil || a.IPNet.IP == nil {
		problems = append(problems, what+"IPNet is empty")
	} else if _, bits := a.IPNet.Mask.Size(); bits == 0 {
		problems = append(problems, fmt.Sprintf("%sIPNet %s has a non-canonical mask", what, a.IPNet))
	} else {
		podIP = a.IPNet.IP
	}
	switch {
	case a.Gateway == nil:
		problems = append(problems, what+"Gateway is empty")
	case podIP != nil && (a.Gateway.To4() == nil) != (podIP.To4() == nil):
		problems = append(problems, fmt.Sprintf("%sGateway %s and pod address %s are of different families", what, a.Gateway, podIP))
	case podIP != nil && a.Gateway.Equal(podIP):
		problems = append(problems, fmt.Sprintf("%sGateway %s is the pod address", what, a.Gateway))
	}
	for _, r := range a.Routes {
		if r == nil || r.IP == nil {
			problems = append(problems, what+"Routes has an empty destination")
			continue
		}
		if _, bits := r.Mask.Size(); bits == 0 {
			problems = append(problems, fmt.Sprintf("route %s has a non-canonical mask", r))
		} else if podIP != nil && (r.IP.To4() == nil) != (podIP.To4() == nil) {
			problems = append(problems, fmt.Sprintf("route %s and pod address %s are of different families", r, podIP))
		}
	}
	return podIP, problems
}

// validIfName applies the kernel's rules for interface names (dev_valid_name).
func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > 15:
		return fmt.Errorf("%q is longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a valid interface name", name)
	case strings.ContainsAny(name, "/: \t\n\r\v\f\x00"):
		return fmt.Errorf("%q contains '/', ':' or whitespace", name)
	case strings.Contains(name, "%"):
		// The kernel takes "eth%d" as a template and picks a free name.
		return fmt.Errorf("%q contains '%%', which the kernel takes as a name template", name)
	}
	return nil
}
