package cniserver

import (
	"strings"
	"testing"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

func TestParseRequest(t *testing.T) {
	conf := func(v string) []byte { return []byte(`{"cniVersion":"` + v + `","name":"weir","type":"weir"}`) }
	netns := t.TempDir() // any existing absolute path stands in for a netns here
	tests := []struct {
		name     string
		args     *cniv1.CniCmdArgs
		needNS   bool
		wantCode uint32
		wantMsg  string
	}{
		{"ok", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: netns, NetworkConfiguration: conf("1.0.0"),
			Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"}, true, 0, ""},
		{"invalid json", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: netns, NetworkConfiguration: []byte("{")}, true,
			cniv1.CodeDecodingFailure, "not valid JSON"},
		{"no version", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: netns, NetworkConfiguration: []byte(`{"name":"x"}`)}, true,
			cniv1.CodeIncompatibleVersion, "no cniVersion"},
		{"old version", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: netns, NetworkConfiguration: conf("0.3.1")}, true,
			cniv1.CodeIncompatibleVersion, `cniVersion "0.3.1" is not supported`},
		{"missing container", &cniv1.CniCmdArgs{Ifname: "eth0", Netns: netns, NetworkConfiguration: conf("1.1.0")}, true,
			cniv1.CodeInvalidEnvironmentVariables, "CNI_CONTAINERID is missing"},
		{"missing netns", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", NetworkConfiguration: conf("1.1.0")}, true,
			cniv1.CodeInvalidEnvironmentVariables, "CNI_NETNS is missing"},
		{"relative netns", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: "x", NetworkConfiguration: conf("1.1.0")}, true,
			cniv1.CodeInvalidEnvironmentVariables, "absolute path"},
		{"netns gone", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: "/var/run/netns/does-not-exist-weir", NetworkConfiguration: conf("1.1.0")}, true,
			cniv1.CodeInvalidEnvironmentVariables, "does not exist"},
		{"netns gone is fine for DEL", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: "/var/run/netns/does-not-exist-weir", NetworkConfiguration: conf("1.1.0")}, false,
			0, ""},
		{"bad ifname", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0/../x", Netns: netns, NetworkConfiguration: conf("1.1.0")}, true,
			cniv1.CodeInvalidEnvironmentVariables, `CNI_IFNAME "eth0/../x" must not contain`},
		{"ifname template", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth%d", Netns: netns, NetworkConfiguration: conf("1.1.0")}, true,
			cniv1.CodeInvalidEnvironmentVariables, `CNI_IFNAME "eth%d" must not contain`},
		{"ifname too long", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0123456789abc", Netns: netns, NetworkConfiguration: conf("1.1.0")}, true,
			cniv1.CodeInvalidEnvironmentVariables, "is 16 bytes long"},
		{"bad container id", &cniv1.CniCmdArgs{ContainerId: "-c1", Ifname: "eth0", Netns: netns, NetworkConfiguration: conf("1.1.0")}, true,
			cniv1.CodeInvalidEnvironmentVariables, "CNI_CONTAINERID"},
		{"no network name", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: netns, NetworkConfiguration: []byte(`{"cniVersion":"1.1.0","type":"weir"}`)}, true,
			cniv1.CodeInvalidNetworkConfig, `no "name"`},
		{"bad args", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: netns, Args: "novalue", NetworkConfiguration: conf("1.1.0")}, true,
			cniv1.CodeInvalidEnvironmentVariables, "CNI_ARGS"},
		{"bad mtu", &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: netns, NetworkConfiguration: []byte(`{"cniVersion":"1.0.0","name":"weir","mtu":70000}`)}, true,
			cniv1.CodeInvalidNetworkConfig, "mtu 70000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, cerr := parseRequest("ADD", tc.args, true, tc.needNS)
			if tc.wantCode == 0 {
				if cerr != nil {
					t.Fatalf("unexpected error %v", cerr)
				}
				if r.key() != tc.args.ContainerId+"/"+tc.args.Ifname {
					t.Fatalf("key %q", r.key())
				}
				return
			}
			if cerr == nil || cerr.code != tc.wantCode || !strings.Contains(cerr.Error(), tc.wantMsg) {
				t.Fatalf("got %v (code %v), want code %d with %q", cerr, codeOf(cerr), tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func codeOf(e *cniError) any {
	if e == nil {
		return nil
	}
	return e.code
}

// FuzzParseRequest: parsing never panics, and whatever it accepts is
// well-formed.
func FuzzParseRequest(f *testing.F) {
	f.Add("c1", "eth0", "/proc/self/ns/net", "K8S_POD_NAME=a;K8S_POD_NAMESPACE=b", []byte(`{"cniVersion":"1.0.0","name":"weir","type":"weir","mtu":1400}`))
	f.Add("", "", "", "", []byte(`{`))
	f.Add("c/1", "eth0", "rel", "=;;", []byte(`{"cniVersion":"1.1.0","dns":{"nameservers":["1.1.1.1"]}}`))
	f.Add("c1", "e", "/", "a=b=c", []byte(`{"cniVersion":"0.4.0","prevResult":{"ips":[]}}`))
	f.Fuzz(func(t *testing.T, id, ifname, netns, args string, conf []byte) {
		r, cerr := parseRequest("ADD", &cniv1.CniCmdArgs{ContainerId: id, Ifname: ifname, Netns: netns, Args: args, NetworkConfiguration: conf}, true, true)
		if cerr != nil {
			if r != nil || cerr.code == 0 || cerr.msg == "" {
				t.Fatalf("error without code or message: %+v", cerr)
			}
			return
		}
		if r.containerID == "" || r.ifName == "" || len(r.ifName) > 15 || !supportedVersions[r.conf.CNIVersion] {
			t.Fatalf("accepted a malformed request: %+v", r)
		}
	})
}
