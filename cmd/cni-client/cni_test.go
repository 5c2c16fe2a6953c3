package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

// These tests run the real weir binary through libcni, as a container runtime
// does, against a fake agent.

func TestAddCheckDel(t *testing.T) {
	for _, v := range []string{"1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			agent, socket := startAgent(t, nil)
			cni, list, rt := newCNI(t), netConfList(t, v, socket), runtimeConf("c0ffee01")

			res, err := cni.AddNetworkList(ctx, list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			got, err := types100.NewResultFromResult(res)
			if err != nil {
				t.Fatalf("ADD result %v: %v", res, err)
			}
			if len(got.IPs) != 1 || got.IPs[0].Address.String() != "10.244.1.5/24" || got.IPs[0].Gateway.String() != "10.244.1.1" {
				t.Errorf("ADD result IPs = %+v, want 10.244.1.5/24 via 10.244.1.1", got.IPs)
			}
			if len(got.Interfaces) != 1 || got.Interfaces[0].Mac != "0a:58:0a:f4:01:05" {
				t.Errorf("ADD result interfaces = %+v", got.Interfaces)
			}

			if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if err := cni.DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}

			calls := agent.received()
			if cmds := agent.commands(); !slices.Equal(cmds, []string{"ADD", "CHECK", "DEL"}) {
				t.Fatalf("agent received %v, want [ADD CHECK DEL]", cmds)
			}
			for _, c := range calls {
				a := c.args
				if a.GetContainerId() != rt.ContainerID || a.GetNetns() != rt.NetNS || a.GetIfname() != "eth0" {
					t.Errorf("%s: container=%q netns=%q ifname=%q, want %q %q eth0",
						c.cmd, a.GetContainerId(), a.GetNetns(), a.GetIfname(), rt.ContainerID, rt.NetNS)
				}
				if a.GetArgs() != "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0" {
					t.Errorf("%s: CNI_ARGS = %q", c.cmd, a.GetArgs())
				}
				if a.GetPath() != pluginDir {
					t.Errorf("%s: CNI_PATH = %q, want %q", c.cmd, a.GetPath(), pluginDir)
				}
				conf := decodeConf(t, a.GetNetworkConfiguration())
				if conf["cniVersion"] != v || conf["name"] != "weir-test" || conf["type"] != "weir" || conf["cniSocket"] != socket {
					t.Errorf("%s: network configuration %v lacks the runtime's fields", c.cmd, conf)
				}
				// The runtime passes ADD's result as prevResult to CHECK and DEL.
				if _, ok := conf["prevResult"]; ok != (c.cmd != "ADD") {
					t.Errorf("%s: prevResult present = %v, want %v", c.cmd, ok, c.cmd != "ADD")
				}
			}
		})
	}
}

func decodeConf(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var conf map[string]any
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatalf("network configuration %q: %v", raw, err)
	}
	return conf
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name       string
		cniVersion string
		agentErr   *cniv1.Error // the agent's answer; nil is "ready"
		wantCode   uint         // 0: STATUS succeeds
		wantCalls  int
	}{
		{name: "ready", cniVersion: "1.1.0", wantCalls: 1},
		{
			name: "not available", cniVersion: "1.1.0", wantCode: cniv1.CodePluginNotAvailable, wantCalls: 1,
			agentErr: cniv1.NewError(cniv1.CodePluginNotAvailable, "weir: the agent is not ready: OVS bridge br-int not found", ""),
		},
		{
			name: "limited connectivity", cniVersion: "1.1.0", wantCode: cniv1.CodeLimitedConnectivity, wantCalls: 1,
			agentErr: cniv1.NewError(cniv1.CodeLimitedConnectivity, "weir: lost the connection to ovs-vswitchd", "flows may be stale"),
		},
		// STATUS is a CNI 1.1 command: libcni does not ask older plugins.
		{name: "1.0.0 not asked", cniVersion: "1.0.0", wantCalls: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			agent, socket := startAgent(t, func(context.Context, string, *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error) {
				return &cniv1.CniCmdResponse{Error: tt.agentErr}, nil
			})
			err := newCNI(t).GetStatusNetworkList(context.Background(), netConfList(t, tt.cniVersion, socket))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("STATUS: %v", err)
				}
			} else {
				e := asCNIError(t, err)
				if e.Code != tt.wantCode || e.Msg != tt.agentErr.GetMessage() || e.Details != tt.agentErr.GetDetails() {
					t.Errorf("STATUS error = %+v, want the agent's %+v", e, tt.agentErr)
				}
			}
			if n := len(agent.received()); n != tt.wantCalls {
				t.Errorf("agent received %d calls, want %d", n, tt.wantCalls)
			}
			for _, c := range agent.received() {
				if c.cmd != "STATUS" || c.args.GetContainerId() != "" {
					t.Errorf("agent received %s for container %q, want STATUS with no container", c.cmd, c.args.GetContainerId())
				}
			}
		})
	}
}

func TestGC(t *testing.T) {
	tests := []struct {
		cniVersion string
		want       []string // rpcs the agent receives during GC
	}{
		// libcni DELs the cached attachment that is not valid any more, then
		// (CNI 1.1 only) sends GC with the valid attachments.
		{cniVersion: "1.1.0", want: []string{"DEL", "GC"}},
		{cniVersion: "1.0.0", want: []string{"DEL"}},
	}
	for _, tt := range tests {
		t.Run(tt.cniVersion, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			agent, socket := startAgent(t, nil)
			cni, list := newCNI(t), netConfList(t, tt.cniVersion, socket)
			if _, err := cni.AddNetworkList(ctx, list, runtimeConf("5ta1e")); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			valid := []types.GCAttachment{{ContainerID: "a1ive", IfName: "eth0"}}
			if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
				t.Fatalf("GC: %v", err)
			}

			calls := agent.received()[1:] // after ADD
			if cmds := agent.commands()[1:]; !slices.Equal(cmds, tt.want) {
				t.Fatalf("agent received %v during GC, want %v", cmds, tt.want)
			}
			if got := calls[0].args.GetContainerId(); got != "5ta1e" {
				t.Errorf("DEL of container %q, want the stale 5ta1e", got)
			}
			if len(calls) < 2 {
				return
			}
			conf := decodeConf(t, calls[1].args.GetNetworkConfiguration())
			attachments, _ := json.Marshal(conf["cni.dev/valid-attachments"])
			if want := `[{"containerID":"a1ive","ifname":"eth0"}]`; string(attachments) != want {
				t.Errorf("GC valid attachments = %s, want %s", attachments, want)
			}
		})
	}
}

// TestSocketPathNeedsNoEscaping: a socket path is a path, not a URL.
func TestSocketPathNeedsNoEscaping(t *testing.T) {
	t.Parallel()
	socket := filepath.Join(socketDir(t), "a%zz?b#c d.sock")
	agent := startAgentAt(t, socket, nil)
	if _, err := newCNI(t).AddNetworkList(context.Background(), netConfList(t, "1.0.0", socket), runtimeConf("c0ffee06")); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if cmds := agent.commands(); !slices.Equal(cmds, []string{"ADD"}) {
		t.Errorf("agent received %v, want [ADD]", cmds)
	}
}

func TestVersionNeedsNoAgent(t *testing.T) {
	t.Parallel()
	info, err := newCNI(t).GetVersionInfo(context.Background(), "weir")
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	if got, want := info.SupportedVersions(), []string{"0.4.0", "1.0.0", "1.1.0"}; !slices.Equal(got, want) {
		t.Errorf("supported versions = %v, want %v", got, want)
	}
}

func TestErrors(t *testing.T) {
	// stale is a socket file nobody listens on, as a crashed agent leaves it.
	stale := filepath.Join(socketDir(t), "cni.sock")
	lis, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		socket   string       // "" starts a fake agent with handle
		conf     string       // plugin configuration; "" is the usual one
		handle   handlerFunc  // the agent's answer
		wantCode uint         // CNI error code of ADD
		wantMsg  []string     // substrings of the error message
		wantErr  *cniv1.Error // if set, the exact error
		noCall   bool         // the agent must not be asked
	}{
		{
			name:     "agent not running",
			socket:   "/nonexistent/weir/cni.sock",
			wantCode: cniv1.CodeTryAgainLater,
			wantMsg:  []string{"weir: cannot reach the Weir agent at /nonexistent/weir/cni.sock (is the ovs-agent pod running?): connect: no such file or directory"},
		},
		{
			name:     "stale socket",
			socket:   stale,
			wantCode: cniv1.CodeTryAgainLater,
			wantMsg:  []string{"weir: cannot reach the Weir agent at " + stale + " (is the ovs-agent pod running?): connect: connection refused"},
		},
		{
			name: "agent CNI error passed verbatim",
			handle: func(context.Context, string, *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error) {
				return cniv1.NewErrorResponse(cniv1.CodeIPAMExhausted, "weir: no IP address left in pod CIDR 10.244.1.0/24", "254 of 254 in use"), nil
			},
			wantCode: cniv1.CodeIPAMExhausted,
			wantErr:  cniv1.NewError(cniv1.CodeIPAMExhausted, "weir: no IP address left in pod CIDR 10.244.1.0/24", "254 of 254 in use"),
		},
		{
			name: "agent error code 0 becomes internal",
			handle: func(context.Context, string, *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error) {
				return cniv1.NewErrorResponse(0, "oops", ""), nil
			},
			wantCode: cniv1.CodeInternal,
			wantMsg:  []string{"oops"},
		},
		{
			name: "gRPC error",
			handle: func(context.Context, string, *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error) {
				return nil, status.Error(codes.Internal, "boom")
			},
			wantCode: cniv1.CodeInternal,
			wantMsg:  []string{"weir: the Weir agent at ", " failed ADD: boom"},
		},
		{
			name: "agent unavailable",
			handle: func(context.Context, string, *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error) {
				return nil, status.Error(codes.Unavailable, "shutting down")
			},
			wantCode: cniv1.CodeTryAgainLater,
			wantMsg:  []string{"cannot reach the Weir agent", "shutting down"},
		},
		{
			name: "empty ADD result",
			handle: func(context.Context, string, *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error) {
				return &cniv1.CniCmdResponse{}, nil
			},
			wantCode: cniv1.CodeInternal,
			wantMsg:  []string{"returned an empty result for ADD"},
		},
		{
			name:     "relative cniSocket",
			conf:     `{"type": "weir", "cniSocket": "run/cni.sock"}`,
			wantCode: cniv1.CodeInvalidNetworkConfig,
			wantMsg:  []string{`"cniSocket" must be an absolute path, got "run/cni.sock"`},
			noCall:   true,
		},
		{
			name:     "cniSocket not a string",
			conf:     `{"type": "weir", "cniSocket": 42}`,
			wantCode: cniv1.CodeInvalidNetworkConfig,
			wantMsg:  []string{`"cniSocket" must be a string, got 42`},
			noCall:   true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			socket, agent := tt.socket, (*fakeAgent)(nil)
			if socket == "" {
				agent, socket = startAgent(t, tt.handle)
			}
			list := netConfList(t, "1.0.0", socket)
			if tt.conf != "" {
				plugin, err := libcni.NetworkPluginConfFromBytes([]byte(tt.conf))
				if err != nil {
					t.Fatal(err)
				}
				list.Plugins = []*libcni.PluginConfig{plugin}
			}

			_, err := newCNI(t).AddNetworkList(context.Background(), list, runtimeConf("c0ffee02"))
			e := asCNIError(t, err)
			if e.Code != tt.wantCode {
				t.Errorf("ADD error code = %d (%v), want %d", e.Code, e, tt.wantCode)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(e.Msg, s) {
					t.Errorf("ADD error message %q lacks %q", e.Msg, s)
				}
			}
			if w := tt.wantErr; w != nil && (e.Msg != w.GetMessage() || e.Details != w.GetDetails()) {
				t.Errorf("ADD error = %+v, want the agent's %+v", e, w)
			}
			if agent != nil && tt.noCall && len(agent.received()) != 0 {
				t.Errorf("agent received %v, want no call", agent.commands())
			}
		})
	}
}

func TestUnsupportedVersion(t *testing.T) {
	for _, v := range []string{"0.3.1", "9.9.9"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			agent, socket := startAgent(t, nil)
			cni, list, rt := newCNI(t), netConfList(t, v, socket), runtimeConf("c0ffee03")
			for name, run := range map[string]func() error{
				"ADD": func() error { _, err := cni.AddNetworkList(context.Background(), list, rt); return err },
				"DEL": func() error { return cni.DelNetworkList(context.Background(), list, rt) },
			} {
				e := asCNIError(t, run())
				if e.Code != cniv1.CodeIncompatibleVersion || !strings.Contains(e.Details, v) {
					t.Errorf("%s: error = %+v, want code %d naming version %s", name, e, cniv1.CodeIncompatibleVersion, v)
				}
			}
			if cmds := agent.commands(); len(cmds) != 0 {
				t.Errorf("agent received %v, want no call", cmds)
			}
		})
	}
}

// TestTimeout sets WEIR_CNI_TIMEOUT in the environment libcni passes to the
// binary, so it cannot run in parallel with other tests.
func TestTimeout(t *testing.T) {
	hang := func(ctx context.Context, _ string, _ *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	tests := []struct {
		name       string
		env        string
		wantCode   uint
		statusCode uint // STATUS's code, if not wantCode
		wantMsg    string
	}{
		{
			// An agent that does not answer STATUS cannot serve ADD: 50.
			name: "agent hangs", env: "300ms", wantCode: cniv1.CodeTryAgainLater, statusCode: cniv1.CodePluginNotAvailable,
			wantMsg: "did not answer %s within 300ms (is the ovs-agent pod overloaded or stuck?)",
		},
		{
			name: "invalid override", env: "soon", wantCode: cniv1.CodeInvalidEnvironmentVariables,
			wantMsg: `invalid WEIR_CNI_TIMEOUT="soon"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(timeoutEnv, tt.env)
			_, socket := startAgent(t, hang)
			cni, list := newCNI(t), netConfList(t, "1.1.0", socket)
			for cmd, run := range map[string]func() error{
				"ADD": func() error {
					_, err := cni.AddNetworkList(context.Background(), list, runtimeConf("c0ffee04"))
					return err
				},
				"STATUS": func() error { return cni.GetStatusNetworkList(context.Background(), list) },
			} {
				start := time.Now()
				e := asCNIError(t, run())
				want := tt.wantCode
				if cmd == "STATUS" && tt.statusCode != 0 {
					want = tt.statusCode
				}
				if e.Code != want || !strings.Contains(e.Msg, strings.ReplaceAll(tt.wantMsg, "%s", cmd)) {
					t.Errorf("%s: error = %+v, want code %d and %q", cmd, e, want, tt.wantMsg)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("%s took %v despite %s=%s", cmd, d, timeoutEnv, tt.env)
				}
			}
		})
	}
}

// TestStdoutVerbatim checks that the result reaches stdout byte for byte.
func TestStdoutVerbatim(t *testing.T) {
	t.Parallel()
	_, socket := startAgent(t, nil)
	var out bytes.Buffer
	p := &plugin{stdout: &out, getenv: func(string) string { return "" }}
	conf := []byte(`{"cniVersion":"1.0.0","name":"weir-test","type":"weir","cniSocket":"` + socket + `"}`)
	args := &skel.CmdArgs{ContainerID: "c0ffee05", Netns: "/var/run/netns/x", IfName: "eth0", StdinData: conf}
	if err := p.cmdAdd(args); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if out.String() != canned100Result {
		t.Errorf("stdout = %q, want the agent's result verbatim", out.String())
	}
}

// TestUnreachableAgent: without an agent, ADD, DEL and CHECK say "try again
// later" (11) and STATUS "plugin not available" (50), the STATUS code for a
// plugin that cannot serve ADD.
func TestUnreachableAgent(t *testing.T) {
	t.Parallel()
	socket := filepath.Join(socketDir(t), "cni.sock") // nothing listens
	cni, list, rt := newCNI(t), netConfList(t, "1.1.0", socket), runtimeConf("c0ffee07")
	tests := []struct {
		cmd      string
		run      func() error
		wantCode uint
	}{
		{"STATUS", func() error { return cni.GetStatusNetworkList(context.Background(), list) }, cniv1.CodePluginNotAvailable},
		{"ADD", func() error { _, err := cni.AddNetworkList(context.Background(), list, rt); return err }, cniv1.CodeTryAgainLater},
		{"DEL", func() error { return cni.DelNetworkList(context.Background(), list, rt) }, cniv1.CodeTryAgainLater},
	}
	for _, tt := range tests {
		e := asCNIError(t, tt.run())
		if e.Code != tt.wantCode || !strings.Contains(e.Msg, "cannot reach the Weir agent at "+socket) {
			t.Errorf("%s: error = %+v, want code %d saying the agent cannot be reached", tt.cmd, e, tt.wantCode)
		}
	}
}

// TestErrorJSON runs the binary as a runtime does and reads the error JSON
// it prints: it carries the request's cniVersion, whoever found the error
// (the binary's own checks, the CNI library's, or the agent), and an
// invalid CNI_IFNAME is code 4 naming the variable before anything is
// forwarded.
func TestErrorJSON(t *testing.T) {
	t.Parallel()
	agent, socket := startAgent(t, func(context.Context, string, *cniv1.CniCmdArgs) (*cniv1.CniCmdResponse, error) {
		return cniv1.NewErrorResponse(cniv1.CodeIPAMExhausted, "weir: no IP address left", ""), nil
	})
	conf := func(v string) string {
		return `{"cniVersion":"` + v + `","name":"weir-test","type":"weir","cniSocket":"` + socket + `"}`
	}
	tests := []struct {
		name     string
		env      map[string]string // over the defaults; "" removes
		stdin    string
		wantVer  string
		wantCode uint
		wantMsg  string
		forwards bool // the agent is asked
	}{
		{name: "agent error", stdin: conf("1.1.0"), wantVer: "1.1.0", wantCode: cniv1.CodeIPAMExhausted, wantMsg: "no IP address left", forwards: true},
		{name: "agent error 1.0.0", stdin: conf("1.0.0"), wantVer: "1.0.0", wantCode: cniv1.CodeIPAMExhausted, wantMsg: "no IP address left", forwards: true},
		{name: "ifname template", env: map[string]string{"CNI_IFNAME": "eth%d"}, stdin: conf("1.1.0"), wantVer: "1.1.0",
			wantCode: cniv1.CodeInvalidEnvironmentVariables, wantMsg: `weir: CNI_IFNAME "eth%d" must not contain`},
		{name: "ifname too long", env: map[string]string{"CNI_IFNAME": "eth0123456789abc"}, stdin: conf("1.0.0"), wantVer: "1.0.0",
			wantCode: cniv1.CodeInvalidEnvironmentVariables, wantMsg: `CNI_IFNAME "eth0123456789abc" is 16 bytes long`},
		{name: "ifname with slash", env: map[string]string{"CNI_IFNAME": "a/b"}, stdin: conf("1.1.0"), wantVer: "1.1.0",
			wantCode: cniv1.CodeInvalidEnvironmentVariables, wantMsg: `CNI_IFNAME "a/b" must not contain`},
		{name: "ifname missing", env: map[string]string{"CNI_IFNAME": ""}, stdin: conf("1.1.0"), wantVer: "1.1.0",
			wantCode: cniv1.CodeInvalidEnvironmentVariables, wantMsg: "CNI_IFNAME is missing"},
		{name: "ifname invalid on DEL", env: map[string]string{"CNI_COMMAND": "DEL", "CNI_IFNAME": "eth%d"}, stdin: conf("1.1.0"),
			wantVer: "1.1.0", wantCode: cniv1.CodeInvalidEnvironmentVariables, wantMsg: "CNI_IFNAME"},
		{name: "container id invalid", env: map[string]string{"CNI_CONTAINERID": "-x"}, stdin: conf("1.1.0"), wantVer: "1.1.0",
			wantCode: cniv1.CodeInvalidEnvironmentVariables, wantMsg: "CNI_CONTAINERID"},
		{name: "version skel rejects", stdin: conf("0.3.1"), wantVer: "0.3.1", wantCode: cniv1.CodeIncompatibleVersion, wantMsg: "incompatible CNI versions"},
		{name: "not JSON", stdin: `{`, wantVer: "", wantCode: cniv1.CodeDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee08", "CNI_NETNS": "/var/run/netns/weir-test-x",
				"CNI_IFNAME": "eth0", "CNI_PATH": pluginDir}
			for k, v := range tt.env {
				env[k] = v
			}
			cmd := exec.Command(filepath.Join(pluginDir, "weir"))
			for k, v := range env {
				if v != "" {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
			cmd.Stdin = strings.NewReader(tt.stdin)
			before := len(agent.received())
			out, err := cmd.Output()
			if err == nil {
				t.Fatalf("exit status 0, want failure; stdout %s", out)
			}
			var e struct {
				CNIVersion *string `json:"cniVersion"`
				Code       uint    `json:"code"`
				Msg        string  `json:"msg"`
			}
			if jerr := json.Unmarshal(out, &e); jerr != nil {
				t.Fatalf("stdout is not the error JSON: %q", out)
			}
			if tt.wantVer == "" && e.CNIVersion != nil || tt.wantVer != "" && (e.CNIVersion == nil || *e.CNIVersion != tt.wantVer) {
				t.Errorf("cniVersion in %s, want %q", out, tt.wantVer)
			}
			if e.Code != tt.wantCode || !strings.Contains(e.Msg, tt.wantMsg) {
				t.Errorf("error %s, want code %d with %q", out, tt.wantCode, tt.wantMsg)
			}
			// The subtests run one after another against this test's own
			// agent, so a new call is this subtest's.
			if asked := len(agent.received()) > before; asked != tt.forwards {
				t.Errorf("agent asked = %v, want %v", asked, tt.forwards)
			}
		})
	}
}
