package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weirnet/weir/pkg/localcluster"
)

// hostPortPod is a test-server pod on node serving port 8080 (TCP and UDP),
// with 8080/proto exposed as hostPort on hostIP ("" = every address).
func hostPortPod(ns, name, node string, hostPort int32, proto corev1.Protocol, hostIP string) *corev1.Pod {
	p := localcluster.TestServerPod(ns, name, node, map[string]string{"app": "hostport"}, 8080)
	ports := p.Spec.Containers[0].Ports
	for i := range ports {
		if ports[i].Protocol == proto {
			ports[i].HostPort, ports[i].HostIP = hostPort, hostIP
		}
	}
	return p
}

// TestHostPort: hostPort works out of the box (the default conflist chains
// portmap, which the agent image installs). A pod's hostPort answers on its
// node's IP from the other node, from a pod on the other node and from a pod
// on the same node; and, as the upstream conformance test "validates that
// there is no conflict between pods with same hostPort but different hostIP
// and protocol" checks, three pods of one node share a hostPort through
// different host IPs (127.0.0.1 and the node IP) and protocols, each
// answering for itself.
func TestHostPort(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const ns = "e2e-hostport"
	if _, err := s.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	node1, node2 := s.cfg.NodeName(1), s.cfg.NodeName(2)
	// The primary family's node IPs and loopback (the upstream test uses
	// ::1 on an IPv6 cluster), and portmap's rules in iptables or ip6tables.
	ip1, ip2 := s.cfg.PrimaryNodeIP(1), s.cfg.PrimaryNodeIP(2)
	loopback, iptables := "127.0.0.1", "iptables"
	if s.primaryFamily() == corev1.IPv6Protocol {
		loopback, iptables = "::1", "ip6tables"
	}
	const port = 54323 // the upstream test's
	pods := []*corev1.Pod{
		hostPortPod(ns, "hp-web", node1, 30080, corev1.ProtocolTCP, ""),
		hostPortPod(ns, "hp-local", node2, port, corev1.ProtocolTCP, loopback),
		hostPortPod(ns, "hp-nodeip", node2, port, corev1.ProtocolTCP, ip2),
		hostPortPod(ns, "hp-udp", node2, port, corev1.ProtocolUDP, ip2),
	}
	for _, p := range pods {
		if _, err := s.client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	running, err := localcluster.WaitPodsRunning(ctx, s.client, ns, "app=hostport", len(pods), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var webIP string
	for _, p := range running {
		if p.Name == "hp-web" {
			webIP = p.Status.PodIP
		}
	}
	web := net.JoinHostPort(ip1, "30080")

	tests := []struct {
		name        string
		node, pod   string // probe from node's netns, or from pod (NS/NAME)
		proto, addr string
		want        string
	}{
		{"from the other node", node2, "", "tcp", web, "hp-web"},
		{"from a pod on the other node", "", e2eNS + "/b1", "tcp", web, "hp-web"},
		{"from a pod on the same node", "", e2eNS + "/a1", "tcp", web, "hp-web"},
		{"same port, hostIP " + loopback + ", from its node", node2, "", "tcp", net.JoinHostPort(loopback, fmt.Sprint(port)), "hp-local"},
		{"same port, hostIP the node IP, from its node", node2, "", "tcp", net.JoinHostPort(ip2, fmt.Sprint(port)), "hp-nodeip"},
		{"same port, UDP, from its node", node2, "", "udp", net.JoinHostPort(ip2, fmt.Sprint(port)), "hp-udp"},
		{"same port, hostIP the node IP, from the other node", node1, "", "tcp", net.JoinHostPort(ip2, fmt.Sprint(port)), "hp-nodeip"},
		{"same port, UDP, from a pod on the other node", "", e2eNS + "/a1", "udp", net.JoinHostPort(ip2, fmt.Sprint(port)), "hp-udp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == "hp-local" && loopback == "::1" {
				// The pod still shares the port (it runs, without a
				// conflict); only reaching it through ::1 is impossible.
				t.Skip("IPv4-specific: portmap reaches a pod through a loopback hostIP by DNAT of loopback traffic, " +
					"which the kernel allows only for IPv4 (route_localnet); IPv6 has no equivalent, so hostIP ::1 cannot answer")
			}
			// portmap's rules are in place when the pod runs; a few
			// retries allow for the first packets of a fresh pod.
			var got string
			err := eventually(10*time.Second, func() error {
				var err error
				if tc.node != "" {
					got, err = s.nodeProbe(ctx, tc.node, tc.proto, tc.addr)
				} else {
					got, err = s.probe(ctx, tc.pod, tc.proto, tc.addr)
				}
				if err == nil && got != tc.want {
					err = fmt.Errorf("answered %q", got)
				}
				return err
			})
			if err != nil {
				t.Errorf("%s %s: %v, want the answer %q", tc.proto, tc.addr, err, tc.want)
			}
		})
	}

	// Deleting the pod removes its DNAT rules (portmap's DEL).
	dnat := "--to-destination " + net.JoinHostPort(webIP, "8080")
	if rules, err := s.nodeExec(ctx, node1, iptables, "-t", "nat", "-S"); err != nil || !strings.Contains(rules, dnat) {
		t.Fatalf("no %q in %s's nat table (%v):\n%s", dnat, node1, err, rules)
	}
	if err := s.client.CoreV1().Pods(ns).Delete(ctx, "hp-web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = eventually(60*time.Second, func() error {
		rules, err := s.nodeExec(ctx, node1, iptables, "-t", "nat", "-S")
		if err == nil && strings.Contains(rules, dnat) {
			return fmt.Errorf("%s's nat table still has %q", node1, dnat)
		}
		return err
	})
	if err != nil {
		t.Errorf("after deleting hp-web: %v", err)
	}
	if got, err := s.nodeProbe(ctx, node2, "tcp", web); err == nil {
		t.Errorf("hostPort 30080 answers %q after its pod was deleted", got)
	}
}
