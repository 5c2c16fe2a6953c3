package cniserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	current "github.com/containernetworking/cni/pkg/types/100"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
)

func TestRoutesFromConfig(t *testing.T) {
	gw4, gw6 := net.ParseIP("10.244.0.1").To4(), net.ParseIP("fd00:244::1")
	tests := []struct {
		name        string
		gw          net.IP // the node's one gateway; nil: gw4
		ifName      string
		conf        string // fields added to the network configuration
		wantDefault bool
		wantRoutes  string // comma-separated
		wantErr     string
	}{
		{name: "primary gets the default route", ifName: "eth0", wantDefault: true},
		{name: "secondary does not", ifName: "net1", wantDefault: false},
		{name: "secondary asks for it", ifName: "net1", conf: `"defaultRoute":true`, wantDefault: true},
		{name: "primary without", ifName: "eth0", conf: `"defaultRoute":false`, wantDefault: false},
		{name: "extra routes", ifName: "net1", conf: `"routes":[{"dst":"10.96.0.0/12"},{"dst":"192.168.0.0/16","gw":"10.244.0.1"}]`,
			wantRoutes: "10.96.0.0/12,192.168.0.0/16"},
		{name: "default route as an extra route", ifName: "net1", conf: `"routes":[{"dst":"0.0.0.0/0"}]`, wantRoutes: "0.0.0.0/0"},
		{name: "default route twice", ifName: "eth0", conf: `"routes":[{"dst":"0.0.0.0/0"}]`, wantErr: "gets the default route anyway"},
		{name: "not a CIDR", ifName: "net1", conf: `"routes":[{"dst":"10.96.0.0"}]`, wantErr: `routes[0].dst "10.96.0.0" is not a CIDR`},
		{name: "host bits", ifName: "net1", conf: `"routes":[{"dst":"10.96.0.1/12"}]`, wantErr: "host bits set"},
		{name: "other family", ifName: "net1", conf: `"routes":[{"dst":"fd00::/64"}]`, wantErr: "not of the pod network's family"},
		{name: "other gateway", ifName: "net1", conf: `"routes":[{"dst":"10.96.0.0/12","gw":"10.244.0.9"}]`, wantErr: "via the node's gateway 10.244.0.1 only"},
		{name: "duplicate", ifName: "net1", conf: `"routes":[{"dst":"10.96.0.0/12"},{"dst":"10.96.0.0/12"}]`, wantErr: "listed twice"},
		{name: "IPv4-mapped IPv6 CIDR", ifName: "net1", conf: `"routes":[{"dst":"::ffff:10.96.0.0/108"}]`, wantErr: "IPv4-mapped IPv6 CIDR"},
		// An IPv6-only node: the gateway is IPv6, IPv4 routes are refused.
		{name: "IPv6-only: extra IPv6 route", gw: gw6, ifName: "net1", conf: `"routes":[{"dst":"fd00:96::/108","gw":"fd00:244::1"}]`,
			wantRoutes: "fd00:96::/108"},
		{name: "IPv6-only: IPv6 default route twice", gw: gw6, ifName: "eth0", conf: `"routes":[{"dst":"::/0"}]`, wantErr: "gets the default route anyway"},
		{name: "IPv6-only: IPv4 route", gw: gw6, ifName: "net1", conf: `"routes":[{"dst":"10.96.0.0/12"}]`,
			wantErr: "10.96.0.0/12 is not of the pod network's family (gateway fd00:244::1)"},
		{name: "IPv6-only: other gateway", gw: gw6, ifName: "net1", conf: `"routes":[{"dst":"fd00:96::/108","gw":"fd00:244::9"}]`,
			wantErr: "via the node's gateway fd00:244::1 only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := `{"cniVersion":"1.1.0","name":"weir","type":"weir"`
			if tt.conf != "" {
				raw += "," + tt.conf
			}
			r, cerr := parseRequest("ADD", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: tt.ifName, Netns: t.TempDir(),
				NetworkConfiguration: []byte(raw + "}")}, true, true)
			if cerr != nil {
				t.Fatal(cerr)
			}
			if got := r.conf.wantsDefaultRoute(tt.ifName); got != tt.wantDefault && tt.wantErr == "" {
				t.Errorf("default route = %v, want %v", got, tt.wantDefault)
			}
			gw := tt.gw
			if gw == nil {
				gw = gw4
			}
			routes, cerr := r.conf.extraRoutes(tt.ifName, gw)
			if tt.wantErr != "" {
				if cerr == nil || cerr.code != cniv1.CodeInvalidNetworkConfig || !strings.Contains(cerr.msg, tt.wantErr) {
					t.Fatalf("routes error = %v, want code 7 with %q", cerr, tt.wantErr)
				}
				return
			}
			if cerr != nil {
				t.Fatal(cerr)
			}
			var got []string
			for _, r := range routes {
				got = append(got, r.String())
			}
			if strings.Join(got, ",") != tt.wantRoutes {
				t.Errorf("routes = %v, want %s", got, tt.wantRoutes)
			}
		})
	}
}

func TestCheckPrevResult(t *testing.T) {
	ns := t.TempDir()
	att := &interfacestore.Interface{ContainerID: "c1", IfName: "eth0", NetNS: ns, PortName: "weir0123456789a",
		IPs: []netip.Addr{netip.MustParseAddr("10.244.0.5")}, MAC: net.HardwareAddr{0x0a, 0x58, 10, 244, 0, 5}}
	podIP := net.IPNet{IP: net.ParseIP("10.244.0.5").To4(), Mask: net.CIDRMask(24, 32)}
	gw := net.ParseIP("10.244.0.1").To4()
	good := func() *current.Result {
		idx := 1
		return &current.Result{CNIVersion: "1.1.0",
			Interfaces: []*current.Interface{{Name: att.PortName}, {Name: "eth0", Mac: att.MAC.String(), Sandbox: ns}},
			IPs:        []*current.IPConfig{{Interface: &idx, Address: podIP, Gateway: gw}}}
	}
	tests := []struct {
		name   string
		mutate func(*current.Result)
		want   []string // substrings of the problems; none: consistent
	}{
		{name: "as ADD returned it", mutate: func(*current.Result) {}},
		{name: "a later plugin added an interface and a route", mutate: func(r *current.Result) {
			r.Interfaces = append(r.Interfaces, &current.Interface{Name: "ifb0"})
		}},
		{name: "wrong IP", mutate: func(r *current.Result) { r.IPs[0].Address.IP = net.ParseIP("10.244.0.99").To4() },
			want: []string{"claims address 10.244.0.99/24 on interface eth0", "does not list Weir's address 10.244.0.5/24"}},
		{name: "wrong prefix", mutate: func(r *current.Result) { r.IPs[0].Address.Mask = net.CIDRMask(32, 32) },
			want: []string{"wrong prefix length"}},
		{name: "wrong MAC", mutate: func(r *current.Result) { r.Interfaces[1].Mac = "02:00:00:00:00:01" },
			want: []string{"interface eth0 has MAC 02:00:00:00:00:01, Weir gave it 0a:58:0a:f4:00:05"}},
		{name: "wrong sandbox", mutate: func(r *current.Result) { r.Interfaces[1].Sandbox = "/var/run/netns/elsewhere" },
			want: []string{"interface eth0 is in sandbox /var/run/netns/elsewhere"}},
		{name: "wrong host interface", mutate: func(r *current.Result) { r.Interfaces[0].Name = "weirffffffffff0" },
			want: []string{"does not list Weir's host interface weir0123456789a"}},
		{name: "no interfaces", mutate: func(r *current.Result) { r.Interfaces = nil; r.IPs[0].Interface = nil },
			want: []string{"does not list Weir's host interface", "does not list interface eth0 in a sandbox"}},
		{name: "wrong gateway", mutate: func(r *current.Result) { r.IPs[0].Gateway = net.ParseIP("10.244.0.254") },
			want: []string{"has gateway 10.244.0.254"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.mutate(r)
			got := strings.Join(checkPrevResult(r, att, []podAddress{{ipNet: podIP, gateway: gw}}), "; ")
			if len(tt.want) == 0 && got != "" {
				t.Fatalf("problems %q, want none", got)
			}
			if len(tt.want) > 0 && got == "" {
				t.Fatal("no problem found")
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("problems %q lack %q", got, w)
				}
			}
		})
	}
}

func TestSameNetNS(t *testing.T) {
	if !sameNetNS("/proc/self/ns/net", "/proc/thread-self/ns/net") {
		t.Error("two paths of the same netns differ")
	}
	if sameNetNS("/proc/self/ns/net", "/proc/self/ns/mnt") {
		t.Error("different namespaces compare equal")
	}
	if sameNetNS("/nonexistent/a", "/nonexistent/b") || !sameNetNS("/nonexistent/a", "/nonexistent/a") {
		t.Error("unresolvable paths: only equal strings are the same")
	}
}

func TestPrevResultDecoding(t *testing.T) {
	tests := []struct {
		name     string
		prev     string
		wantNil  bool
		wantCode uint32
	}{
		{name: "none", wantNil: true},
		{name: "1.1.0 result", prev: `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.0.0.5/24","interface":0}]}`},
		{name: "garbage", prev: `{"cniVersion":"1.1.0","ips":[{"address":"nonsense"}]}`, wantCode: cniv1.CodeDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := `{"cniVersion":"1.1.0","name":"weir","type":"weir"`
			if tt.prev != "" {
				raw += `,"prevResult":` + tt.prev
			}
			r, cerr := parseRequest("CHECK", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: t.TempDir(),
				NetworkConfiguration: []byte(raw + "}")}, true, true)
			if cerr != nil {
				t.Fatal(cerr)
			}
			res, cerr := r.prevResult()
			if tt.wantCode != 0 {
				if cerr == nil || cerr.code != tt.wantCode {
					t.Fatalf("got %v, want code %d", cerr, tt.wantCode)
				}
				return
			}
			if cerr != nil || (res == nil) != tt.wantNil {
				t.Fatalf("prevResult = %+v, %v", res, cerr)
			}
			if _, again := r.prevResult(); again != nil {
				t.Fatalf("second decoding failed: %v", again)
			}
		})
	}
}

// TestResult: the ADD result lists exactly the routes the configuration
// asks for, and, chained after another plugin, extends its prevResult
// (the spec: a plugin "MUST handle prevResult by either passing it through,
// or modifying it appropriately").
func TestResult(t *testing.T) {
	_, cidr, _ := net.ParseCIDR("10.244.0.0/24")
	alloc, err := ipam.New(cidr, &ipam.MemStore{})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{MTU: 1450}, nil, nil, alloc)
	att := &interfacestore.Interface{ContainerID: "c1", IfName: "net1", NetNS: "/var/run/netns/p", PortName: "weir0123456789a",
		IPs: []netip.Addr{netip.MustParseAddr("10.244.0.5")}, MAC: net.HardwareAddr{0x0a, 0x58, 10, 244, 0, 5}}
	prev := `{"cniVersion":"1.1.0","interfaces":[{"name":"lo","sandbox":"/var/run/netns/p"}],` +
		`"ips":[{"address":"127.0.0.1/8","interface":0}],"routes":[{"dst":"192.0.2.0/24"}],"dns":{"nameservers":["10.96.0.10"]}}`
	tests := []struct {
		name       string
		conf       string
		wantIfs    string // name@sandbox, comma-separated
		wantIPs    string // address on interface index
		wantRoutes string
	}{
		{name: "secondary: no routes", conf: ``, wantIfs: "weir0123456789a@,net1@/var/run/netns/p",
			wantIPs: "10.244.0.5/24@1"},
		{name: "secondary with default and extra routes", conf: `,"defaultRoute":true,"routes":[{"dst":"10.96.0.0/12"}]`,
			wantIfs: "weir0123456789a@,net1@/var/run/netns/p", wantIPs: "10.244.0.5/24@1",
			wantRoutes: "0.0.0.0/0 via 10.244.0.1,10.96.0.0/12 via 10.244.0.1"},
		{name: "after another plugin", conf: `,"prevResult":` + prev,
			wantIfs: "lo@/var/run/netns/p,weir0123456789a@,net1@/var/run/netns/p", wantIPs: "127.0.0.1/8@0,10.244.0.5/24@2",
			wantRoutes: "192.0.2.0/24 via <nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, cerr := parseRequest("ADD", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "net1", Netns: t.TempDir(),
				NetworkConfiguration: []byte(`{"cniVersion":"1.1.0","name":"weir","type":"weir"` + tt.conf + `}`)}, true, true)
			if cerr != nil {
				t.Fatal(cerr)
			}
			routes, cerr := req.conf.extraRoutes(req.ifName, alloc.Gateway())
			if cerr != nil {
				t.Fatal(cerr)
			}
			resp, err := s.result(req, att, routes)
			if err != nil || resp.Error != nil {
				t.Fatalf("result: %v %v", err, resp.Error)
			}
			r, err := current.NewResultFromResult(mustResult(t, resp.CniResult))
			if err != nil {
				t.Fatal(err)
			}
			var ifs, ips, rs []string
			for _, i := range r.Interfaces {
				ifs = append(ifs, i.Name+"@"+i.Sandbox)
			}
			for _, ip := range r.IPs {
				ips = append(ips, fmt.Sprintf("%s@%d", ip.Address.String(), *ip.Interface))
			}
			for _, rt := range r.Routes {
				rs = append(rs, fmt.Sprintf("%s via %v", rt.Dst.String(), rt.GW))
			}
			if got := strings.Join(ifs, ","); got != tt.wantIfs {
				t.Errorf("interfaces %s, want %s", got, tt.wantIfs)
			}
			if got := strings.Join(ips, ","); got != tt.wantIPs {
				t.Errorf("ips %s, want %s", got, tt.wantIPs)
			}
			if got := strings.Join(rs, ","); got != tt.wantRoutes {
				t.Errorf("routes %s, want %s", got, tt.wantRoutes)
			}
		})
	}
}

// TestResultIPv6Only: on an IPv6-only node (New's allocator IPv6, no
// Config.IPv6) the result lists the pod's one IPv6 address with the IPv6
// gateway and its routes via it (the default route ::/0), in every
// supported version (0.4.0 with "version": "6").
func TestResultIPv6Only(t *testing.T) {
	_, cidr, _ := net.ParseCIDR("fd00:244::/64")
	alloc, err := ipam.New(cidr, &ipam.MemStore{})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{MTU: 1430}, nil, nil, alloc)
	att := &interfacestore.Interface{ContainerID: "c1", IfName: "eth0", NetNS: "/var/run/netns/p", PortName: "weir0123456789a",
		IPs: []netip.Addr{netip.MustParseAddr("fd00:244::5")}, MAC: net.HardwareAddr{0x0a, 0x58, 1, 2, 3, 4}}
	for _, tt := range []struct {
		name, version, conf string
		wantRoutes          string
	}{
		{name: "primary", version: "1.1.0", wantRoutes: "::/0 via fd00:244::1"},
		{name: "primary, 0.4.0", version: "0.4.0", wantRoutes: "::/0 via fd00:244::1"},
		{name: "extra route", version: "1.0.0", conf: `,"routes":[{"dst":"fd00:96::/108"}]`,
			wantRoutes: "::/0 via fd00:244::1,fd00:96::/108 via fd00:244::1"},
		{name: "no default route", version: "1.1.0", conf: `,"defaultRoute":false`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, cerr := parseRequest("ADD", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: t.TempDir(),
				NetworkConfiguration: []byte(`{"cniVersion":"` + tt.version + `","name":"weir","type":"weir"` + tt.conf + `}`)}, true, true)
			if cerr != nil {
				t.Fatal(cerr)
			}
			routes, cerr := req.conf.extraRoutes(req.ifName, s.gateways()...)
			if cerr != nil {
				t.Fatal(cerr)
			}
			resp, err := s.result(req, att, routes)
			if err != nil || resp.Error != nil {
				t.Fatalf("result: %v %v", err, resp.Error)
			}
			if tt.version == "0.4.0" && !strings.Contains(string(resp.CniResult), `"version":"6"`) {
				t.Errorf("0.4.0 result without \"version\": \"6\": %s", resp.CniResult)
			}
			r, err := current.NewResultFromResult(mustResult040(t, tt.version, resp.CniResult))
			if err != nil {
				t.Fatal(err)
			}
			var ips, rs []string
			for _, ip := range r.IPs {
				ips = append(ips, fmt.Sprintf("%s gw %v @%d", ip.Address.String(), ip.Gateway, *ip.Interface))
			}
			for _, rt := range r.Routes {
				rs = append(rs, fmt.Sprintf("%s via %v", rt.Dst.String(), rt.GW))
			}
			if got, want := strings.Join(ips, ","), "fd00:244::5/64 gw fd00:244::1 @1"; got != want {
				t.Errorf("ips %s, want %s", got, want)
			}
			if got := strings.Join(rs, ","); got != tt.wantRoutes {
				t.Errorf("routes %s, want %s", got, tt.wantRoutes)
			}
			if len(r.Interfaces) != 2 || r.Interfaces[1].Mac != "0a:58:01:02:03:04" || r.Interfaces[1].Mtu != 1430 && tt.version != "0.4.0" {
				t.Errorf("interfaces %+v", r.Interfaces)
			}
		})
	}
}

// mustResult040 decodes a result of version v (0.4.0 or current).
func mustResult040(t *testing.T, v string, b []byte) types.Result {
	t.Helper()
	if v != "0.4.0" {
		return mustResult(t, b)
	}
	r, err := types040.NewResult(b)
	if err != nil {
		t.Fatalf("0.4.0 result %s: %v", b, err)
	}
	return r
}

func mustResult(t *testing.T, b []byte) types.Result {
	t.Helper()
	r, err := current.NewResult(b)
	if err != nil {
		t.Fatalf("result %s: %v", b, err)
	}
	return r
}

// TestStatus: STATUS's spec codes: 50 when ADD cannot be served (starting,
// no IP address left), 51 when the dataplane is impaired.
func TestStatus(t *testing.T) {
	tests := []struct {
		name      string
		cidr      string // "": 10.77.0.0/30, one pod address
		ready     bool
		full      bool
		dataplane error
		wantCode  uint32
		wantMsg   string
	}{
		{name: "ready", ready: true},
		{name: "starting", wantCode: cniv1.CodePluginNotAvailable, wantMsg: "not ready"},
		{name: "pool exhausted", ready: true, full: true, wantCode: cniv1.CodePluginNotAvailable,
			wantMsg: "no IP address left for new pods in pod CIDR 10.77.0.0/30 (1 of 1 in use)"},
		{name: "IPv6-only: ready", cidr: "fd00:77::/126", ready: true},
		{name: "IPv6-only: pool exhausted", cidr: "fd00:77::/126", ready: true, full: true, wantCode: cniv1.CodePluginNotAvailable,
			wantMsg: "no IP address left for new pods in pod CIDR fd00:77::/126 (2 of 2 in use)"},
		{name: "dataplane impaired", ready: true, dataplane: errors.New("OpenFlow connection down"),
			wantCode: cniv1.CodeLimitedConnectivity, wantMsg: "existing pods may have limited connectivity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cidr
			if c == "" {
				c = "10.77.0.0/30"
			}
			_, cidr, _ := net.ParseCIDR(c)
			alloc, err := ipam.New(cidr, &ipam.MemStore{})
			if err != nil {
				t.Fatal(err)
			}
			for i := uint64(0); tt.full && i < alloc.Size(); i++ {
				if _, err := alloc.Allocate(fmt.Sprintf("c%d/eth0", i)); err != nil {
					t.Fatal(err)
				}
			}
			cfg := Config{}
			if tt.dataplane != nil {
				cfg.Dataplane = func() error { return tt.dataplane }
			}
			s := New(cfg, nil, nil, alloc)
			s.SetReady(tt.ready)
			resp, err := s.CmdStatus(context.Background(), &cniv1.CniCmdRequest{CniArgs: &cniv1.CniCmdArgs{
				NetworkConfiguration: []byte(`{"cniVersion":"1.1.0","name":"weir","type":"weir"}`)}})
			if err != nil {
				t.Fatal(err)
			}
			e := resp.GetError()
			if e.GetCode() != tt.wantCode || !strings.Contains(e.GetMessage(), tt.wantMsg) {
				t.Fatalf("STATUS = %v, want code %d with %q", e, tt.wantCode, tt.wantMsg)
			}
		})
	}
}
