package nodenet_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/testctx"
)

// TestWarmTunnelNeighbor warms the neighbour entry of the remote namespace
// on br-phy, a netdev OVS bridge holding the underlay NIC (underlayNode),
// over ARP for an IPv4 and over Neighbor Discovery for an IPv6 underlay
// (an IPv6-only one: the NIC has no IPv4 address), with a Geneve port on
// br-int as on a node. Each time the kernel's
// entry is REACHABLE when the call returns and OVS's tunnel neighbour cache
// holds the address (both learnt from the reply that crossed br-phy), also
// the second time (the entry is flushed and resolved again). An address
// nobody holds fails with an error naming the protocol of its family. Over
// IPv6 the call also works right after br-phy came up again with DAD on
// (its link-local address tentative at first), and fails at once, saying
// why, on a br-phy without a link-local address.
func TestWarmTunnelNeighbor(t *testing.T) {
	for _, tc := range []struct {
		name           string
		v6             bool
		remote, absent string
		proto          string
	}{
		{name: "IPv4 (ARP)", remote: "192.0.2.2", absent: "192.0.2.77", proto: "ARP"},
		{name: "IPv6 (ND)", v6: true, remote: underlayRemoteIPv6, absent: "fd00:192:0:2::77", proto: "Neighbor Discovery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, db, remote := underlayNode(t)
			node := in.NetNS
			family := "-4"
			if tc.v6 {
				family = "-6"
				nsRun(t, node, "ip", "-6", "addr", "add", underlayNodeIPv6+"/64", "dev", "ul0", "nodad")
				addRemoteIPv6(t, remote)
			} else {
				nsRun(t, node, "ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
			}
			nsRun(t, node, "ip", "link", "set", "ul0", "up")
			netnstest.MustDo(t, node, func() error {
				_, err := nodenet.SetupUnderlay(testctx.Timeout(t, callTimeout), nodenet.UnderlayConfig{OVSDB: db, NIC: "ul0"})
				return err
			})
			// OVS snoops neighbour replies only when it has a tunnel port
			// (native tunnelling on), as a node's br-int has.
			ctx := testctx.Timeout(t, callTimeout)
			if _, err := db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int", DatapathType: ovsdb.DatapathNetdev}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.EnsureGenevePort(ctx, "br-int", tunnelName, ovsdb.PortOptions{OFPortRequest: tunnelOFPort}); err != nil {
				t.Fatal(err)
			}
			warm := func(t *testing.T, ip string, timeout time.Duration) (time.Duration, error) {
				t.Helper()
				var err error
				began := time.Now()
				netnstest.MustDo(t, node, func() error {
					ctx, cancel := context.WithTimeout(testctx.Timeout(t, callTimeout), timeout)
					defer cancel()
					err = nodenet.WarmTunnelNeighbor(ctx, nodenet.DefaultUnderlayBridge, net.ParseIP(ip))
					return nil
				})
				return time.Since(began), err
			}
			reachable := func(t *testing.T, what string) {
				t.Helper()
				if got := nsRun(t, node, "ip", family, "neigh", "show", tc.remote, "dev", "br-phy"); !strings.Contains(got, "REACHABLE") {
					t.Errorf("%s: kernel entry for %s on br-phy: %q, want REACHABLE", what, tc.remote, got)
				}
				deadline := time.Now().Add(2 * time.Second)
				for !strings.Contains(in.MustAppctl(t, "tnl/neigh/show"), tc.remote) {
					if time.Now().After(deadline) {
						t.Errorf("%s: OVS's tunnel neighbour cache lacks %s:\n%s", what, tc.remote, in.MustAppctl(t, "tnl/neigh/show"))
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
			}

			for i := 1; i <= 2; i++ {
				d, err := warm(t, tc.remote, 5*time.Second)
				if err != nil {
					t.Fatalf("warm #%d: %v", i, err)
				}
				t.Logf("warm #%d of %s took %v", i, tc.remote, d.Round(time.Microsecond))
				reachable(t, "warm")
			}

			if _, err := warm(t, tc.absent, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "answer "+tc.proto+" on br-phy") {
				t.Errorf("warming %s, which nobody holds: got %v, want an error about %s", tc.absent, err, tc.proto)
			}
			for _, bad := range []net.IP{nil, net.ParseIP("ff02::1"), net.ParseIP("224.0.0.1"), net.IPv6unspecified} {
				if _, err := warm(t, bad.String(), time.Second); err == nil {
					t.Errorf("warming %v: no error", bad)
				}
			}
			if !tc.v6 {
				return
			}

			// br-phy down and up again with DAD on: its link-local address
			// starts tentative, from which the kernel sends no solicitation.
			nsRun(t, node, "ip", "link", "set", "br-phy", "down")
			nsRun(t, node, "sysctl", "-q", "-w", "net.ipv6.conf.br-phy.accept_dad=1")
			nsRun(t, node, "ip", "link", "set", "br-phy", "up")
			if got := nsRun(t, node, "ip", "-6", "addr", "show", "dev", "br-phy", "scope", "link"); !strings.Contains(got, "tentative") {
				t.Logf("br-phy's link-local address is not tentative (DAD already done?):\n%s", got)
			}
			// The kernel flushes a device's IPv6 addresses when it goes down.
			nsRun(t, node, "ip", "-6", "addr", "replace", underlayNodeIPv6+"/64", "dev", "br-phy", "nodad")
			d, err := warm(t, tc.remote, 5*time.Second)
			if err != nil {
				t.Fatalf("warm after br-phy came up with DAD on: %v", err)
			}
			t.Logf("warm right after br-phy came up with DAD on took %v", d.Round(time.Millisecond))
			reachable(t, "warm after DAD")

			// No link-local address at all: an error at once, not a wait.
			nsRun(t, node, "ip", "-6", "addr", "flush", "dev", "br-phy", "scope", "link")
			d, err = warm(t, tc.remote, 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), "no usable link-local IPv6 address") || d > time.Second {
				t.Errorf("warm without a link-local address on br-phy: %v after %v, want an error about it at once", err, d)
			}
		})
	}
}
