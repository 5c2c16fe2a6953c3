package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

const (
	// defaultSocketPath is where the agent serves the CNI API unless the
	// network configuration says otherwise ("cniSocket").
	defaultSocketPath = "/var/run/weir/cni.sock"
	// timeoutEnv names the environment variable that overrides the deadline
	// of every forwarded call (a Go duration, e.g. "500ms").
	timeoutEnv = "WEIR_CNI_TIMEOUT"
)

// socketPathFromConfig returns the agent's CNI socket path for the network
// configuration conf (the raw stdin of the CNI call): its "cniSocket" string
// field if set and non-empty, else defaultSocketPath. No other field is read.
// The error is a *types.Error: CodeDecodingFailure if conf is not a JSON
// object, CodeInvalidNetworkConfig if "cniSocket" is not a string or not an
// absolute path.
func socketPathFromConfig(conf []byte) (string, error) {
	var c struct {
		CNISocket json.RawMessage `json:"cniSocket"`
	}
	if err := json.Unmarshal(conf, &c); err != nil {
		return "", types.NewError(cniv1.CodeDecodingFailure,
			"weir: cannot decode the network configuration", err.Error())
	}
	if len(c.CNISocket) == 0 || string(c.CNISocket) == "null" {
		return defaultSocketPath, nil
	}
	var path string
	if err := json.Unmarshal(c.CNISocket, &path); err != nil {
		return "", types.NewError(cniv1.CodeInvalidNetworkConfig,
			fmt.Sprintf("weir: invalid network configuration: \"cniSocket\" must be a string, got %s", c.CNISocket), "")
	}
	if path == "" {
		return defaultSocketPath, nil
	}
	if !filepath.IsAbs(path) {
		return "", types.NewError(cniv1.CodeInvalidNetworkConfig,
			fmt.Sprintf("weir: invalid network configuration: \"cniSocket\" must be an absolute path, got %q", path), "")
	}
	return path, nil
}

// callTimeout returns the deadline of a forwarded call: the value of
// WEIR_CNI_TIMEOUT if set, else def. The error is a *types.Error with
// CodeInvalidEnvironmentVariables if the variable is not a positive duration.
func callTimeout(getenv func(string) string, def time.Duration) (time.Duration, error) {
	s := getenv(timeoutEnv)
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, types.NewError(cniv1.CodeInvalidEnvironmentVariables,
			fmt.Sprintf("weir: invalid %s=%q: want a positive Go duration such as \"30s\"", timeoutEnv, s), "")
	}
	return d, nil
}
