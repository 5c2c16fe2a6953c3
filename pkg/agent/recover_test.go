package agent

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"
)

// TestNodeControllerInitialSyncAndResync checks that WaitForInitialSync
// returns only once every peer of the initial list is installed (one of
// them after failures), and that ResyncPeers re-creates lost routes and
// warms every peer's tunnel neighbour.
func TestNodeControllerInitialSyncAndResync(t *testing.T) {
	tests := []struct {
		name      string
		failAdd   map[string]int
		wantPeers []string
	}{
		{"all succeed", nil, []string{"b", "c"}},
		{"one retried", map[string]int{"c": 3}, []string{"b", "c"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(
				testNode("local", "10.60.0.0/24", "192.0.2.10"),
				testNode("b", "10.60.1.0/24", "192.0.2.11"),
				testNode("c", "10.60.2.0/24", "192.0.2.12"),
				testNode("d", "", "192.0.2.13"), // not a peer yet: must not block the sync
			)
			f := newFakeOverlay()
			for n, k := range tc.failAdd {
				f.failAdd[n] = k
			}
			nc, err := NewNodeController(NodeControllerConfig{Client: client, LocalNode: "local", Pipeline: f, Routes: f,
				GatewayName: "gw0", UnderlayBridge: "br-phy", Logger: ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))})
			if err != nil {
				t.Fatal(err)
			}
			// Not started: the wait ends with the context.
			short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancelShort()
			if err := nc.WaitForInitialSync(short); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("WaitForInitialSync before Run: %v", err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			defer background(ctx, nc.Run)() // stops it and waits
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			defer wcancel()
			if err := nc.WaitForInitialSync(wctx); err != nil {
				t.Fatal(err)
			}
			// Synced means installed: no peer is still on its way.
			if got := nc.Peers(); !slices.Equal(got, tc.wantPeers) {
				t.Fatalf("peers at initial sync %v, want %v", got, tc.wantPeers)
			}
			want := "peer b 10.60.1.0/24 192.0.2.11 10.60.1.1; peer c 10.60.2.0/24 192.0.2.12 10.60.2.1; " +
				"route 10.60.1.0/24 via 10.60.1.1 dev gw0; route 10.60.2.0/24 via 10.60.2.1 dev gw0"
			if got := f.state(); got != want {
				t.Fatalf("state at initial sync\n  %s\nwant\n  %s", got, want)
			}

			// The peers' first warm-ups run in the background: let them
			// finish, so only ResyncPeers' are counted below.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				f.mu.Lock()
				n := len(f.warmed)
				f.mu.Unlock()
				if n == len(tc.wantPeers) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d first warm-ups after 5 s, want %d", n, len(tc.wantPeers))
				}
			}
			// ovs-vswitchd restarted: the routes went with the gateway.
			f.mu.Lock()
			clear(f.routes)
			f.warmed = nil
			f.mu.Unlock()
			if err := nc.ResyncPeers(ctx); err != nil {
				t.Fatal(err)
			}
			if got := f.state(); got != want {
				t.Errorf("state after ResyncPeers\n  %s\nwant\n  %s", got, want)
			}
			f.mu.Lock()
			warmed := slices.Sorted(slices.Values(f.warmed))
			f.mu.Unlock()
			if !slices.Equal(warmed, []string{"br-phy/192.0.2.11", "br-phy/192.0.2.12"}) {
				t.Errorf("warmed %v", warmed)
			}
		})
	}
}
