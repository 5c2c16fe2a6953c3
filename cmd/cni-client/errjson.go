package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/types"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

// errorJSON is the CNI error result (spec section "Error"). types.Error
// lacks "cniVersion", which the spec lists first.
type errorJSON struct {
	CNIVersion string `json:"cniVersion,omitempty"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details,omitempty"`
}

// requestVersion returns the "cniVersion" string of the network
// configuration on stdin, "" if there is none.
func requestVersion(stdin []byte) string {
	var c struct {
		CNIVersion any `json:"cniVersion"`
	}
	if json.Unmarshal(stdin, &c) != nil {
		return ""
	}
	v, _ := c.CNIVersion.(string)
	return v
}

// printError writes e as the CNI error JSON with the request's cniVersion.
func printError(w io.Writer, cniVersion string, e *types.Error) error {
	b, err := json.MarshalIndent(errorJSON{CNIVersion: cniVersion, Code: e.Code, Msg: e.Msg, Details: e.Details}, "", "    ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// preflight checks the CNI environment before anything is forwarded, with
// messages that name the variable (the CNI library's own checks say
// "interface name is too long" and do not catch "eth%d"). Commands without
// attachment parameters (VERSION, STATUS, GC) need none.
func preflight(getenv func(string) string) *types.Error {
	switch getenv("CNI_COMMAND") {
	case "ADD", "CHECK", "DEL":
	default:
		return nil
	}
	if err := cniv1.ValidateContainerID(getenv("CNI_CONTAINERID")); err != nil {
		return types.NewError(cniv1.CodeInvalidEnvironmentVariables, "weir: "+err.Error(), "")
	}
	if err := cniv1.ValidateIfName(getenv("CNI_IFNAME")); err != nil {
		return types.NewError(cniv1.CodeInvalidEnvironmentVariables, "weir: "+err.Error(), "")
	}
	return nil
}
