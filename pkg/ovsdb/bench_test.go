package ovsdb_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ovsdb"
)

// BenchmarkAddDeletePort measures one port's life cycle against a real
// ovsdb-server and ovs-vswitchd (userspace datapath): the add transaction
// including the wait for ovs-vswitchd to assign the ofport (ms/add), the
// delete transaction (ms/delete), and the wait until ovs-vswitchd has
// detached the port (ms/detach, WaitApplied; DeletePort does not wait for
// it). Without the detach wait, ovs-vswitchd's work for the previous delete
// would be counted in the next add.
//
//	make bench BENCH_PKG=./pkg/ovsdb/ BENCH=AddDeletePort
func BenchmarkAddDeletePort(b *testing.B) {
	in, c := startNode(b)
	ensureNetdevBridge(b, c, "br-int")
	addVeth(b, in, "vbench")
	ctx := context.Background()
	ids := map[string]string{
		ovsdb.KeyWeirType:              ovsdb.WeirTypePod,
		interfacestore.KeyPodNamespace: "default",
		interfacestore.KeyPodName:      "bench",
		interfacestore.KeyContainerID:  "0123456789abcdef",
	}

	cases := []struct {
		name string
		add  func() (int, error)
		port string
	}{
		{"veth", func() (int, error) {
			return c.AddPort(ctx, "br-int", "vbench", ovsdb.PortOptions{ExternalIDs: ids})
		}, "vbench"},
		{"internal", func() (int, error) {
			return c.EnsureInternalPort(ctx, "br-int", "ibench", ovsdb.PortOptions{ExternalIDs: ids})
		}, "ibench"},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var add, del, detach time.Duration
			n := 0
			for b.Loop() {
				t0 := time.Now()
				if ofport, err := tc.add(); err != nil || ofport <= 0 {
					b.Fatalf("add port %s = %d, %v", tc.port, ofport, err)
				}
				t1 := time.Now()
				if err := c.DeletePort(ctx, "br-int", tc.port); err != nil {
					b.Fatalf("DeletePort(%s): %v", tc.port, err)
				}
				t2 := time.Now()
				if err := c.WaitApplied(ctx); err != nil {
					b.Fatalf("WaitApplied: %v", err)
				}
				add += t1.Sub(t0)
				del += t2.Sub(t1)
				detach += time.Since(t2)
				n++
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
			b.ReportMetric(ms(add), "ms/add")
			b.ReportMetric(ms(del), "ms/delete")
			b.ReportMetric(ms(detach), "ms/detach")
		})
	}

	// One transaction without waiting for ovs-vswitchd: the OVSDB round
	// trip alone.
	b.Run("set-external-ids", func(b *testing.B) {
		if _, err := c.AddPort(ctx, "br-int", "vbench", ovsdb.PortOptions{ExternalIDs: ids}); err != nil {
			b.Fatalf("AddPort: %v", err)
		}
		i := 0
		for b.Loop() {
			i++
			if err := c.SetPortExternalIDs(ctx, "br-int", "vbench", map[string]string{"n": strconv.Itoa(i)}); err != nil {
				b.Fatalf("SetPortExternalIDs: %v", err)
			}
		}
	})
}
