package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

func TestSocketPathFromConfig(t *testing.T) {
	tests := []struct {
		name     string
		conf     string
		want     string
		wantCode uint // 0: no error
	}{
		{name: "default", conf: `{"cniVersion":"1.0.0","name":"n","type":"weir"}`, want: defaultSocketPath},
		{name: "set", conf: `{"name":"n","cniSocket":"/run/weir/test.sock"}`, want: "/run/weir/test.sock"},
		{name: "empty is default", conf: `{"cniSocket":""}`, want: defaultSocketPath},
		{name: "null is default", conf: `{"cniSocket":null}`, want: defaultSocketPath},
		{name: "other fields ignored", conf: `{"cniSocket":"/s","ipam":{"type":42},"prevResult":[1]}`, want: "/s"},
		{name: "relative", conf: `{"cniSocket":"weir.sock"}`, wantCode: cniv1.CodeInvalidNetworkConfig},
		{name: "number", conf: `{"cniSocket":1}`, wantCode: cniv1.CodeInvalidNetworkConfig},
		{name: "object", conf: `{"cniSocket":{"path":"/s"}}`, wantCode: cniv1.CodeInvalidNetworkConfig},
		{name: "not JSON", conf: `{"cniSocket":`, wantCode: cniv1.CodeDecodingFailure},
		{name: "not an object", conf: `["/s"]`, wantCode: cniv1.CodeDecodingFailure},
		{name: "empty stdin", conf: ``, wantCode: cniv1.CodeDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := socketPathFromConfig([]byte(tt.conf))
			if tt.wantCode != 0 {
				var e *types.Error
				if !errors.As(err, &e) || e.Code != tt.wantCode {
					t.Fatalf("socketPathFromConfig(%s) = %q, %v; want CNI error %d", tt.conf, got, err, tt.wantCode)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("socketPathFromConfig(%s) = %q, %v; want %q", tt.conf, got, err, tt.want)
			}
		})
	}
}

func FuzzSocketPathFromConfig(f *testing.F) {
	for _, seed := range []string{
		`{"cniVersion":"1.1.0","name":"weir","type":"weir","cniSocket":"/var/run/weir/cni.sock"}`,
		`{"cniSocket":"relative"}`,
		`{"cniSocket":null}`,
		`{"cniSocket":["/a"]}`,
		`{"cniSocket":"\u0000/x"}`,
		`{"CNISOCKET":"/upper"}`,
		`[]`,
		`null`,
		``,
		`{"cniSocket":"/a","cniSocket":"/b"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, conf []byte) {
		path, err := socketPathFromConfig(conf)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || (e.Code != cniv1.CodeDecodingFailure && e.Code != cniv1.CodeInvalidNetworkConfig) {
				t.Fatalf("error %v is not a CNI decoding or config error", err)
			}
			return
		}
		if !filepath.IsAbs(path) {
			t.Fatalf("path %q is not absolute", path)
		}
	})
}

func TestCallTimeout(t *testing.T) {
	tests := []struct {
		env      string
		want     time.Duration
		wantCode uint
	}{
		{env: "", want: defaultCmdTimeout},
		{env: "250ms", want: 250 * time.Millisecond},
		{env: "1m30s", want: 90 * time.Second},
		{env: "0s", wantCode: cniv1.CodeInvalidEnvironmentVariables},
		{env: "-1s", wantCode: cniv1.CodeInvalidEnvironmentVariables},
		{env: "10", wantCode: cniv1.CodeInvalidEnvironmentVariables},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.env), func(t *testing.T) {
			getenv := func(k string) string {
				if k == timeoutEnv {
					return tt.env
				}
				return ""
			}
			got, err := callTimeout(getenv, defaultCmdTimeout)
			if tt.wantCode != 0 {
				var e *types.Error
				if !errors.As(err, &e) || e.Code != tt.wantCode || !strings.Contains(e.Msg, timeoutEnv) {
					t.Fatalf("callTimeout(%q) = %v, %v; want CNI error %d naming %s", tt.env, got, err, tt.wantCode, timeoutEnv)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("callTimeout(%q) = %v, %v; want %v", tt.env, got, err, tt.want)
			}
		})
	}
}

func TestRPCError(t *testing.T) {
	const socket = "/var/run/weir/cni.sock"
	cmd := command{name: "DEL", timeout: 2 * time.Minute}
	tests := []struct {
		name     string
		err      error
		wantCode uint
		wantMsg  string
	}{
		{
			name:     "unavailable",
			err:      status.Error(codes.Unavailable, "connection error: dial unix /var/run/weir/cni.sock: connect: no such file or directory"),
			wantCode: cniv1.CodeTryAgainLater,
			wantMsg:  "weir: cannot reach the Weir agent at /var/run/weir/cni.sock (is the ovs-agent pod running?): connection error: dial unix /var/run/weir/cni.sock: connect: no such file or directory",
		},
		{
			name:     "deadline status",
			err:      status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
			wantCode: cniv1.CodeTryAgainLater,
			wantMsg:  "weir: the Weir agent at /var/run/weir/cni.sock did not answer DEL within 2m0s (is the ovs-agent pod overloaded or stuck?)",
		},
		{
			name:     "deadline context error",
			err:      fmt.Errorf("calling: %w", context.DeadlineExceeded),
			wantCode: cniv1.CodeTryAgainLater,
			wantMsg:  "weir: the Weir agent at /var/run/weir/cni.sock did not answer DEL within 2m0s (is the ovs-agent pod overloaded or stuck?)",
		},
		{
			name:     "unimplemented",
			err:      status.Error(codes.Unimplemented, "unknown method CmdGC"),
			wantCode: cniv1.CodeInternal,
			wantMsg:  "weir: the Weir agent at /var/run/weir/cni.sock failed DEL: unknown method CmdGC",
		},
		{
			name:     "not a status",
			err:      errors.New("broken pipe"),
			wantCode: cniv1.CodeInternal,
			wantMsg:  "weir: the Weir agent at /var/run/weir/cni.sock failed DEL: broken pipe",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := rpcError(cmd, socket, cmd.timeout, tt.err)
			if e.Code != tt.wantCode || e.Msg != tt.wantMsg {
				t.Errorf("rpcError(%v) = %d %q, want %d %q", tt.err, e.Code, e.Msg, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestAgentError(t *testing.T) {
	tests := []struct {
		in   *cniv1.Error
		want types.Error
	}{
		{in: cniv1.NewError(cniv1.CodeIPAMExhausted, "m", "d"), want: types.Error{Code: cniv1.CodeIPAMExhausted, Msg: "m", Details: "d"}},
		{in: cniv1.NewError(cniv1.CodeUnknownContainer, "gone", ""), want: types.Error{Code: cniv1.CodeUnknownContainer, Msg: "gone"}},
		{in: cniv1.NewError(0, "zero", ""), want: types.Error{Code: cniv1.CodeInternal, Msg: "zero"}},
		{in: cniv1.NewError(4242, "big", ""), want: types.Error{Code: 4242, Msg: "big"}},
	}
	for _, tt := range tests {
		if got := agentError(tt.in); *got != tt.want {
			t.Errorf("agentError(%v) = %+v, want %+v", tt.in, *got, tt.want)
		}
	}
}
