package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPortmap: hostPort through the shipped conflist (weir, then the
// reference portmap plugin) and the real weir binary, with the plugins run
// in the node's network namespace as a runtime on the node runs them. A
// TCP and a UDP hostPort reach the pod on the node's address from another
// namespace (PREROUTING DNAT), from the node itself (OUTPUT) and from
// another pod of the node (hairpin, masqueraded); CHECK passes; DEL removes
// the rules and the ports are closed again.
func TestPortmap(t *testing.T) {
	needPortmap(t)
	n := newNode(t, "10.27.0.0/24")
	l := n.shippedConfList(t)

	// A "client" namespace on a link to the node, addresses from TEST-NET-2.
	client := newSandbox(t)
	const nodeIP, clientIP = "198.51.100.1", "198.51.100.2"
	for _, c := range [][]string{
		{"ip", "link", "add", "pmc0", "netns", client.ns, "type", "veth", "peer", "name", "pmn0", "netns", n.ovs.NetNS},
		{"ip", "-n", n.ovs.NetNS, "addr", "add", nodeIP + "/24", "dev", "pmn0"},
		{"ip", "-n", n.ovs.NetNS, "link", "set", "pmn0", "up"},
		{"ip", "-n", client.ns, "addr", "add", clientIP + "/24", "dev", "pmc0"},
		{"ip", "-n", client.ns, "link", "set", "pmc0", "up"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}

	web, other := newSandbox(t), newSandbox(t)
	mappings := map[string]any{"portMappings": []map[string]any{
		{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"},
		{"hostPort": 30053, "containerPort": 5353, "protocol": "udp"},
	}}
	if err := n.chainAdd(t, l, web, mappings); err != nil {
		t.Fatalf("ADD with port mappings: %v", err)
	}
	if err := n.chainAdd(t, l, other, nil); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	serveHello(t, web.path, web.ip+":8080", "web")
	serveHello(t, web.path, web.ip+":5353", "web")

	nodeNS := "/var/run/netns/" + n.ovs.NetNS
	from := []struct{ name, nsPath string }{
		{"another namespace", client.path},
		{"the node", nodeNS},
		{"a pod of the node", other.path},
	}
	for _, f := range from {
		for _, proto := range []struct{ network, port string }{{"tcp", "30080"}, {"udp", "30053"}} {
			got, err := dialIn(f.nsPath, proto.network, nodeIP+":"+proto.port)
			if err != nil || got != "hello from web" {
				t.Errorf("%s %s:%s from %s: %q, %v; want the pod's answer", proto.network, nodeIP, proto.port, f.name, got, err)
			}
		}
	}
	if err := n.chainCheck(t, l, web, mappings); err != nil {
		t.Errorf("CHECK with portmap: %v", err)
	}
	nat := func() string {
		out, err := n.ovs.Exec("", "iptables", "-t", "nat", "-S")
		if err != nil {
			t.Fatalf("iptables: %v: %s", err, out)
		}
		return out
	}
	if rules := nat(); !strings.Contains(rules, web.id) || !strings.Contains(rules, "--to-destination "+web.ip+":8080") {
		t.Fatalf("no DNAT rule for the pod in the node's nat table:\n%s", rules)
	}

	if err := n.chainDel(t, l, web, mappings); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if rules := nat(); strings.Contains(rules, web.id) || strings.Contains(rules, web.ip+":") {
		t.Errorf("DNAT rules left after DEL:\n%s", rules)
	}
	if got, err := dialIn(client.path, "tcp", nodeIP+":30080"); err == nil {
		t.Errorf("hostPort 30080 still answers after DEL: %q", got)
	} else {
		t.Logf("after DEL: %v", err)
	}
}
