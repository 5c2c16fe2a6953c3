package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
)

// refPluginsVersion is the containernetworking/plugins release the
// reference bridge + host-local plugins are built from.
const refPluginsVersion = "v1.9.1"

// buildRefPlugins builds the reference plugins from the Go module proxy
// into dir (cached across runs in the Go build cache).
func buildRefPlugins(b *testing.B, dir string) {
	b.Helper()
	cmd := exec.Command("go", "install",
		"github.com/containernetworking/plugins/plugins/main/bridge@"+refPluginsVersion,
		"github.com/containernetworking/plugins/plugins/ipam/host-local@"+refPluginsVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building the reference plugins: %v\n%s", err, out)
	}
}

// cniBench drives one plugin configuration through libcni from inside the
// node's network namespace, as a runtime on that node would.
type cniBench struct {
	cni    *libcni.CNIConfig
	conf   *libcni.NetworkConfigList
	nodeNS string // path
}

func (c *cniBench) do(fn func() error) error {
	return ns.WithNetNSPath(c.nodeNS, func(ns.NetNS) error { return fn() })
}

func (c *cniBench) add(p *pod) error {
	return c.do(func() error {
		_, err := c.cni.AddNetworkList(context.Background(), c.conf, &libcni.RuntimeConf{ContainerID: p.id, NetNS: p.path, IfName: "eth0"})
		return err
	})
}

func (c *cniBench) del(p *pod) error {
	return c.do(func() error {
		return c.cni.DelNetworkList(context.Background(), c.conf, &libcni.RuntimeConf{ContainerID: p.id, NetNS: p.path, IfName: "eth0"})
	})
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// run measures ADD+DEL of one pod with 100 pods already attached, then a
// burst of 50 concurrent ADDs.
func (c *cniBench) run(b *testing.B) {
	const existing, burst = 100, 50
	var pods []*pod
	for i := 0; i < existing; i++ {
		p := newSandbox(b)
		if err := c.add(p); err != nil {
			b.Fatalf("pre-populating pod %d: %v", i, err)
		}
		pods = append(pods, p)
	}
	b.Cleanup(func() {
		for _, p := range pods {
			_ = c.del(p)
		}
	})
	p := newSandbox(b)
	lat := make([]time.Duration, 0, b.N)
	addLat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.id = fmt.Sprintf("bench-%d", i)
		t0 := time.Now()
		if err := c.add(p); err != nil {
			b.Fatalf("ADD: %v", err)
		}
		addLat = append(addLat, time.Since(t0))
		if err := c.del(p); err != nil {
			b.Fatalf("DEL: %v", err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "add+del-p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "add+del-p99-ms")
	b.ReportMetric(float64(percentile(addLat, 0.5).Microseconds())/1000, "add-p50-ms")

	burstPods := make([]*pod, burst)
	for i := range burstPods {
		burstPods[i] = newSandbox(b)
	}
	blat := make([]time.Duration, burst)
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	t0 := time.Now()
	for i, bp := range burstPods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := time.Now()
			if err := c.add(bp); err != nil {
				errs <- err
			}
			blat[i] = time.Since(s)
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	close(errs)
	for err := range errs {
		b.Fatalf("burst ADD: %v", err)
	}
	pods = append(pods, burstPods...)
	b.ReportMetric(float64(wall.Milliseconds()), "burst50-wall-ms")
	b.ReportMetric(float64(percentile(blat, 0.5).Microseconds())/1000, "burst-add-p50-ms")
	b.ReportMetric(float64(percentile(blat, 0.99).Microseconds())/1000, "burst-add-p99-ms")
}

// BenchmarkCNIAddDel compares Weir (weir binary -> agent -> veth + OVS port
// + flows) with the reference bridge + host-local plugins (veth + Linux
// bridge), both driven by libcni in the same run on the same machine.
func BenchmarkCNIAddDel(b *testing.B) {
	b.Run("weir", func(b *testing.B) {
		n := newNode(b, "10.30.0.0/22")
		c := &cniBench{cni: n.cni, conf: n.confList(b, "1.0.0"), nodeNS: "/var/run/netns/" + n.ovs.NetNS}
		c.run(b)
	})
	b.Run("bridge+host-local", func(b *testing.B) {
		// A node netns of its own: the bridge plugin creates its Linux
		// bridge and gateway address in the namespace it runs in.
		node := newSandbox(b)
		dir := b.TempDir()
		buildRefPlugins(b, dir)
		conf, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"refbench","plugins":[
			{"type":"bridge","bridge":"refbr0","isGateway":true,"ipMasq":false,
			 "ipam":{"type":"host-local","subnet":"10.31.0.0/22","dataDir":%q}}]}`, filepath.Join(dir, "ipam"))))
		if err != nil {
			b.Fatal(err)
		}
		c := &cniBench{cni: libcni.NewCNIConfigWithCacheDir([]string{dir}, filepath.Join(dir, "cache"), nil), conf: conf, nodeNS: node.path}
		c.run(b)
	})
}
