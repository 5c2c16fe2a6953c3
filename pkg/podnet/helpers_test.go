package podnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/testroot"
)

// The tests below need root, ip(8) and ethtool(8). Every namespace they
// create is named weirtest-* and deleted in t.Cleanup, which also removes
// every interface in it; no interface is ever created in the namespace the
// test binary runs in.

func requireRoot(t testing.TB) {
	t.Helper()
	testroot.Require(t, "network namespaces")
	for _, tool := range []string{"ip", "ethtool", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// run runs a command and returns its standard output; it fails the test if
// the command fails.
func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := tryRun(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tryRun(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

// ipLink is the part of `ip -j addr show` output the tests look at.
type ipLink struct {
	IfIndex  int      `json:"ifindex"`
	IfName   string   `json:"ifname"`
	Flags    []string `json:"flags"`
	MTU      int      `json:"mtu"`
	Address  string   `json:"address"`
	LinkType string   `json:"link_type"`
	AddrInfo []ipAddr `json:"addr_info"`
}

type ipAddr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	PrefixLen int    `json:"prefixlen"`
}

func (l ipLink) up() bool {
	for _, f := range l.Flags {
		if f == "UP" {
			return true
		}
	}
	return false
}

// links returns the links of a namespace by name.
func links(t testing.TB, n netnstest.NetNS) map[string]ipLink {
	t.Helper()
	var ls []ipLink
	if err := json.Unmarshal([]byte(run(t, "ip", "-n", n.Name, "-j", "addr", "show")), &ls); err != nil {
		t.Fatalf("parsing ip -j addr: %v", err)
	}
	out := map[string]ipLink{}
	for _, l := range ls {
		out[l.IfName] = l
	}
	return out
}

type ipRoute struct {
	Dst     string   `json:"dst"`
	Gateway string   `json:"gateway"`
	Dev     string   `json:"dev"`
	Flags   []string `json:"flags"`
}

func defaultRoutes(t testing.TB, n netnstest.NetNS) []ipRoute {
	t.Helper()
	var rs []ipRoute
	if err := json.Unmarshal([]byte(run(t, "ip", "-n", n.Name, "-j", "route", "show", "default")), &rs); err != nil {
		t.Fatalf("parsing ip -j route: %v", err)
	}
	return rs
}

// ethtoolFeature returns the value ethtool -k prints for feature in n.
func ethtoolFeature(t testing.TB, n netnstest.NetNS, dev, feature string) string {
	t.Helper()
	out := run(t, "ip", "netns", "exec", n.Name, "ethtool", "-k", dev)
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), feature+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("ethtool -k %s has no %s:\n%s", dev, feature, out)
	return ""
}

func mustIPNet(t testing.TB, s string) *net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return n
}

// podConfig returns a configuration for a pod in pod, with the host side in
// node.
func podConfig(t testing.TB, node, pod netnstest.NetNS, cidr, gw string) VethConfig {
	t.Helper()
	return VethConfig{
		HostNetNSPath: node.Path,
		NetNSPath:     pod.Path,
		IfName:        "eth0",
		HostIfName:    HostIfName("test-"+randHex(t, 16), "eth0"),
		MTU:           1450,
		IPNet:         mustIPNet(t, cidr),
		Gateway:       net.ParseIP(gw),
		TxChecksumOff: true,
	}
}
