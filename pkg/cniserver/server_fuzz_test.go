package cniserver

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types/create"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2/ktesting"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/podnet"
)

// The fuzz targets below drive the CNI server's gRPC handlers with bad
// input. They need no root and cannot touch the machine's networking: the
// server's host netns and every netns a request names that exists on disk
// are replaced by a regular file, which podnet refuses to enter ("not a
// network namespace") before it creates or deletes anything. OVSDB and the
// pipeline are the fakes of rollback_test.go, IPAM is real (in memory).
// Run one with e.g.
//
//	go test -run '^$' -fuzz '^FuzzCNIServer$' -fuzztime 60s ./pkg/cniserver/

// knownCodes are the CNI error codes the server may answer with.
var knownCodes = map[uint32]bool{
	cniv1.CodeIncompatibleVersion: true, cniv1.CodeUnsupportedField: true, cniv1.CodeUnknownContainer: true,
	cniv1.CodeInvalidEnvironmentVariables: true, cniv1.CodeIOFailure: true, cniv1.CodeDecodingFailure: true,
	cniv1.CodeInvalidNetworkConfig: true, cniv1.CodeTryAgainLater: true, cniv1.CodePluginNotAvailable: true,
	cniv1.CodeLimitedConnectivity: true, cniv1.CodeInternal: true, cniv1.CodeIPAMExhausted: true,
	cniv1.CodeOVSFailure: true, cniv1.CodeInterfaceSetupFailure: true, cniv1.CodeInterfaceExists: true,
}

// fuzzServer is a server with one attachment ("c1"/eth0 of network
// "weir"), so that CHECK, DEL and GC have something to act on.
type fuzzServer struct {
	s      *Server
	ports  *fakePorts
	flows  *fakeFlows
	alloc  *ipam.Allocator
	notNS  string // a regular file standing in for every netns
	seedIP net.IP
	seedIf string
}

const (
	seedContainer = "c1"
	seedIfName    = "eth0"
	seedKey       = seedContainer + "/" + seedIfName
)

func newFuzzServer(t *testing.T, notNS string, ready bool) *fuzzServer {
	_, cidr, _ := net.ParseCIDR("10.77.0.0/28") // small: exhaustion is reachable
	alloc, err := ipam.New(cidr, &ipam.MemStore{})
	if err != nil {
		t.Fatal(err)
	}
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(0)))
	fs := &fuzzServer{ports: &fakePorts{ports: map[string]int{}}, flows: &fakeFlows{pods: map[string]bool{}}, alloc: alloc,
		notNS: notNS}
	fs.s = New(Config{Bridge: "br-int", MTU: 1450, HostNetNSPath: notNS, Logger: logger}, fs.ports, fs.flows, alloc)
	fs.s.SetReady(ready)
	ip, err := alloc.Allocate(seedKey)
	if err != nil {
		t.Fatal(err)
	}
	att := interfacestore.Interface{ContainerID: seedContainer, IfName: seedIfName, NetNS: notNS,
		PortName: podnet.HostIfName(seedContainer, seedIfName), IPs: []netip.Addr{netip.MustParseAddr(ip.String())},
		MAC: podnet.MACFromIP(ip), PodName: "p", PodNamespace: "ns", Network: DefaultNetworkName}
	if att.OFPort, err = fs.s.ofports.Reserve(att.PortName); err != nil {
		t.Fatal(err)
	}
	if err := fs.s.Interfaces().Put(att); err != nil {
		t.Fatal(err)
	}
	fs.ports.ports[att.PortName] = int(att.OFPort)
	fs.flows.pods[att.Key()] = true
	fs.seedIP, fs.seedIf = ip, att.PortName
	return fs
}

// safeNetNS keeps a netns path that does not exist (the server must reject
// or tolerate it) and replaces one that does by the regular file, so no
// fuzz input makes the server enter a real namespace, e.g. the host's
// /proc/self/ns/net.
func (fs *fuzzServer) safeNetNS(p string) string {
	if p == "" {
		return p
	}
	if _, err := os.Lstat(p); err == nil || !os.IsNotExist(err) {
		return fs.notNS
	}
	return p
}

// call dispatches one request to the handler cmd selects.
func (fs *fuzzServer) call(ctx context.Context, cmd byte, args *cniv1.CniCmdArgs) (string, *cniv1.CniCmdResponse, error) {
	if args != nil {
		args.Netns = fs.safeNetNS(args.Netns)
	}
	in := &cniv1.CniCmdRequest{CniArgs: args}
	switch cmd % 5 {
	case 0:
		r, err := fs.s.CmdAdd(ctx, in)
		return "ADD", r, err
	case 1:
		r, err := fs.s.CmdDel(ctx, in)
		return "DEL", r, err
	case 2:
		r, err := fs.s.CmdCheck(ctx, in)
		return "CHECK", r, err
	case 3:
		r, err := fs.s.CmdStatus(ctx, in)
		return "STATUS", r, err
	default:
		r, err := fs.s.CmdGC(ctx, in)
		return "GC", r, err
	}
}

// state is what the server holds: IPs, OpenFlow port numbers, flows, OVS
// ports and attachments.
type serverState struct {
	ips     map[string]string
	ofports map[string]uint32
	flows   map[string]bool
	ports   map[string]int
	pods    []string
}

func (fs *fuzzServer) state() serverState {
	st := serverState{ips: map[string]string{}}
	for k, ip := range fs.alloc.List() {
		st.ips[k] = ip.String()
	}
	st.ofports = fs.s.ofports.Reserved()
	fs.flows.mu.Lock()
	st.flows = maps.Clone(fs.flows.pods)
	fs.flows.mu.Unlock()
	fs.ports.mu.Lock()
	st.ports = maps.Clone(fs.ports.ports)
	fs.ports.mu.Unlock()
	for _, a := range fs.s.Interfaces().List() {
		st.pods = append(st.pods, a.Key())
	}
	return st
}

func (a serverState) equal(b serverState) bool {
	return maps.Equal(a.ips, b.ips) && maps.Equal(a.ofports, b.ofports) && maps.Equal(a.flows, b.flows) &&
		maps.Equal(a.ports, b.ports) && strings.Join(a.pods, ",") == strings.Join(b.pods, ",")
}

// checkResponse: the handler answered (never a gRPC error), with either a
// result or a CNI error with a known code and a message.
func checkResponse(t *testing.T, cmd string, resp *cniv1.CniCmdResponse, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s returned a gRPC error instead of a CNI error: %v", cmd, err)
	}
	if resp == nil {
		t.Fatalf("%s returned neither a response nor an error", cmd)
	}
	if e := resp.GetError(); e != nil {
		if !knownCodes[e.GetCode()] || e.GetMessage() == "" {
			t.Fatalf("%s: CNI error without a known code or a message: %+v", cmd, e)
		}
		if len(resp.GetCniResult()) != 0 {
			t.Fatalf("%s: both an error and a result: %+v", cmd, resp)
		}
		return
	}
	if r := resp.GetCniResult(); len(r) != 0 && !json.Valid(r) {
		t.Fatalf("%s: result is not JSON: %q", cmd, r)
	}
}

// checkAfter checks the server's state after cmd: a failed call changed
// nothing (ADD rolled back fully), only DEL and GC remove the seeded
// attachment, and nothing ever leaks.
func (fs *fuzzServer) checkAfter(t *testing.T, cmd string, resp *cniv1.CniCmdResponse, before serverState) {
	t.Helper()
	after := fs.state()
	failed := resp.GetError() != nil
	switch {
	case failed || cmd == "STATUS" || cmd == "CHECK":
		if !before.equal(after) {
			t.Fatalf("%s (answer %v) changed the server's state:\nbefore %+v\nafter  %+v", cmd, resp.GetError(), before, after)
		}
	case cmd == "DEL" || cmd == "GC":
		// Either untouched, or the seeded attachment is gone entirely.
		gone := serverState{ips: map[string]string{}, ofports: map[string]uint32{}, flows: map[string]bool{}, ports: map[string]int{}}
		if !before.equal(after) && !gone.equal(after) {
			t.Fatalf("%s removed part of an attachment:\nbefore %+v\nafter  %+v", cmd, before, after)
		}
	case cmd == "ADD":
		// Without a real netns the veth cannot be set up: an ADD that
		// succeeds here has skipped a step.
		t.Fatalf("ADD succeeded without a network namespace: %s", resp.GetCniResult())
	}
}

// conf builds a network configuration with extra JSON fields.
func conf(version string, extra string) []byte {
	s := `{"cniVersion":"` + version + `","name":"weir","type":"weir"`
	if extra != "" {
		s += "," + extra
	}
	return []byte(s + "}")
}

// prevResultJSON is a result of the seeded attachment as ADD returned it.
func prevResultJSON(ip net.IP, hostIf, netns string) string {
	return `"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"` + hostIf + `"},{"name":"eth0","mac":"` +
		podnet.MACFromIP(ip).String() + `","sandbox":"` + netns + `"}],"ips":[{"interface":1,"address":"` + ip.String() +
		`/28","gateway":"10.77.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.77.0.1"}]}`
}

// FuzzCNIServer sends fuzzed CNI requests (ADD, DEL, CHECK, STATUS, GC) to
// the server: it must answer each with a result or a CNI error carrying a
// known code, never panic or return a gRPC error, and a failed request
// must leave no trace (IP, OpenFlow port number, flows, OVS port,
// attachment).
func FuzzCNIServer(f *testing.F) {
	notNS := filepath.Join(f.TempDir(), "not-a-netns")
	if err := os.WriteFile(notNS, nil, 0o600); err != nil {
		f.Fatal(err)
	}
	// The seeded attachment's IP is the first the allocator hands out.
	ip := net.ParseIP("10.77.0.2").To4()
	hostIf := podnet.HostIfName(seedContainer, seedIfName)
	k8s := "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u1"
	for _, s := range []struct {
		cmd               byte
		id, ifname, netns string
		args              string
		conf              []byte
		ready             bool
	}{
		{0, "c2", "eth0", "/proc/self/ns/net", k8s, conf("1.0.0", `"mtu":1400`), true},
		{0, "c2", "net1", "/var/run/netns/x", k8s, conf("1.1.0", `"routes":[{"dst":"10.96.0.0/12"}],"defaultRoute":false`), true},
		{0, "c2", "eth0", notNS, k8s, conf("1.1.0", `"runtimeConfig":{"bandwidth":{"ingressRate":1000000,"ingressBurst":4294967295,"egressRate":1,"egressBurst":1}}`), true},
		{0, "c2", "eth0", notNS, "", conf("0.4.0", `"dns":{"nameservers":["10.96.0.10"]},"prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.5/24"}]}`), true},
		{0, seedContainer, seedIfName, notNS, "", conf("1.0.0", ""), true},
		{0, "c2", "eth0", notNS, "", conf("1.0.0", ""), false},
		{1, seedContainer, seedIfName, notNS, k8s, conf("1.1.0", ""), true},
		{1, seedContainer, seedIfName, "", "", conf("1.1.0", ""), true},
		{1, seedContainer, seedIfName, "/var/run/netns/gone", "", []byte(`{"cniVersion":"1.1.0","name":"other"}`), true},
		{1, "c9", "eth0", "", "a=b;;c", conf("1.0.0", ""), true},
		{2, seedContainer, seedIfName, notNS, "", conf("1.1.0", prevResultJSON(ip, hostIf, notNS)), true},
		{2, seedContainer, seedIfName, notNS, "", conf("1.0.0", `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"},{"name":"eth0","sandbox":"/y","mac":"zz"}],"ips":[{"interface":7,"address":"10.77.0.3/16","gateway":"10.77.0.9"}]}`), true},
		{2, seedContainer, seedIfName, notNS, "", conf("1.0.0", `"prevResult":{"cniVersion":"9.9.9"}`), true},
		// CHECK dereferenced the null interface and crashed the agent.
		{2, seedContainer, seedIfName, notNS, "", conf("1.0.0", `"prevResult":{"cniVersion":"1.0.0","interfaces":[null]}`), true},
		{2, seedContainer, seedIfName, notNS, "", conf("1.0.0", `"prevResult":[]`), true},
		{2, seedContainer, seedIfName, notNS, "", conf("1.1.0", ""), true},
		{3, "", "", "", "", []byte(`{"cniVersion":"1.1.0"}`), true},
		{3, "", "", "", "", conf("1.1.0", ""), false},
		{4, "", "", "", "", conf("1.1.0", `"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]`), true},
		{4, "", "", "", "", conf("1.1.0", `"cni.dev/valid-attachments":[]`), true},
		{4, "", "", "", "", conf("1.1.0", `"cni.dev/valid-attachments":{"x":1}`), true},
		{0, "c2", "eth0", notNS, "", []byte(`{"cniVersion":"1.0.0","name":"weir","mtu":-1}`), true},
		{0, "c2", "eth0", notNS, "", []byte("\xff\xfe"), true},
		{0, "c2", "eth0", notNS, "", []byte(`{"cniVersion":"1.0.0","name":"weir","routes":[{"dst":"0.0.0.0/0"}]}`), true},
		{0, strings.Repeat("a", 257), "eth0", notNS, "", conf("1.0.0", ""), true},
	} {
		f.Add(s.cmd, s.id, s.ifname, s.netns, s.args, s.conf, s.ready)
	}
	f.Fuzz(func(t *testing.T, cmd byte, id, ifname, netns, args string, netConf []byte, ready bool) {
		fs := newFuzzServer(t, notNS, ready)
		if !fs.seedIP.Equal(ip) {
			t.Fatalf("seeded attachment got %s, the seeds assume %s", fs.seedIP, ip)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		before := fs.state()
		name, resp, err := fs.call(ctx, cmd, &cniv1.CniCmdArgs{ContainerId: id, Ifname: ifname, Netns: netns, Args: args,
			NetworkConfiguration: netConf})
		checkResponse(t, name, resp, err)
		fs.checkAfter(t, name, resp, before)
	})
}

// FuzzCNIWire decodes fuzzed bytes as the gRPC request message
// (CniCmdRequest, as grpc-go would) and hands it to each handler: a
// message that decodes must be answered like any other request; the
// handlers also get a request without CNI arguments.
func FuzzCNIWire(f *testing.F) {
	notNS := filepath.Join(f.TempDir(), "not-a-netns")
	if err := os.WriteFile(notNS, nil, 0o600); err != nil {
		f.Fatal(err)
	}
	for _, a := range []*cniv1.CniCmdArgs{
		{ContainerId: "c2", Ifname: "eth0", Netns: notNS, Args: "K8S_POD_NAME=p", NetworkConfiguration: conf("1.1.0", "")},
		{ContainerId: seedContainer, Ifname: seedIfName, NetworkConfiguration: conf("1.0.0", "")},
		{NetworkConfiguration: conf("1.1.0", `"cni.dev/valid-attachments":[]`)},
		nil,
	} {
		b, err := proto.Marshal(&cniv1.CniCmdRequest{CniArgs: a})
		if err != nil {
			f.Fatal(err)
		}
		for cmd := range byte(5) {
			f.Add(cmd, b)
		}
	}
	f.Add(byte(0), []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // truncated length-delimited field
	f.Fuzz(func(t *testing.T, cmd byte, wire []byte) {
		var in cniv1.CniCmdRequest
		if err := proto.Unmarshal(wire, &in); err != nil {
			return // grpc-go rejects it before the handler runs
		}
		fs := newFuzzServer(t, notNS, true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		before := fs.state()
		var args *cniv1.CniCmdArgs
		if in.CniArgs != nil {
			args = proto.Clone(in.CniArgs).(*cniv1.CniCmdArgs)
		}
		name, resp, err := fs.call(ctx, cmd, args)
		checkResponse(t, name, resp, err)
		fs.checkAfter(t, name, resp, before)
	})
}

// FuzzCNIResult builds the ADD result for fuzzed network configurations
// (the part of ADD after the veth exists, which needs root to reach
// through CmdAdd): "routes", "defaultRoute", "dns", "mtu", a prevResult of
// a chained plugin in any version, runtimeConfig.bandwidth. The result
// must be a CNI error with a code, or a result in the requested version
// that the CNI library parses and that lists Weir's interface and address;
// CHECK's comparison of a prevResult with the attachment must not panic.
func FuzzCNIResult(f *testing.F) {
	ip := net.ParseIP("10.77.0.2").To4()
	hostIf := podnet.HostIfName(seedContainer, seedIfName)
	for _, s := range []struct {
		ifname string
		conf   []byte
	}{
		{"eth0", conf("1.1.0", "")},
		{"eth0", conf("0.4.0", `"mtu":9000,"dns":{"nameservers":["10.96.0.10"],"search":["svc"]}`)},
		{"net1", conf("1.0.0", `"routes":[{"dst":"10.96.0.0/12"},{"dst":"0.0.0.0/0","gw":"10.77.0.1"}]`)},
		{"net1", conf("1.1.0", `"routes":[{"dst":"fd00::/8"}]`)},
		{"eth0", conf("1.1.0", prevResultJSON(ip, hostIf, "/var/run/netns/p"))},
		{"eth0", conf("0.4.0", `"prevResult":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.0.5/24","interface":3}]}`)},
		{"eth0", conf("1.0.0", `"prevResult":{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/24"}}`)},
		{"eth0", conf("1.0.0", `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"x"}],"ips":[{"interface":-5,"address":"10.77.0.2/28"}]}`)},
		{"eth0", conf("1.0.0", `"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"fd00::1/64"}],"routes":[{"dst":"::/0"}]}`)},
		{"eth0", conf("1.1.0", `"runtimeConfig":{"bandwidth":{"ingressRate":1000000000000000,"ingressBurst":34359738359,"egressRate":999,"egressBurst":0}}`)},
		{"eth0", conf("1.1.0", `"runtimeConfig":{"bandwidth":{"ingressRate":18446744073709551615,"ingressBurst":1}}`)},
	} {
		f.Add(s.ifname, s.conf)
	}
	_, cidr, _ := net.ParseCIDR("10.77.0.0/28")
	f.Fuzz(func(t *testing.T, ifname string, netConf []byte) {
		alloc, err := ipam.New(cidr, &ipam.MemStore{})
		if err != nil {
			t.Fatal(err)
		}
		s := New(Config{MTU: 1450, Logger: ktesting.NewLogger(t, ktesting.NewConfig())}, nil, nil, alloc)
		req, cerr := parseRequest("ADD", &cniv1.CniCmdArgs{ContainerId: seedContainer, Ifname: ifname, NetworkConfiguration: netConf},
			true, false)
		if cerr != nil {
			checkResponse(t, "parse", cniv1.NewErrorResponse(cerr.code, cerr.msg, cerr.details), nil)
			return
		}
		routes, cerr := req.conf.extraRoutes(req.ifName, alloc.Gateway())
		if cerr != nil {
			checkResponse(t, "routes", cniv1.NewErrorResponse(cerr.code, cerr.msg, cerr.details), nil)
			return
		}
		if bw := req.conf.RuntimeConfig.Bandwidth; shapesBandwidth(req) && bw.Validate() == nil {
			mtu := s.mtuFor(req)
			for _, d := range [][2]uint64{{bw.IngressRate, bw.IngressBurst}, {bw.EgressRate, bw.EgressBurst}} {
				if d[0] == 0 {
					continue
				}
				p := podnet.TBFParams(d[0], d[1], mtu)
				if p.RateBytes == 0 || p.BurstBytes < uint64(mtu) || p.LimitBytes < p.BurstBytes {
					t.Fatalf("bandwidth %+v (mtu %d): shaping %+v has no rate, a burst below the MTU or a queue below the burst", *bw, mtu, p)
				}
			}
		}
		att := &interfacestore.Interface{ContainerID: seedContainer, IfName: req.ifName, NetNS: "/var/run/netns/p", PortName: hostIf,
			IPs: []netip.Addr{netip.MustParseAddr(ip.String())}, MAC: podnet.MACFromIP(ip), OFPort: 3, Network: req.conf.Name}
		resp, err := s.result(req, att, routes)
		checkResponse(t, "result", resp, err)
		if resp.GetError() == nil {
			res, err := create.CreateFromBytes(resp.GetCniResult())
			if err != nil {
				t.Fatalf("result %s does not parse: %v", resp.GetCniResult(), err)
			}
			if res.Version() != req.conf.CNIVersion {
				t.Fatalf("result in version %s, request asked for %s", res.Version(), req.conf.CNIVersion)
			}
			if !strings.Contains(string(resp.GetCniResult()), ip.String()+"/28") {
				t.Fatalf("result %s does not list Weir's address %s/28", resp.GetCniResult(), ip)
			}
		}
		if prev, cerr := req.prevResult(); cerr == nil && prev != nil {
			_ = checkPrevResult(prev, att, []podAddress{{ipNet: net.IPNet{IP: ip, Mask: cidr.Mask}, gateway: alloc.Gateway(), alloc: alloc}})
		}
	})
}
