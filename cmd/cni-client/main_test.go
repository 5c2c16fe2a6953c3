package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

// pluginDir holds the weir binary that TestMain builds; it is the CNI plugin
// path of every test that runs the binary.
var pluginDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "weir-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	// `go test` puts its own go first in PATH.
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "weir"), ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: building the weir binary:", err)
		return 1
	}
	pluginDir = dir
	return m.Run()
}

// canned100Result is the agent's ADD result: a CNI 1.0.0 result as the real
// agent would produce it.
const canned100Result = `{
  "cniVersion": "1.0.0",
  "interfaces": [
    {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/weir-test"}
  ],
  "ips": [
    {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0}
  ],
  "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
  "dns": {}
}`

// call is one rpc the fake agent received.
type call struct {
	cmd  string
	args *cniv1.CniCmdArgs
}

// handlerFunc decides the fake agent's answer to one rpc.
type handlerFunc func(ctx context.Context, cmd string, args *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error)

// okHandler answers ADD with canned100Result and everything else with an
// empty success.
func okHandler(_ context.Context, cmd string, _ *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error) {
	if cmd == "ADD" {
		return &cniv1.CniCmdResponse{CniResult: []byte(canned100Result)}, nil
	}
	return &cniv1.CniCmdResponse{}, nil
}

// fakeAgent is an in-process CNI server standing in for the Weir agent.
type fakeAgent struct {
	cniv1.UnimplementedCniServer
	handle handlerFunc

	mu    sync.Mutex
	calls []call
}

func (a *fakeAgent) serve(ctx context.Context, cmd string, req *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	a.mu.Lock()
	a.calls = append(a.calls, call{cmd: cmd, args: req.GetCniArgs()})
	a.mu.Unlock()
	return a.handle(ctx, cmd, req.GetCniArgs())
}

func (a *fakeAgent) CmdAdd(ctx context.Context, req *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	return a.serve(ctx, "ADD", req)
}

func (a *fakeAgent) CmdCheck(ctx context.Context, req *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	return a.serve(ctx, "CHECK", req)
}

func (a *fakeAgent) CmdDel(ctx context.Context, req *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	return a.serve(ctx, "DEL", req)
}

func (a *fakeAgent) CmdStatus(ctx context.Context, req *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	return a.serve(ctx, "STATUS", req)
}

func (a *fakeAgent) CmdGC(ctx context.Context, req *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	return a.serve(ctx, "GC", req)
}

// received returns the rpcs received so far.
func (a *fakeAgent) received() []call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]call(nil), a.calls...)
}

// commands returns the names of the rpcs received so far, in order.
func (a *fakeAgent) commands() []string {
	var cmds []string
	for _, c := range a.received() {
		cmds = append(cmds, c.cmd)
	}
	return cmds
}

// socketDir returns a new short temporary directory for a unix socket (a
// socket path must fit in 108 bytes, which t.TempDir's may not).
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "weir-cni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// startAgent serves a fake agent with handle on a new unix socket and returns
// it and the socket path. handle nil means okHandler.
func startAgent(t *testing.T, handle handlerFunc) (*fakeAgent, string) {
	t.Helper()
	socket := filepath.Join(socketDir(t), "cni.sock")
	return startAgentAt(t, socket, handle), socket
}

// startAgentAt is startAgent on the given socket path.
func startAgentAt(t *testing.T, socket string, handle handlerFunc) *fakeAgent {
	t.Helper()
	if handle == nil {
		handle = okHandler
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	agent := &fakeAgent{handle: handle}
	srv := grpc.NewServer()
	cniv1.RegisterCniServer(srv, agent)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("fake agent: %v", err)
		}
	})
	return agent
}

// netConfList returns the network configuration list a runtime would load
// from /etc/cni/net.d, with one weir plugin using socket.
func netConfList(t *testing.T, cniVersion, socket string) *libcni.NetworkConfigList {
	t.Helper()
	conf := fmt.Sprintf(`{
  "cniVersion": %q,
  "name": "weir-test",
  "plugins": [{"type": "weir", "cniSocket": %q}]
}`, cniVersion, socket)
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		t.Fatalf("parsing the network configuration list: %v", err)
	}
	return list
}

// newCNI returns a libcni client that runs the built weir binary, with its own
// result cache, as a container runtime does.
func newCNI(t *testing.T) *libcni.CNIConfig {
	t.Helper()
	return libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, t.TempDir(), nil)
}

// runtimeConf describes one container attachment. The netns path is fake:
// the fake agent never enters it, and skel ignores a netns it cannot open.
func runtimeConf(containerID string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       "/var/run/netns/weir-test-" + containerID,
		IfName:      "eth0",
		Args:        [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web-0"}},
	}
}

// asCNIError returns the CNI error inside err, failing the test if there is
// none.
func asCNIError(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v (%T), want one wrapping a *types.Error", err, err)
	}
	return e
}
