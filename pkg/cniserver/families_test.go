package cniserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"k8s.io/klog/v2/ktesting"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
	"github.com/weirnet/weir/test/testroot"
)

// The families a node can serve, as the agent configures the server for
// each: IPv4-only and dual-stack pass the IPv4 allocator to New (and the
// IPv6 one as Config.IPv6), IPv6-only passes the IPv6 allocator to New.
var familyCases = []struct {
	name        string
	cidr, cidr6 string // "" for a family the node does not serve
}{
	{name: "IPv4", cidr: "10.81.0.0/24"},
	{name: "dual-stack", cidr: "10.81.0.0/24", cidr6: "fd00:81::/64"},
	{name: "IPv6-only", cidr6: "fd00:81::/64"},
}

const famGatewayMAC = "02:00:0a:51:00:01"

// famNode is a node of one family case: a private OVS (userspace
// datapath) with br-int, the gateway gw0 holding the gateway address of
// each family, the real pipeline, the IPAM of each family in files (as the
// agent keeps them), the pod guard, and the CNI server serving on a unix
// socket, driven by libcni running the real weir binary.
type famNode struct {
	ovs           *ovstest.Instance
	db            *ovsdb.Client
	cidr, cidr6   *net.IPNet
	gw, gw6       net.IP
	stateDir      string
	sock          string
	cni           *libcni.CNIConfig
	list          *libcni.NetworkConfigList
	srv           *Server
	alloc, alloc6 *ipam.Allocator // the running server's
	pipe          *pipeline.Pipeline
	stop          func()
}

// buildWeirBinary builds cmd/cni-client as "weir" into a directory of its
// own and returns that directory.
func buildWeirBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "weir"), "../../cmd/cni-client").CombinedOutput(); err != nil {
		t.Fatalf("building the weir CNI binary: %v\n%s", err, out)
	}
	return dir
}

func newFamNode(t *testing.T, binDir, cidr, cidr6 string) *famNode {
	t.Helper()
	ctx := testctx.Timeout(t, time.Minute)
	n := &famNode{ovs: ovstest.Start(t), stateDir: t.TempDir()}
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(1)))
	var err error
	if n.db, err = ovsdb.Connect(ctx, n.ovs.DBSocket(), log.WithName("ovsdb")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.db.Close)
	if _, err := n.db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int", DatapathType: ovsdb.DatapathNetdev}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.EnsureInternalPort(ctx, "br-int", "gw0", ovsdb.PortOptions{OFPortRequest: 2, MAC: famGatewayMAC, MTU: 1450,
		ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway}}); err != nil {
		t.Fatal(err)
	}
	if cidr != "" {
		_, n.cidr, _ = net.ParseCIDR(cidr)
		n.gw = ipam.GatewayOf(n.cidr)
		mustNodeExec(t, n, "ip", "addr", "add", n.gw.String()+"/24", "dev", "gw0")
	}
	if cidr6 != "" {
		_, n.cidr6, _ = net.ParseCIDR(cidr6)
		n.gw6 = ipam.GatewayOf(n.cidr6)
		mustNodeExec(t, n, "ip", "-6", "addr", "add", n.gw6.String()+"/64", "dev", "gw0", "nodad")
	}
	mustNodeExec(t, n, "ip", "link", "set", "gw0", "up")
	netnstest.MustDo(t, n.ovs.NetNS, func() error { return nodenet.InstallPodGuard(ctx, "gw0") })

	sockDir, err := os.MkdirTemp("", "weir-cf-") // short: a unix socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	n.sock = filepath.Join(sockDir, "cni.sock")
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	if n.list, err = libcni.ConfListFromBytes([]byte(fmt.Sprintf(
		`{"cniVersion":"1.1.0","name":"weir","plugins":[{"type":"weir","cniSocket":%q}]}`, n.sock))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n.stop != nil {
			n.stop()
		}
	})
	return n
}

func mustNodeExec(t *testing.T, n *famNode, args ...string) string {
	t.Helper()
	out, err := n.ovs.Exec("", args[0], args[1:]...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out
}

// start runs the agent's part for the CNI server, as after a (re)start: a
// pipeline of cookie round `round` on a new OpenFlow connection, the IPAM
// loaded from its files, a new Server restored from OVSDB, serving. It
// returns what Restore found.
func (n *famNode) start(t *testing.T, round uint8) RestoreStats {
	t.Helper()
	ctx := testctx.Timeout(t, time.Minute)
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(1)))
	sw, err := openflow.Open(openflow.Config{MgmtSocket: n.ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.WaitReady(ctx); err != nil {
		sw.Close()
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(famGatewayMAC)
	pcfg := pipeline.Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: n.gw, PodCIDR: n.cidr,
		GatewayIPv6: n.gw6, PodCIDRv6: n.cidr6, CTZone: 65520, Round: round}
	if n.pipe, err = pipeline.New(sw, pcfg); err != nil {
		sw.Close()
		t.Fatal(err)
	}
	if err := n.pipe.InstallBase(ctx); err != nil {
		sw.Close()
		t.Fatal(err)
	}
	n.alloc, n.alloc6 = nil, nil
	if n.cidr != nil {
		if n.alloc, err = ipam.New(n.cidr, ipam.NewFileStore(filepath.Join(n.stateDir, "ipam.json"))); err != nil {
			t.Fatal(err)
		}
	}
	if n.cidr6 != nil {
		if n.alloc6, err = ipam.New(n.cidr6, ipam.NewFileStore(filepath.Join(n.stateDir, "ipam-v6.json"))); err != nil {
			t.Fatal(err)
		}
	}
	// As the agent calls New: the IPv4 allocator first, the IPv6 one as
	// Config.IPv6 beside it; on an IPv6-only node the IPv6 one first.
	primary, second := n.alloc, n.alloc6
	if primary == nil {
		primary, second = n.alloc6, nil
	}
	n.srv = New(Config{Bridge: "br-int", MTU: 1450, TxChecksumOff: true, HostNetNSPath: "/var/run/netns/" + n.ovs.NetNS,
		Logger: log, IPv6: second}, n.db, n.pipe, primary)
	st, err := n.srv.Restore(ctx)
	if err != nil {
		sw.Close()
		t.Fatalf("Restore: %v", err)
	}
	n.srv.SetReady(true)
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.srv.Serve(sctx, n.sock) }()
	n.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		sw.Close()
		n.stop = nil
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(n.sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CNI server did not listen on %s", n.sock)
		}
	}
	return st
}

// famPod is a pod sandbox attached through libcni.
type famPod struct {
	id   string
	ns   netnstest.NetNS
	rt   *libcni.RuntimeConf
	res  *current.Result
	ips  []net.IP // the result's addresses, in order
	host string   // the host-side interface
}

func (n *famNode) add(t *testing.T, name string) *famPod {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	p := &famPod{id: "c" + hex.EncodeToString(b), ns: netnstest.New(t, "weir-cf")}
	p.rt = &libcni.RuntimeConf{ContainerID: p.id, NetNS: p.ns.Path, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}}}
	r, err := n.cni.AddNetworkList(testctx.Timeout(t, time.Minute), n.list, p.rt)
	if err != nil {
		t.Fatalf("ADD %s: %v", name, err)
	}
	if p.res, err = current.NewResultFromResult(r); err != nil {
		t.Fatalf("ADD %s result %v: %v", name, r, err)
	}
	for _, ip := range p.res.IPs {
		p.ips = append(p.ips, ip.Address.IP)
	}
	if len(p.res.Interfaces) > 0 {
		p.host = p.res.Interfaces[0].Name
	}
	return p
}

func (p *famPod) exec(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", p.ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v: %w: %s", args, err, out)
	}
	return string(out), nil
}

func (p *famPod) mustExec(t *testing.T, args ...string) string {
	t.Helper()
	out, err := p.exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAttachmentFamilies attaches pods through libcni and the real weir
// binary to a real CNI server on a real OVS with the real pipeline, once
// per family case (IPv4-only, dual-stack, IPv6-only), and goes through a
// pod's life: ADD (the result lists an address of exactly the node's
// families, each with its gateway and default route; the pod holds exactly
// those addresses and routes; the MAC comes from the primary address; the
// interface store and the OVSDB record hold the addresses), traffic (pod to
// pod and pod to gateway over each family, through the pipeline), CHECK,
// an agent restart (new pipeline round, IPAM from its files, Restore from
// OVSDB: both pods restored, CHECK and traffic again), GC of one pod (its
// port, veth and addresses freed) and DEL of the other (nothing left).
func TestAttachmentFamilies(t *testing.T) {
	testroot.Require(t, "runs OVS, network namespaces and veths")
	binDir := buildWeirBinary(t)
	for _, fc := range familyCases {
		t.Run(fc.name, func(t *testing.T) {
			began := time.Now()
			n := newFamNode(t, binDir, fc.cidr, fc.cidr6)
			if st := n.start(t, 1); st != (RestoreStats{}) {
				t.Fatalf("Restore on a fresh node: %+v", st)
			}
			a, b := n.add(t, "a"), n.add(t, "b")
			t.Logf("node up and two pods added in %v", time.Since(began).Round(time.Millisecond))
			for _, p := range []*famPod{a, b} {
				n.checkAttachment(t, p)
			}

			traffic := func(t *testing.T, what string) {
				t.Helper()
				for _, pair := range [][2]*famPod{{a, b}, {b, a}} {
					for _, ip := range pair[1].ips {
						if out, err := pair[0].exec("ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", ip.String()); err != nil {
							t.Errorf("%s: pod %s -> pod %s at %s: %v\n%s", what, pair[0].id, pair[1].id, ip, err, out)
						}
					}
				}
				for _, gw := range []net.IP{n.gw, n.gw6} {
					if gw == nil {
						continue
					}
					if out, err := a.exec("ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", gw.String()); err != nil {
						t.Errorf("%s: pod -> gateway %s: %v\n%s", what, gw, err, out)
					}
				}
			}
			traffic(t, "after ADD")
			for _, p := range []*famPod{a, b} {
				if err := n.cni.CheckNetworkList(testctx.Timeout(t, time.Minute), n.list, p.rt); err != nil {
					t.Errorf("CHECK %s: %v", p.id, err)
				}
			}

			// An agent restart: the flows of round 1 stay in OVS until the
			// new run has reinstalled its own (then the agent deletes them).
			n.stop()
			if st := n.start(t, 2); st.Restored != 2 || st.Removed != 0 || st.Released != 0 {
				t.Errorf("Restore after the restart: %+v, want 2 restored", st)
			}
			n.ovs.MustOfctl(t, "-O", "OpenFlow15", "del-flows", "br-int",
				fmt.Sprintf("cookie=%#x/%#x", uint64(openflow.MakeCookie(1, 0, 0)), openflow.CookieRoundMask))
			for _, p := range []*famPod{a, b} {
				n.checkAttachment(t, p)
				if err := n.cni.CheckNetworkList(testctx.Timeout(t, time.Minute), n.list, p.rt); err != nil {
					t.Errorf("CHECK %s after the restart: %v", p.id, err)
				}
			}
			traffic(t, "after the restart")

			// GC keeps a and removes b.
			if err := n.cni.GCNetworkList(testctx.Timeout(t, time.Minute), n.list, &libcni.GCArgs{
				ValidAttachments: []types.GCAttachment{{ContainerID: a.id, IfName: "eth0"}}}); err != nil {
				t.Fatalf("GC: %v", err)
			}
			n.checkGone(t, b)
			n.checkAttachment(t, a)
			if out, err := a.exec("ping", "-n", "-c", "1", "-W", "2", a.res.IPs[0].Gateway.String()); err != nil {
				t.Errorf("the pod kept by GC cannot reach its gateway: %v\n%s", err, out)
			}

			if err := n.cni.DelNetworkList(testctx.Timeout(t, time.Minute), n.list, a.rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			n.checkGone(t, a)
			if err := n.cni.DelNetworkList(testctx.Timeout(t, time.Minute), n.list, a.rt); err != nil {
				t.Errorf("DEL again: %v", err)
			}
			for _, al := range []*ipam.Allocator{n.alloc, n.alloc6} {
				if al != nil && len(al.List()) != 0 {
					t.Errorf("IPAM of %s still holds %v", al.CIDR(), al.List())
				}
			}
			if got := n.srv.Interfaces().Len(); got != 0 {
				t.Errorf("%d interfaces left in the store", got)
			}
			if pods := n.pipe.Pods(); len(pods) != 0 {
				t.Errorf("the pipeline still has pod flows for %v", pods)
			}
			t.Logf("whole life in %v", time.Since(began).Round(time.Millisecond))
		})
	}
}

// checkAttachment checks p as ADD must have left it (and Restore kept it).
func (n *famNode) checkAttachment(t *testing.T, p *famPod) {
	t.Helper()
	ctx := testctx.Timeout(t, time.Minute)
	var want []string // "address gw gateway", in order
	var wantRoutes []string
	for _, f := range []struct {
		cidr *net.IPNet
		gw   net.IP
		def  string
	}{{n.cidr, n.gw, "0.0.0.0/0"}, {n.cidr6, n.gw6, "::/0"}} {
		if f.cidr == nil {
			continue
		}
		var ip net.IP
		for _, a := range p.ips {
			if f.cidr.Contains(a) {
				ip = a
			}
		}
		if ip == nil {
			t.Errorf("pod %s: the result has no address of %s: %v", p.id, f.cidr, p.ips)
			continue
		}
		ones, _ := f.cidr.Mask.Size()
		want = append(want, fmt.Sprintf("%s/%d gw %s", ip, ones, f.gw))
		wantRoutes = append(wantRoutes, f.def+" via "+f.gw.String())
	}
	var got, gotRoutes []string
	for _, ip := range p.res.IPs {
		got = append(got, ip.Address.String()+" gw "+ip.Gateway.String())
		if ip.Interface == nil || *ip.Interface != 1 {
			t.Errorf("pod %s: result address %s is not on the sandbox interface", p.id, ip.Address.String())
		}
	}
	for _, r := range p.res.Routes {
		gotRoutes = append(gotRoutes, r.Dst.String()+" via "+r.GW.String())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("pod %s: result addresses %v, want %v", p.id, got, want)
	}
	if strings.Join(gotRoutes, ",") != strings.Join(wantRoutes, ",") {
		t.Errorf("pod %s: result routes %v, want %v", p.id, gotRoutes, wantRoutes)
	}
	if len(p.ips) == 0 {
		return
	}
	mac := podnet.MACFromIP(p.ips[0])
	if len(p.res.Interfaces) != 2 || p.res.Interfaces[1].Mac != mac.String() || p.res.Interfaces[1].Sandbox != p.ns.Path {
		t.Errorf("pod %s: result interfaces %+v, want the sandbox eth0 with MAC %s", p.id, p.res.Interfaces, mac)
	}

	// The pod holds exactly those addresses and default routes.
	for _, f := range []struct {
		flag string
		cidr *net.IPNet
		gw   net.IP
	}{{"-4", n.cidr, n.gw}, {"-6", n.cidr6, n.gw6}} {
		addrs := strings.TrimSpace(p.mustExec(t, "ip", f.flag, "-o", "addr", "show", "dev", "eth0", "scope", "global"))
		routes := strings.TrimSpace(p.mustExec(t, "ip", f.flag, "route", "show", "default"))
		if f.cidr == nil {
			if addrs != "" || routes != "" {
				t.Errorf("pod %s has %s addresses or default routes of a family the node does not serve:\n%s\n%s", p.id, f.flag, addrs, routes)
			}
			continue
		}
		for _, ip := range p.ips {
			if f.cidr.Contains(ip) && !strings.Contains(addrs, ip.String()+"/") {
				t.Errorf("pod %s lacks %s: %s", p.id, ip, addrs)
			}
		}
		if !strings.Contains(routes, "default via "+f.gw.String()+" dev eth0") {
			t.Errorf("pod %s: %s default route %q, want via %s", p.id, f.flag, routes, f.gw)
		}
	}
	if got := strings.TrimSpace(p.mustExec(t, "cat", "/sys/class/net/eth0/address")); got != mac.String() {
		t.Errorf("pod %s: eth0 MAC %s, want %s", p.id, got, mac)
	}

	// The interface store and the OVSDB record hold the addresses.
	var ips []string
	for _, ip := range p.ips {
		ips = append(ips, ip.String())
	}
	if i, ok := n.srv.Interfaces().Get(p.id + "/eth0"); !ok || len(i.IPs) != len(p.ips) || i.PortName != p.host ||
		i.MAC.String() != mac.String() {
		t.Errorf("pod %s: store has %+v (%v)", p.id, i, ok)
	} else {
		for k, a := range i.IPs {
			if a.String() != ips[k] {
				t.Errorf("pod %s: store address %d is %s, want %s", p.id, k, a, ips[k])
			}
		}
	}
	port, err := n.db.GetPort(ctx, "br-int", p.host)
	if err != nil {
		t.Errorf("pod %s: OVS port %s: %v", p.id, p.host, err)
	} else if got := port.ExternalIDs[interfacestore.KeyIP]; got != strings.Join(ips, ",") {
		t.Errorf("pod %s: OVSDB record ip=%q, want %q", p.id, got, strings.Join(ips, ","))
	}
	for _, al := range []*ipam.Allocator{n.alloc, n.alloc6} {
		if al == nil {
			continue
		}
		if ip, ok := al.Lookup(p.id + "/eth0"); !ok || !al.CIDR().Contains(ip) {
			t.Errorf("pod %s: IPAM of %s has %v, %v", p.id, al.CIDR(), ip, ok)
		}
	}
}

// checkGone checks that nothing of p is left: OVS port, host veth, pod
// interface, addresses, store entry, flows.
func (n *famNode) checkGone(t *testing.T, p *famPod) {
	t.Helper()
	if _, err := n.db.GetPort(testctx.Timeout(t, time.Minute), "br-int", p.host); !errors.Is(err, ovsdb.ErrPortNotFound) {
		t.Errorf("pod %s: OVS port %s still there (%v)", p.id, p.host, err)
	}
	if out, err := n.ovs.Exec("", "ip", "link", "show", p.host); err == nil {
		t.Errorf("pod %s: host veth left: %s", p.id, out)
	}
	if out, err := p.exec("ip", "link", "show", "eth0"); err == nil {
		t.Errorf("pod %s: eth0 left in the sandbox: %s", p.id, out)
	}
	for _, al := range []*ipam.Allocator{n.alloc, n.alloc6} {
		if al == nil {
			continue
		}
		if ip, ok := al.Lookup(p.id + "/eth0"); ok {
			t.Errorf("pod %s: IPAM of %s still holds %s", p.id, al.CIDR(), ip)
		}
	}
	if _, ok := n.srv.Interfaces().Get(p.id + "/eth0"); ok {
		t.Errorf("pod %s still in the store", p.id)
	}
	if err := n.pipe.CheckPod(testctx.Timeout(t, time.Minute), p.id+"/eth0"); err == nil {
		t.Errorf("pod %s: the pipeline still has its flows", p.id)
	}
}

// TestIPv6OnlyAddErrors: the error paths of ADD on an IPv6-only node (the
// IPv6 allocator passed to New, real veths, fake OVS and flows): an IPv4
// extra route is a configuration error (code 7) naming the IPv6 gateway;
// an exhausted IPv6 pool is code 11 naming the IPv6 CIDR; a failing OVS
// port rolls everything back, the IPv6 address included. Nothing is left
// after any of them, and an ADD after that succeeds.
func TestIPv6OnlyAddErrors(t *testing.T) {
	testroot.Require(t, "creates network namespaces and veths")
	node := netnsAdd(t, "weir-6e-node")
	pod := netnsAdd(t, "weir-6e-pod")
	_, c6, _ := net.ParseCIDR("fd00:79::/126") // ::1 gateway, ::2 and ::3 for pods
	for _, tc := range []struct {
		name     string
		conf     string
		full     bool
		portErr  error
		wantCode uint32
		wantMsg  string
	}{
		{name: "IPv4 route", conf: `,"routes":[{"dst":"10.96.0.0/12"}]`, wantCode: cniv1.CodeInvalidNetworkConfig,
			wantMsg: "not of the pod network's family (gateway fd00:79::1)"},
		{name: "pool exhausted", full: true, wantCode: cniv1.CodeIPAMExhausted, wantMsg: "no IP address left for the pod in fd00:79::/126"},
		{name: "OVS port fails", portErr: errors.New("injected: port failure"), wantCode: cniv1.CodeOVSFailure,
			wantMsg: "attaching the pod to OVS failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alloc6, err := ipam.New(c6, &ipam.MemStore{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.full {
				for _, k := range []string{"x/eth0", "y/eth0"} {
					if _, err := alloc6.Allocate(k); err != nil {
						t.Fatal(err)
					}
				}
			}
			ports := &fakePorts{addErr: tc.portErr, ports: map[string]int{}}
			flows := &fakeFlows{pods: map[string]bool{}}
			s := New(Config{Bridge: "br-int", MTU: 1450, HostNetNSPath: node}, ports, flows, alloc6)
			s.SetReady(true)
			args := &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: pod,
				NetworkConfiguration: []byte(`{"cniVersion":"1.1.0","name":"weir","type":"weir"` + tc.conf + `}`)}
			resp, err := s.CmdAdd(context.Background(), &cniv1.CniCmdRequest{CniArgs: args})
			if err != nil || resp.GetError().GetCode() != tc.wantCode || !strings.Contains(resp.GetError().GetMessage(), tc.wantMsg) {
				t.Fatalf("ADD = %+v, %v; want code %d with %q", resp, err, tc.wantCode, tc.wantMsg)
			}
			if _, ok := alloc6.Lookup("c1/eth0"); ok {
				t.Errorf("the IPv6 address of the failed ADD is still allocated")
			}
			out, err := exec.Command("ip", "-n", "weir-6e-node", "-o", "link", "show", "type", "veth").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("veth left in the node netns: %s (%v)", out, err)
			}
			if len(flows.pods) != 0 || len(ports.ports) != 0 || s.Interfaces().Len() != 0 {
				t.Errorf("flows %v, ports %v or %d interfaces left", flows.pods, ports.ports, s.Interfaces().Len())
			}
			if tc.full {
				return
			}
			// The same ADD without the fault succeeds.
			ports.addErr = nil
			args.NetworkConfiguration = []byte(`{"cniVersion":"1.1.0","name":"weir","type":"weir"}`)
			if resp, err := s.CmdAdd(context.Background(), &cniv1.CniCmdRequest{CniArgs: args}); err != nil || resp.Error != nil {
				t.Fatalf("ADD after the failure: %+v %v", resp, err)
			}
			// Round-robin: after a rolled-back ::2 the next is ::3.
			if ip, ok := alloc6.Lookup("c1/eth0"); !ok || !c6.Contains(ip) {
				t.Errorf("ADD after the failure got %v, %v; want an address of %s", ip, ok, c6)
			}
			if resp, err := s.CmdDel(context.Background(), &cniv1.CniCmdRequest{CniArgs: args}); err != nil || resp.Error != nil {
				t.Fatalf("DEL: %+v %v", resp, err)
			}
		})
	}
}
