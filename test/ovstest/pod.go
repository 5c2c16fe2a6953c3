package ovstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxOFPort is the highest ofport usable for a regular port (OFPP_MAX).
const maxOFPort = 0xff00

// Pod is a network namespace attached to an OVS bridge through a veth pair,
// as a CNI plugin would set up a Kubernetes pod.
type Pod struct {
	// Name is the name given to AddPod.
	Name string
	// NetNS is the pod's network namespace, "<instance netns>-<name>".
	NetNS string
	// IP is the pod address without prefix length, e.g. "10.0.0.2".
	IP string
	// CIDR is the address with prefix length as given, e.g. "10.0.0.2/24".
	CIDR string
	// MAC is the MAC address of the pod's eth0.
	MAC string
	// HostIf is the host-side veth in the instance's NetNS, "v-<name>",
	// attached to the bridge.
	HostIf string
	// OFPort is the OpenFlow port number of HostIf.
	OFPort int

	in *Instance
}

// AddPod creates a pod: network namespace "<NetNS>-<name>" whose eth0 (with
// mac and ip, a CIDR such as "10.0.0.2/24") is the peer of veth "v-<name>" in
// the instance's namespace, which is added to bridge as port ofport. The pod
// has no routes but the connected one.
//
// As on a real node running the userspace datapath, eth0 has TX checksum
// offload off (userspace conntrack drops packets with partial checksums), and
// an nftables netdev ingress drop on v-<name> keeps the instance namespace's
// kernel from answering the pod itself (OVS still sees every frame). Unless
// the instance was started WithPodIPv6, IPv6 is disabled in the pod and on
// v-<name>. The pod is deleted at the instance's cleanup.
func (in *Instance) AddPod(t testing.TB, bridge, name, ip, mac string, ofport int) *Pod {
	t.Helper()
	p, err := in.addPod(bridge, name, ip, mac, ofport)
	if err != nil {
		t.Fatalf("ovstest: add pod %s: %v", name, err)
	}
	return p
}

func (in *Instance) addPod(bridge, name, ip, mac string, ofport int) (*Pod, error) {
	if err := checkName(name, maxIfName-len(hostIfPrefix)); err != nil {
		return nil, err
	}
	prefix, err := netip.ParsePrefix(ip)
	if err != nil {
		return nil, fmt.Errorf("parse pod address: %w", err)
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, fmt.Errorf("parse pod MAC: %w", err)
	}
	if ofport < 1 || ofport >= maxOFPort {
		return nil, fmt.Errorf("ofport %d out of range [1, %d)", ofport, maxOFPort)
	}
	p := &Pod{
		Name:   name,
		NetNS:  in.NetNS + "-" + name,
		IP:     prefix.Addr().String(),
		CIDR:   prefix.String(),
		MAC:    hw.String(),
		HostIf: hostIfPrefix + name,
		OFPort: ofport,
		in:     in,
	}

	if err := in.addNetNS(p.NetNS); err != nil {
		return nil, err
	}
	if !in.cfg.podIPv6 {
		// Set before eth0 exists, so it starts without IPv6.
		if _, err := in.Exec(p.NetNS, "sysctl", "-q", "-w",
			"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			return nil, fmt.Errorf("disable IPv6 in pod: %w", err)
		}
	}
	if _, err := in.run("ip", "link", "add", p.HostIf, "netns", in.NetNS, "type", "veth",
		"peer", "name", "eth0", "netns", p.NetNS); err != nil {
		return nil, fmt.Errorf("create veth: %w", err)
	}

	// Pod side.
	steps := [][]string{
		{"ip", "link", "set", "eth0", "address", p.MAC, "up"},
		{"ip", "addr", "add", p.CIDR, "dev", "eth0"},
		{"ethtool", "-K", "eth0", "tx", "off"},
	}
	for _, s := range steps {
		if _, err := in.Exec(p.NetNS, s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("configure pod interface: %w", err)
		}
	}

	// Host side.
	if !in.cfg.podIPv6 {
		if _, err := in.Exec(in.NetNS, "sysctl", "-q", "-w",
			"net.ipv6.conf."+p.HostIf+".disable_ipv6=1"); err != nil {
			return nil, fmt.Errorf("disable IPv6 on host veth: %w", err)
		}
	}
	if _, err := in.run("ip", "-n", in.NetNS, "link", "set", p.HostIf, "up"); err != nil {
		return nil, fmt.Errorf("configure host veth: %w", err)
	}
	if err := in.hostDrop(p.HostIf); err != nil {
		return nil, err
	}
	if _, err := in.Vsctl("add-port", bridge, p.HostIf,
		"--", "set", "Interface", p.HostIf, "ofport_request="+strconv.Itoa(ofport)); err != nil {
		return nil, fmt.Errorf("attach to bridge: %w", err)
	}
	if err := in.waitOFPort(p.HostIf, ofport); err != nil {
		return nil, err
	}
	return p, nil
}

// hostDrop makes the instance namespace's kernel drop every frame arriving on
// dev, so only OVS (which reads dev with an AF_PACKET socket ahead of the
// ingress hook) handles them.
func (in *Instance) hostDrop(dev string) error {
	ruleset := fmt.Sprintf(`table netdev %s {
	chain in_%s {
		type filter hook ingress device %q priority 0; policy drop;
	}
}
`, nftHostDropTb, dev, dev)
	cmd := command{
		name:    "ip",
		args:    []string{"netns", "exec", in.NetNS, "nft", "-f", "-"},
		stdin:   ruleset,
		timeout: in.cfg.commandTimeout,
	}
	if _, err := run(cmd); err != nil {
		return fmt.Errorf("install nftables ingress drop on %s: %w", dev, err)
	}
	return nil
}

// waitOFPort waits until interface iface has OpenFlow port number want.
func (in *Instance) waitOFPort(iface string, want int) error {
	return poll(readyTimeout, pollInterval, fmt.Sprintf("ofport %d on %s", want, iface), func() (bool, error) {
		out, err := in.Vsctl("get", "Interface", iface, "ofport")
		if err != nil {
			return false, err
		}
		got := strings.TrimSpace(out)
		switch got {
		case strconv.Itoa(want):
			return true, nil
		case "-1":
			ifErr, _ := in.Vsctl("get", "Interface", iface, "error")
			return false, fmt.Errorf("ovs-vswitchd could not add %s: %s", iface, strings.TrimSpace(ifErr))
		case "[]":
			return false, errors.New("no ofport assigned yet")
		default:
			return false, fmt.Errorf("got ofport %s, want %d (ofport_request taken?)", got, want)
		}
	})
}

// Exec runs args[0] with args[1:] inside the pod's namespace and returns the
// combined output.
func (p *Pod) Exec(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("pod exec: no command given")
	}
	return p.in.Exec(p.NetNS, args[0], args[1:]...)
}

// Ping sends count echo requests (0.2s apart, 1s reply timeout) from the pod
// to dst and fails unless ping exits successfully (at least one reply).
func (p *Pod) Ping(dst string, count int) error {
	if count < 1 {
		return fmt.Errorf("ping %s: count %d < 1", dst, count)
	}
	// ping itself is bounded by count*interval plus the reply timeout; leave
	// slack on top of the usual command timeout.
	timeout := p.in.cfg.commandTimeout + time.Duration(count)*time.Second
	_, err := run(command{
		name:    "ip",
		args:    []string{"netns", "exec", p.NetNS, "ping", "-n", "-c", strconv.Itoa(count), "-W", "1", "-i", "0.2", dst},
		timeout: timeout,
	})
	if err != nil {
		return fmt.Errorf("ping from pod %s to %s: %w", p.Name, dst, err)
	}
	return nil
}

// CreatePod is AddPod for callers outside a test (the demo command): it
// returns the error instead of failing a test. The pod's namespace is
// removed by Close.
func (in *Instance) CreatePod(bridge, name, ip, mac string, ofport int) (*Pod, error) {
	return in.addPod(bridge, name, ip, mac, ofport)
}
