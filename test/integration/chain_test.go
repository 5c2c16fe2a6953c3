package integration

// Fixtures for the tests that drive the shipped network configuration
// (weir chained with portmap, build/yamls/weir.yml) through libcni.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/yaml"
)

var portmapOnce struct {
	sync.Once
	err error
}

// needPortmap builds the reference portmap plugin (the version go.mod pins,
// as make build does) into binDir, once per test binary.
func needPortmap(t testing.TB) {
	t.Helper()
	portmapOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "portmap"),
			"github.com/containernetworking/plugins/plugins/meta/portmap").CombinedOutput()
		if err != nil {
			portmapOnce.err = fmt.Errorf("building portmap: %v: %s", err, out)
		}
	})
	if portmapOnce.err != nil {
		t.Fatal(portmapOnce.err)
	}
}

// shippedConfList is the conflist of the weir-config ConfigMap in
// build/yamls/weir.yml, as install-cni writes it on every node, with weir's
// cniSocket pointed at the node's agent.
func (n *node) shippedConfList(t testing.TB) *libcni.NetworkConfigList {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "build", "yamls", "weir.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var raw string
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var cm struct {
			Kind     string                `json:"kind"`
			Metadata struct{ Name string } `json:"metadata"`
			Data     map[string]string     `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatalf("weir.yml: %v", err)
		}
		if cm.Kind == "ConfigMap" && cm.Metadata.Name == "weir-config" {
			raw = cm.Data["weir.conflist"]
		}
	}
	var conf map[string]any
	if err := json.Unmarshal([]byte(raw), &conf); err != nil {
		t.Fatalf("weir.conflist in weir.yml is not JSON (%v): %q", err, raw)
	}
	plugins, _ := conf["plugins"].([]any)
	if len(plugins) == 0 {
		t.Fatalf("weir.conflist has no plugins: %q", raw)
	}
	plugins[0].(map[string]any)["cniSocket"] = n.sock
	out, _ := json.Marshal(conf)
	l, err := libcni.ConfListFromBytes(out)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// inNode runs fn in the node's network namespace. libcni started from
// there runs the plugins there too (they inherit the thread's namespace), as
// a runtime on the node does: portmap writes the node's iptables.
func (n *node) inNode(fn func() error) error {
	return ns.WithNetNSPath("/var/run/netns/"+n.ovs.NetNS, func(ns.NetNS) error { return fn() })
}

// chainAdd is ADD of pod p through the conflist l, run in the node, with
// the runtime's capability arguments (e.g. "bandwidth", "portMappings").
func (n *node) chainAdd(t testing.TB, l *libcni.NetworkConfigList, p *pod, caps map[string]any) error {
	t.Helper()
	rt := n.rt(p)
	rt.CapabilityArgs = caps
	var res *current.Result
	err := n.inNode(func() error {
		r, err := n.cni.AddNetworkList(context.Background(), l, rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return err
	}
	p.result = res
	p.ip = res.IPs[0].Address.IP.String()
	return nil
}

func (n *node) chainDel(t testing.TB, l *libcni.NetworkConfigList, p *pod, caps map[string]any) error {
	t.Helper()
	rt := n.rt(p)
	rt.CapabilityArgs = caps
	return n.inNode(func() error { return n.cni.DelNetworkList(context.Background(), l, rt) })
}

func (n *node) chainCheck(t testing.TB, l *libcni.NetworkConfigList, p *pod, caps map[string]any) error {
	t.Helper()
	rt := n.rt(p)
	rt.CapabilityArgs = caps
	return n.inNode(func() error { return n.cni.CheckNetworkList(context.Background(), l, rt) })
}

// iperf3 runs a TCP test of secs seconds (the first one omitted, so a
// burst does not count) from a client in clientNS to a server in serverNS
// at serverIP, and returns the receiver's rate in bit/s.
func iperf3(t testing.TB, clientNS, serverNS, serverIP string, secs int) float64 {
	t.Helper()
	const port = "5211"
	if out, err := inNS(serverNS, "iperf3", "-s", "-1", "-D", "-p", port); err != nil {
		t.Fatalf("iperf3 server: %v: %s", err, out)
	}
	var out string
	var err error
	for i := 0; i < 50; i++ { // until the daemonized server listens
		out, err = inNS(clientNS, "iperf3", "-c", serverIP, "-p", port, "-t", fmt.Sprint(secs), "-O", "1", "-J")
		// iperf3 3.12 with -J may exit 0 on "Connection refused" (the
		// error is in the JSON): CI saw TestBandwidth measure nothing so.
		if !strings.Contains(out, "Connection refused") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("iperf3 %s -> %s: %v: %s", clientNS, serverIP, err, tail(out, 20))
	}
	bps, err := iperf3Received(out)
	if err != nil {
		t.Fatal(err)
	}
	return bps
}

// iperf3Received returns the receiver's rate in bit/s from the JSON report
// (-J) of an iperf3 client.
func iperf3Received(out string) (float64, error) {
	var rep struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.End.SumReceived.BitsPerSecond <= 0 {
		return 0, fmt.Errorf("iperf3 measured nothing (%v): %s", err, tail(out, 20))
	}
	return rep.End.SumReceived.BitsPerSecond, nil
}

// dialIn connects (TCP or UDP) to addr from the netns at nsPath, sends
// "ping" and returns the first line answered.
func dialIn(nsPath, network, addr string) (string, error) {
	var reply string
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		buf := make([]byte, 256)
		k, err := c.Read(buf)
		if err != nil {
			return err
		}
		reply = strings.TrimSpace(string(buf[:k]))
		return nil
	})
	return reply, err
}

// serveHello answers every TCP connection and UDP datagram on addr inside
// the netns at nsPath with "hello from <name>" until the test ends.
func serveHello(t testing.TB, nsPath, addr, name string) {
	t.Helper()
	var (
		tl net.Listener
		ul net.PacketConn
	)
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		if tl, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		ul, err = net.ListenPacket("udp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, nsPath, err)
	}
	msg := []byte("hello from " + name + "\n")
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			// Read the request first: closing with unread data would
			// reset the connection before the client reads the answer.
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Read(make([]byte, 256))
			_, _ = c.Write(msg)
			_ = c.Close()
		}
	})
	wg.Go(func() {
		buf := make([]byte, 256)
		for {
			_, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = ul.WriteTo(msg, from)
		}
	})
	t.Cleanup(func() {
		tl.Close()
		ul.Close()
		wg.Wait()
	})
}
