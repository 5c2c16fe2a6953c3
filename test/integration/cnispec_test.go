package integration

// Tests of the CNI specification (v1.1) points Weir must meet, run with the
// real weir binary through libcni against the real agent and OVS, with the
// reference plugin tuning chained after weir where it matters.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// netList is a network configuration list named name: weir (its
// configuration extended by the JSON members weirExtra, e.g.
// `"defaultRoute":false`) followed by the chained plugin configurations.
func (n *node) netList(t testing.TB, version, name, weirExtra string, chained ...string) *libcni.NetworkConfigList {
	t.Helper()
	weir := fmt.Sprintf(`{"type":"weir","cniSocket":%q`, n.sock)
	if weirExtra != "" {
		weir += "," + weirExtra
	}
	plugins := append([]string{weir + "}"}, chained...)
	l, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`,
		version, name, strings.Join(plugins, ","))))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// rtIf is the attachment of p's interface ifName, with the CNI_ARGS
// containerd passes (IgnoreUnknown, which tuning needs to accept the K8S_*).
func rtIf(p *pod, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.id, NetNS: p.path, IfName: ifName,
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", p.id}}}
}

func (n *node) addList(t testing.TB, l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*current.Result, error) {
	t.Helper()
	res, err := n.cni.AddNetworkList(context.Background(), l, rt)
	if err != nil {
		return nil, err
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	return r, nil
}

// cacheFile is where libcni keeps the result of an ADD, which it passes as
// prevResult to CHECK and DEL.
func (n *node) cacheFile(network string, rt *libcni.RuntimeConf) string {
	return filepath.Join(n.dir, "cache", "results", network+"-"+rt.ContainerID+"-"+rt.IfName)
}

// installedRoutes lists the routes of dev in the pod other than the
// kernel's connected route, as `ip -4 route` prints them.
func installedRoutes(t testing.TB, ns, dev string) []string {
	t.Helper()
	out, err := inNS(ns, "ip", "-4", "route", "show", "dev", dev)
	if err != nil {
		t.Fatalf("ip route: %v: %s", err, out)
	}
	var rs []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "proto kernel") {
			rs = append(rs, l)
		}
	}
	slices.Sort(rs)
	return rs
}

// resultRoutes renders a result's routes as installedRoutes prints them.
func resultRoutes(r *current.Result) []string {
	var rs []string
	for _, rt := range r.Routes {
		dst := rt.Dst.String()
		if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
			dst = "default"
		}
		rs = append(rs, dst+" via "+rt.GW.String()+" onlink")
	}
	slices.Sort(rs)
	return rs
}

func linkMTU(t testing.TB, ns, dev string) int {
	t.Helper()
	out, err := inNS(ns, "cat", "/sys/class/net/"+dev+"/mtu")
	if err != nil {
		t.Fatalf("MTU of %s: %v: %s", dev, err, out)
	}
	mtu, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return mtu
}

// TestCNISpecTuningChain: a chain weir → tuning. CHECK must allow for what
// the later plugin changed (the spec: "The plugin must allow for a later
// chained plugin to have modified networking resources"), except what Weir
// depends on: the MAC, which the pod's flows match and rewrite.
func TestCNISpecTuningChain(t *testing.T) {
	n := newNode(t, "10.24.0.0/24")
	tests := []struct {
		name      string
		tuning    string
		wantMTU   int    // 0: the MTU Weir set (in its result)
		wantCheck string // "" CHECK passes; else a substring of its error
	}{
		{name: "MTU lowered", tuning: `{"type":"tuning","mtu":1400}`, wantMTU: 1400},
		{name: "promisc and a sysctl", tuning: `{"type":"tuning","promisc":true,"sysctl":{"net.ipv4.conf.eth0.arp_ignore":"1"}}`},
		{name: "MAC changed", tuning: `{"type":"tuning","mac":"02:11:22:33:44:55"}`,
			wantCheck: "interface eth0 has MAC 02:11:22:33:44:55, Weir gave it 0a:58:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := n.netList(t, "1.1.0", "weir", "", tc.tuning)
			p := newSandbox(t)
			rt := rtIf(p, "eth0")
			res, err := n.addList(t, l, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			ip := res.IPs[0].Address.IP.String()
			want := tc.wantMTU
			if want == 0 {
				want = res.Interfaces[1].Mtu
			}
			if mtu := linkMTU(t, p.ns, "eth0"); mtu != want || want == 0 {
				t.Errorf("eth0 MTU %d, want %d", mtu, want)
			}
			err = n.cni.CheckNetworkList(context.Background(), l, rt)
			switch {
			case tc.wantCheck == "" && err != nil:
				t.Errorf("CHECK: %v", err)
			case tc.wantCheck != "" && (err == nil || !strings.Contains(err.Error(), tc.wantCheck)):
				t.Errorf("CHECK: %v, want an error with %q", err, tc.wantCheck)
			}
			if tc.wantCheck == "" {
				if err := ping(p.ns, "10.24.0.1"); err != nil {
					t.Error(err)
				}
			}
			if err := n.cni.DelNetworkList(context.Background(), l, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if len(n.podPorts(t)) != 0 || n.allocatedIPs(t)[ip] {
				t.Errorf("after DEL: ports %v, IP %s allocated %v", n.podPorts(t), ip, n.allocatedIPs(t)[ip])
			}
		})
	}
}

// TestCNISpecCheckPrevResult: CHECK consults prevResult (libcni passes the
// cached ADD result; the test edits the cache as a confused runtime would
// have it). A missing prevResult is an invalid configuration (7); a
// prevResult claiming another IP, MAC, sandbox or host interface fails.
func TestCNISpecCheckPrevResult(t *testing.T) {
	n := newNode(t, "10.25.0.0/24")
	p := newSandbox(t)
	rt := rtIf(p, "eth0")
	l := n.netList(t, "1.1.0", "weir", "")
	res, err := n.addList(t, l, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	cache := n.cacheFile("weir", rt)
	orig, err := os.ReadFile(cache)
	if err != nil {
		t.Fatalf("libcni's cached result: %v", err)
	}
	hostIf, mac, ip := res.Interfaces[0].Name, res.Interfaces[1].Mac, res.IPs[0].Address.String()
	other := newSandbox(t)
	tests := []struct {
		name     string
		version  string
		edit     func(r map[string]any) // nil: remove the cached result
		wantCode uint
		wantMsg  []string
	}{
		{name: "as ADD returned it", version: "1.1.0", edit: func(map[string]any) {}},
		{name: "no prevResult (1.1.0)", version: "1.1.0", wantCode: 7, wantMsg: []string{"CHECK without prevResult"}},
		{name: "no prevResult (1.0.0)", version: "1.0.0", wantCode: 7, wantMsg: []string{"CHECK without prevResult"}},
		{name: "wrong IP", version: "1.1.0", edit: func(r map[string]any) {
			r["ips"].([]any)[0].(map[string]any)["address"] = "10.25.0.99/24"
		}, wantCode: 100, wantMsg: []string{"claims address 10.25.0.99/24 on interface eth0", "does not list Weir's address " + ip}},
		{name: "wrong MAC", version: "1.1.0", edit: func(r map[string]any) {
			r["interfaces"].([]any)[1].(map[string]any)["mac"] = "02:00:00:00:00:01"
		}, wantCode: 100, wantMsg: []string{"interface eth0 has MAC 02:00:00:00:00:01, Weir gave it " + mac}},
		{name: "wrong sandbox", version: "1.1.0", edit: func(r map[string]any) {
			r["interfaces"].([]any)[1].(map[string]any)["sandbox"] = other.path
		}, wantCode: 100, wantMsg: []string{"interface eth0 is in sandbox " + other.path}},
		{name: "wrong host interface", version: "1.1.0", edit: func(r map[string]any) {
			r["interfaces"].([]any)[0].(map[string]any)["name"] = "weir00000000000"
		}, wantCode: 100, wantMsg: []string{"does not list Weir's host interface " + hostIf}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { _ = os.WriteFile(cache, orig, 0o600) })
			if tc.edit == nil {
				if err := os.Remove(cache); err != nil {
					t.Fatal(err)
				}
			} else {
				var c map[string]any
				if err := json.Unmarshal(orig, &c); err != nil {
					t.Fatal(err)
				}
				tc.edit(c["result"].(map[string]any))
				b, _ := json.Marshal(c)
				if err := os.WriteFile(cache, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			l := n.netList(t, tc.version, "weir", "")
			err := n.cni.CheckNetworkList(context.Background(), l, rt)
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("CHECK: %v", err)
				}
				return
			}
			if cniCode(err) != tc.wantCode {
				t.Fatalf("CHECK: %v (code %d), want code %d", err, cniCode(err), tc.wantCode)
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("CHECK error %q lacks %q", err, m)
				}
			}
		})
	}
	// What Weir owns is verified too: its port's flows.
	t.Run("flows gone", func(t *testing.T) {
		n.ovs.MustOfctl(t, "-O", "OpenFlow15", "del-flows", "br-int", "cookie=0x0002000000000000/0x00ff000000000000")
		err := n.cni.CheckNetworkList(context.Background(), l, rt)
		if err == nil {
			t.Fatal("CHECK passed with the pod's flows deleted")
		}
		t.Logf("CHECK: %v", err)
	})
}

// TestCNISpecMultipleAttachments: a container with eth0 and net1 from the
// network "weir" and net2 from a second Weir network "weir-b". Each gets its
// own IP and exactly the routes its configuration asks for (the default
// route on eth0 only), which the result lists; DEL of one leaves the others
// working; a repeated ADD, of the same or another network, fails without
// touching the existing interface, and the DEL a runtime then sends for the
// failed network leaves the other network's interface alone.
func TestCNISpecMultipleAttachments(t *testing.T) {
	n := newNode(t, "10.26.0.0/24")
	gw := "10.26.0.1"
	weir := n.netList(t, "1.1.0", "weir", "")
	weirB := n.netList(t, "1.1.0", "weir-b", `"routes":[{"dst":"192.168.77.0/24"}]`)
	p, peer := newSandbox(t), n.mustAdd(t)
	atts := []struct {
		ifName     string
		list       *libcni.NetworkConfigList
		wantRoutes []string
	}{
		{"eth0", weir, []string{"default via " + gw + " onlink"}},
		{"net1", weir, nil},
		{"net2", weirB, []string{"192.168.77.0/24 via " + gw + " onlink"}},
	}
	ips := map[string]string{}
	for _, a := range atts {
		res, err := n.addList(t, a.list, rtIf(p, a.ifName))
		if err != nil {
			t.Fatalf("ADD %s: %v", a.ifName, err)
		}
		ip := res.IPs[0].Address.IP.String()
		for other, oip := range ips {
			if oip == ip {
				t.Fatalf("%s got %s, which %s has", a.ifName, ip, other)
			}
		}
		ips[a.ifName] = ip
		got, fromResult := installedRoutes(t, p.ns, a.ifName), resultRoutes(res)
		if !slices.Equal(got, a.wantRoutes) || !slices.Equal(fromResult, a.wantRoutes) {
			t.Errorf("%s: installed routes %q, result routes %q, want %q", a.ifName, got, fromResult, a.wantRoutes)
		}
	}
	checkAll := func(t *testing.T, ifNames ...string) {
		t.Helper()
		for _, a := range atts {
			if !slices.Contains(ifNames, a.ifName) {
				continue
			}
			if err := n.cni.CheckNetworkList(context.Background(), a.list, rtIf(p, a.ifName)); err != nil {
				t.Errorf("CHECK %s: %v", a.ifName, err)
			}
			// Bound to the interface, so the reply comes back on it.
			if out, err := inNS(p.ns, "ping", "-c", "2", "-W", "1", "-i", "0.2", "-I", a.ifName, gw); err != nil {
				t.Errorf("ping %s from %s: %v: %s", gw, a.ifName, err, out)
			}
		}
	}
	checkAll(t, "eth0", "net1", "net2")
	if err := ping(peer.ns, ips["eth0"]); err != nil {
		t.Error(err)
	}

	t.Run("repeated ADD fails", func(t *testing.T) {
		for _, tc := range []struct {
			list   *libcni.NetworkConfigList
			ifName string
		}{{weirB, "net2"}, {weirB, "eth0"}, {weir, "net2"}} {
			_, err := n.addList(t, tc.list, rtIf(p, tc.ifName))
			if cniCode(err) != 104 || !strings.Contains(err.Error(), "already has interface "+tc.ifName) {
				t.Errorf("ADD %s of %s again: %v (code %d), want code 104", tc.ifName, tc.list.Name, err, cniCode(err))
			}
		}
		// A runtime DELs the network whose ADD failed: weir-b's eth0 is
		// not weir-b's to delete.
		if err := n.cni.DelNetworkList(context.Background(), weirB, rtIf(p, "eth0")); err != nil {
			t.Fatalf("DEL eth0 of weir-b: %v", err)
		}
		checkAll(t, "eth0", "net1", "net2")
	})

	// CHECK of network weir for weir-b's net2 (with weir-b's result as
	// prevResult, copied into weir's cache) finds no attachment of weir.
	t.Run("CHECK of another network's attachment", func(t *testing.T) {
		b, err := os.ReadFile(n.cacheFile("weir-b", rtIf(p, "net2")))
		if err != nil {
			t.Fatal(err)
		}
		wrong := n.cacheFile("weir", rtIf(p, "net2"))
		if err := os.WriteFile(wrong, b, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(wrong)
		err = n.cni.CheckNetworkList(context.Background(), weir, rtIf(p, "net2"))
		if cniCode(err) != 3 || !strings.Contains(err.Error(), `network "weir" has no attachment`) {
			t.Fatalf("CHECK of net2 as network weir: %v (code %d), want code 3", err, cniCode(err))
		}
	})

	t.Run("DEL of one leaves the others", func(t *testing.T) {
		if err := n.cni.DelNetworkList(context.Background(), weir, rtIf(p, "net1")); err != nil {
			t.Fatalf("DEL net1: %v", err)
		}
		if out, err := inNS(p.ns, "ip", "link", "show", "net1"); err == nil {
			t.Errorf("net1 still in the pod: %s", out)
		}
		if n.allocatedIPs(t)[ips["net1"]] || !n.allocatedIPs(t)[ips["eth0"]] || !n.allocatedIPs(t)[ips["net2"]] {
			t.Errorf("allocations after DEL net1: %v", n.allocatedIPs(t))
		}
		if got := len(n.podPorts(t)); got != 3 { // eth0, net2 and the peer's
			t.Errorf("%d pod ports, want 3", got)
		}
		checkAll(t, "eth0", "net2")
		if err := ping(peer.ns, ips["eth0"]); err != nil {
			t.Error(err)
		}
	})
}

// TestCNISpecGCByNetwork: GC acts only on the attachments of its network
// (the spec: "attachments to this network"). The GCs come from a runtime
// whose result cache is empty, so libcni sends GC alone and the agent does
// all the work.
func TestCNISpecGCByNetwork(t *testing.T) {
	n := newNode(t, "10.27.0.0/24")
	weir, weirB := n.netList(t, "1.1.0", "weir", ""), n.netList(t, "1.1.0", "weir-b", "")
	a, b := n.mustAdd(t), n.mustAdd(t)
	res, err := n.addList(t, weirB, rtIf(a, "net1"))
	if err != nil {
		t.Fatalf("ADD net1 of weir-b: %v", err)
	}
	net1IP := res.IPs[0].Address.IP.String()
	fresh := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	gc := func(t *testing.T, l *libcni.NetworkConfigList, valid ...types.GCAttachment) {
		t.Helper()
		if err := fresh.GCNetworkList(context.Background(), l, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
			t.Fatalf("GC %s: %v", l.Name, err)
		}
	}
	gc(t, weir, types.GCAttachment{ContainerID: a.id, IfName: "eth0"})
	ips := n.allocatedIPs(t)
	if !ips[a.ip] || ips[b.ip] || !ips[net1IP] {
		t.Fatalf("after GC of weir keeping %s/eth0: allocations %v, want %s and weir-b's %s", a.id, ips, a.ip, net1IP)
	}
	if err := n.cni.CheckNetworkList(context.Background(), weirB, rtIf(a, "net1")); err != nil {
		t.Fatalf("CHECK of weir-b's net1 after weir's GC: %v", err)
	}
	gc(t, weirB)
	ips = n.allocatedIPs(t)
	if !ips[a.ip] || ips[net1IP] {
		t.Fatalf("after GC of weir-b with nothing valid: allocations %v, want only %s", ips, a.ip)
	}
	if err := n.check(t, a); err != nil {
		t.Fatalf("CHECK of weir's eth0 after weir-b's GC: %v", err)
	}
	if got := len(n.podPorts(t)); got != 1 {
		t.Fatalf("%d pod ports left, want 1", got)
	}
}

// TestCNISpecLegacyRecords: an attachment whose OVSDB record has no network
// name (written by Weir before it recorded one) restores after an agent
// restart. It counts as the default network's ("weir") for GC, and CHECK
// and DEL of whatever network the runtime names accept it.
func TestCNISpecLegacyRecords(t *testing.T) {
	n := newNode(t, "10.28.0.0/24")
	a, b := n.mustAdd(t), n.mustAdd(t)
	n.stopAgent(t, syscall.SIGTERM)
	for _, p := range []*pod{a, b} {
		n.ovs.MustVsctl(t, "remove", "Port", p.result.Interfaces[0].Name, "external_ids", "cni-network")
	}
	n.startAgent(t)
	fresh := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	if err := fresh.GCNetworkList(context.Background(), n.netList(t, "1.1.0", "weir-b", ""), &libcni.GCArgs{}); err != nil {
		t.Fatal(err)
	}
	if got := len(n.podPorts(t)); got != 2 {
		t.Fatalf("GC of weir-b removed legacy attachments: %d pod ports left, want 2", got)
	}
	if err := n.check(t, a); err != nil {
		t.Fatalf("CHECK of a restored legacy attachment: %v", err)
	}
	// A runtime whose network is named differently still cleans up.
	renamed := n.netList(t, "1.1.0", "renamed", "")
	if err := n.cni.DelNetworkList(context.Background(), renamed, n.rt(b)); err != nil {
		t.Fatalf("DEL of a legacy attachment for network %q: %v", renamed.Name, err)
	}
	if n.allocatedIPs(t)[b.ip] {
		t.Fatalf("legacy attachment's IP %s still allocated after DEL", b.ip)
	}
	if err := fresh.GCNetworkList(context.Background(), n.netList(t, "1.1.0", "weir", ""), &libcni.GCArgs{}); err != nil {
		t.Fatal(err)
	}
	if got := n.podPorts(t); len(got) != 0 {
		t.Fatalf("GC of weir left the legacy attachment: ports %v", got)
	}
}

// TestCNISpecNetnsPaths: the netns paths runtimes pass all work:
// /var/run/netns/X, /run/netns/X and /proc/PID/ns/net; CHECK accepts
// another path of the same namespace.
func TestCNISpecNetnsPaths(t *testing.T) {
	n := newNode(t, "10.29.0.0/24")
	tests := []struct {
		name  string
		path  func(t *testing.T, p *pod) string
		check func(p *pod) string // the path CHECK is given
	}{
		{"/var/run/netns", func(_ *testing.T, p *pod) string { return "/var/run/netns/" + p.ns }, nil},
		{"/run/netns", func(_ *testing.T, p *pod) string { return "/run/netns/" + p.ns },
			func(p *pod) string { return "/var/run/netns/" + p.ns }},
		{"/proc/PID/ns/net", func(t *testing.T, p *pod) string {
			cmd := exec.Command("ip", "netns", "exec", p.ns, "sleep", "300")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			path := fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
			// ip netns exec enters the namespace, then execs sleep.
			deadline := time.Now().Add(5 * time.Second)
			for {
				l, _ := os.Readlink(path)
				want, _ := os.Readlink("/proc/self/ns/net")
				if l != "" && l != want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s never left the root netns", path)
				}
				time.Sleep(10 * time.Millisecond)
			}
			return path
		}, func(p *pod) string { return "/var/run/netns/" + p.ns }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newSandbox(t)
			p.path = tc.path(t, p)
			if _, err := n.addList(t, n.confList(t, "1.1.0"), n.rt(p)); err != nil {
				t.Fatalf("ADD with CNI_NETNS=%s: %v", p.path, err)
			}
			if err := ping(p.ns, "10.29.0.1"); err != nil {
				t.Error(err)
			}
			checkRT := n.rt(p)
			if tc.check != nil {
				checkRT.NetNS = tc.check(p)
			}
			if err := n.cni.CheckNetworkList(context.Background(), n.confList(t, "1.1.0"), checkRT); err != nil {
				t.Errorf("CHECK with CNI_NETNS=%s: %v", checkRT.NetNS, err)
			}
			if err := n.cni.DelNetworkList(context.Background(), n.confList(t, "1.1.0"), n.rt(p)); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if ports := n.podPorts(t); len(ports) != 0 {
				t.Fatalf("ports left after DEL: %v", ports)
			}
		})
	}
}
