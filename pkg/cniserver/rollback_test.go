package cniserver

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/testroot"
)

// fakePorts and fakeFlows stand in for OVSDB and the pipeline so that a
// failure can be injected at each step; the veth plumbing and IPAM are real.
type fakePorts struct {
	addErr error
	mu     sync.Mutex
	ports  map[string]int
}

func (f *fakePorts) AddPort(_ context.Context, _, name string, o ovsdb.PortOptions) (int, error) {
	if f.addErr != nil {
		return 0, f.addErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ports[name] = o.OFPortRequest
	return o.OFPortRequest, nil
}

func (f *fakePorts) DeletePort(_ context.Context, _, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ports, name)
	return nil
}

func (f *fakePorts) GetPort(_ context.Context, _, name string) (ovsdb.PortInfo, error) {
	return ovsdb.PortInfo{Name: name, OFPort: f.ports[name]}, nil
}

func (f *fakePorts) ListPorts(context.Context, string) ([]ovsdb.PortInfo, error) { return nil, nil }

type fakeFlows struct {
	addErr error
	mu     sync.Mutex
	pods   map[string]bool
}

func (f *fakeFlows) AddPod(_ context.Context, p pipeline.PodInterface) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods[p.Key] = true // partly installed, as a real failure may leave it
	return f.addErr
}

func (f *fakeFlows) DeletePod(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, key)
	return nil
}

func (f *fakeFlows) CheckPod(context.Context, string) error { return nil }

// netnsAdd creates network namespace name for the test and returns its
// path (test/netnstest deletes it at cleanup).
func netnsAdd(t *testing.T, name string) string { return netnstest.Add(t, name).Path }

// TestAddRollsBackEveryStep injects a failure at each step of ADD and
// checks that nothing is left: no veth, no IP, no flows, no port, no
// reserved OpenFlow port number.
func TestAddRollsBackEveryStep(t *testing.T) {
	testroot.Require(t, "creates network namespaces and veths")
	tests := []struct {
		name     string
		portErr  error
		flowsErr error
		wantCode uint32
	}{
		{"OVS port fails", errors.New("injected: port failure"), nil, cniv1.CodeOVSFailure},
		{"flows fail", nil, errors.New("injected: flow failure"), cniv1.CodeOVSFailure},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			suffix := string(rune('a' + i))
			node := netnsAdd(t, "weir-rb-node-"+suffix)
			pod := netnsAdd(t, "weir-rb-pod-"+suffix)
			_, cidr, _ := net.ParseCIDR("10.77.0.0/24")
			alloc, err := ipam.New(cidr, &ipam.MemStore{})
			if err != nil {
				t.Fatal(err)
			}
			ports := &fakePorts{addErr: tc.portErr, ports: map[string]int{}}
			flows := &fakeFlows{addErr: tc.flowsErr, pods: map[string]bool{}}
			s := New(Config{Bridge: "br-int", MTU: 1450, HostNetNSPath: node}, ports, flows, alloc)
			s.SetReady(true)
			resp, err := s.CmdAdd(context.Background(), &cniv1.CniCmdRequest{CniArgs: &cniv1.CniCmdArgs{
				ContainerId: "c1", Ifname: "eth0", Netns: pod,
				NetworkConfiguration: []byte(`{"cniVersion":"1.0.0","name":"weir","type":"weir"}`)}})
			if err != nil || resp.Error == nil || resp.Error.Code != tc.wantCode || !strings.Contains(resp.Error.Details, "injected") {
				t.Fatalf("got %+v, %v; want error code %d with the cause", resp, err, tc.wantCode)
			}
			out, err := exec.Command("ip", "-n", "weir-rb-node-"+suffix, "-o", "link", "show", "type", "veth").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("veth left in the node netns: %s (%v)", out, err)
			}
			if l := alloc.List(); len(l) != 0 {
				t.Errorf("IPs left allocated: %v", l)
			}
			if len(flows.pods) != 0 || len(ports.ports) != 0 {
				t.Errorf("flows %v or ports %v left", flows.pods, ports.ports)
			}
			if r := s.ofports.Reserved(); len(r) != 0 {
				t.Errorf("OpenFlow port numbers left reserved: %v", r)
			}
			if s.Interfaces().Len() != 0 {
				t.Errorf("attachment recorded after a failed ADD")
			}
		})
	}
}
