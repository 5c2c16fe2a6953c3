package cniserver

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

// supportedVersions are the CNI spec versions the server answers in.
var supportedVersions = map[string]bool{"0.4.0": true, "1.0.0": true, "1.1.0": true}

// netConf is the network configuration the runtime passes on stdin.
type netConf struct {
	types.PluginConf
	// MTU overrides the agent's pod MTU for this network (optional).
	MTU int `json:"mtu,omitempty"`
	// CNISocket is read by the CNI binary only.
	CNISocket string `json:"cniSocket,omitempty"`
}

// request is a validated CNI request.
type request struct {
	cmd         string
	containerID string
	netns       string
	ifName      string
	args        map[string]string // CNI_ARGS, e.g. K8S_POD_NAMESPACE
	conf        netConf
}

// key identifies the attachment (one interface of one container).
func (r *request) key() string { return r.containerID + "/" + r.ifName }

// cniError is a CNI error to return to the runtime.
type cniError struct {
	code    uint32
	msg     string
	details string
}

func (e *cniError) Error() string {
	if e.details != "" {
		return fmt.Sprintf("%s: %s", e.msg, e.details)
	}
	return e.msg
}

func errorf(code uint32, format string, args ...any) *cniError {
	return &cniError{code: code, msg: fmt.Sprintf(format, args...)}
}

func withDetails(code uint32, msg string, err error) *cniError {
	return &cniError{code: code, msg: msg, details: err.Error()}
}

// parseRequest validates a CNI call's arguments. needNetNS is false for DEL
// (the netns may be gone) and GC/STATUS (there is none).
func parseRequest(cmd string, a *cniv1.CniCmdArgs, needContainer, needNetNS bool) (*request, *cniError) {
	if a == nil {
		return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: empty CNI request")
	}
	r := &request{cmd: cmd, containerID: a.ContainerId, netns: a.Netns, ifName: a.Ifname}
	if err := json.Unmarshal(a.NetworkConfiguration, &r.conf); err != nil {
		return nil, withDetails(cniv1.CodeDecodingFailure, "weir: network configuration is not valid JSON", err)
	}
	if r.conf.CNIVersion == "" {
		return nil, errorf(cniv1.CodeIncompatibleVersion, "weir: network configuration has no cniVersion (supported: 0.4.0, 1.0.0, 1.1.0)")
	}
	if !supportedVersions[r.conf.CNIVersion] {
		return nil, errorf(cniv1.CodeIncompatibleVersion, "weir: cniVersion %q is not supported (supported: 0.4.0, 1.0.0, 1.1.0)", r.conf.CNIVersion)
	}
	if r.conf.MTU != 0 && (r.conf.MTU < 576 || r.conf.MTU > 9000) {
		return nil, errorf(cniv1.CodeInvalidNetworkConfig, "weir: mtu %d in the network configuration is out of range 576-9000", r.conf.MTU)
	}
	if !needContainer {
		return r, nil
	}
	if r.containerID == "" {
		return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_CONTAINERID is missing")
	}
	if strings.ContainsAny(r.containerID, "/\x00") || len(r.containerID) > 256 {
		return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_CONTAINERID %q is not a valid container ID", r.containerID)
	}
	if r.ifName == "" {
		return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_IFNAME is missing")
	}
	if len(r.ifName) > 15 || strings.ContainsAny(r.ifName, "/: \t\n\x00") || r.ifName == "." || r.ifName == ".." {
		return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_IFNAME %q is not a valid interface name", r.ifName)
	}
	args, err := parseCNIArgs(a.Args)
	if err != nil {
		return nil, withDetails(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_ARGS is malformed", err)
	}
	r.args = args
	if needNetNS {
		if r.netns == "" {
			return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_NETNS is missing")
		}
		if !filepath.IsAbs(r.netns) {
			return nil, errorf(cniv1.CodeInvalidEnvironmentVariables, "weir: CNI_NETNS %q must be an absolute path", r.netns)
		}
		if _, err := os.Stat(r.netns); err != nil {
			return nil, withDetails(cniv1.CodeInvalidEnvironmentVariables, fmt.Sprintf("weir: CNI_NETNS %s does not exist", r.netns), err)
		}
	}
	return r, nil
}

// parseCNIArgs parses "K1=V1;K2=V2".
func parseCNIArgs(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}
