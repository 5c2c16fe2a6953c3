package unixctl_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/unixctl"
	"github.com/weirnet/weir/test/ovstest"
)

// TestAgainstVswitchd calls a real ovs-vswitchd: version, ofproto/trace,
// and a bad command, each compared with what ovs-appctl prints.
func TestAgainstVswitchd(t *testing.T) {
	ovs := ovstest.Start(t)
	ovs.AddBridge(t, "br0")
	ovs.MustOfctl(t, "add-flow", "br0", "priority=10,ip,actions=drop")
	c := unixctl.New(ovs.Dir, "ovs-vswitchd")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "version", args: []string{"version"}},
		{name: "trace", args: []string{"ofproto/trace", "br0", "in_port=1,ip,nw_src=10.0.0.1,nw_dst=10.0.0.2"}},
		{name: "unknown command", args: []string{"no/such-command"}, wantErr: "is not a valid command"},
		{name: "bad bridge", args: []string{"ofproto/trace", "nobr", "in_port=1"}, wantErr: "unknown bridge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Call(ctx, tc.args[0], tc.args[1:]...)
			if tc.wantErr != "" {
				var ue *unixctl.Error
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Call(%v) = %q, %v; want *unixctl.Error containing %q", tc.args, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := ovs.MustAppctl(t, tc.args...)
			if strings.TrimSpace(got) != strings.TrimSpace(want) {
				t.Errorf("Call(%v) =\n%s\novs-appctl says\n%s", tc.args, got, want)
			}
		})
	}
}

// TestNoDaemon reports a missing pidfile as an error, without hanging.
func TestNoDaemon(t *testing.T) {
	c := unixctl.New(t.TempDir(), "ovs-vswitchd")
	if _, err := c.Call(context.Background(), "version"); err == nil || !strings.Contains(err.Error(), "pidfile") {
		t.Fatalf("Call without daemon: %v, want a pidfile error", err)
	}
}
