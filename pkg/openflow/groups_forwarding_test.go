package openflow_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// serveName listens on addr in pod's namespace and answers every line a
// client sends with name, on the same connection, until the client closes
// it: a client learns which endpoint it reached, as often as it asks. It
// stops at cleanup.
func serveName(t *testing.T, pod *ovstest.Pod, addr, name string) {
	t.Helper()
	var l net.Listener
	netnstest.MustDo(t, pod.NetNS, func() error {
		var err error
		l, err = net.Listen("tcp", addr) // the socket stays in the pod's namespace
		return err
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed at cleanup
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					if _, err := fmt.Fprintln(c, name); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
}

// nameConn is a client connection to a serveName server.
type nameConn struct {
	c net.Conn
	r *bufio.Reader
}

// dialName connects from pod to addr.
func dialName(pod *ovstest.Pod, addr string) (*nameConn, error) {
	var c net.Conn
	err := netnstest.Do(pod.NetNS, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 3*time.Second) // created in the pod's namespace
		return err
	})
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &nameConn{c, bufio.NewReader(c)}, nil
}

// ask returns the name of the server at the other end.
func (n *nameConn) ask() (string, error) {
	if _, err := fmt.Fprintln(n.c, "who"); err != nil {
		return "", err
	}
	line, err := n.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

// askOnce opens a connection, asks once and closes it.
func askOnce(pod *ovstest.Pod, addr string) (string, error) {
	n, err := dialName(pod, addr)
	if err != nil {
		return "", err
	}
	defer n.c.Close()
	return n.ask()
}

// TestSelectGroupForwarding load-balances real TCP connections from a
// client pod to a virtual IP over three endpoint pods with a select group
// whose buckets DNAT with ct(commit,nat(dst=...)), as a Service proxy does:
//
//	0: arp -> NORMAL; ip -> ct(table=1,zone=5,nat)     (un-NAT replies, re-NAT established)
//	1: +new+trk tcp to VIP:80 -> group:50; +inv -> drop; +trk -> goto 2
//	group 50: bucket i = ct(commit,table=2,zone=5,nat(dst=endpoint i:8080))
//	2: by nw_dst: endpoint i -> its MAC and port; client -> its port
//
// Connections spread over all buckets (dp_hash over the 5-tuple), each
// bucket counts exactly the connections its endpoint answered (only a
// connection's first packet passes the group), and a connection sticks to
// its endpoint through conntrack when its bucket leaves the group: the
// group is modified in place, the established connection keeps talking to
// its endpoint, new ones avoid it, and the other buckets keep their counts.
func TestSelectGroupForwarding(t *testing.T) {
	ovs, sw := newBridge(t)
	client := ovs.AddPod(t, "br-int", "c", "10.0.0.2/24", "02:00:0a:00:00:02", 1)
	var eps []*ovstest.Pod
	for i := range 3 {
		p := ovs.AddPod(t, "br-int", fmt.Sprintf("e%d", i+1), fmt.Sprintf("10.0.0.%d/24", 11+i),
			fmt.Sprintf("02:00:0a:00:00:%02x", 11+i), 11+i)
		serveName(t, p, p.IP+":8080", p.Name)
		eps = append(eps, p)
	}
	const vip, vipMAC = "10.0.0.100", "02:00:0a:00:00:64"
	// The client reaches the VIP on its link; OVS rewrites the MAC.
	if _, err := client.Exec("ip", "neigh", "replace", vip, "lladdr", vipMAC, "dev", "eth0"); err != nil {
		t.Fatal(err)
	}

	const zone, groupID = 5, 50
	ip, mac := net.ParseIP, func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	table2 := uint8(2)
	bucket := func(ep *ovstest.Pod) openflow.Action {
		return &openflow.CTAction{Commit: true, Zone: zone, Table: &table2,
			NAT: &openflow.NAT{Kind: openflow.NATDest, IPMin: ip(ep.IP), PortMin: 8080}}
	}
	group := func(eps ...*ovstest.Pod) *openflow.Group {
		b := openflow.NewGroup(groupID, openflow.GroupSelect)
		for _, ep := range eps {
			b.Bucket(100, bucket(ep))
		}
		return b.MustDone()
	}
	trk := openflow.CTState{}.Trk(true)
	fbs := []*openflow.FlowBuilder{
		openflow.NewFlow(0, 300).MatchProtocol(openflow.ProtocolARP).Output(openflow.PortNormal),
		openflow.NewFlow(0, 200).MatchProtocol(openflow.ProtocolIP).CT(openflow.CT(zone, 1).WithNAT(openflow.NAT{Kind: openflow.NATRestore})),
		openflow.NewFlow(1, 300).MatchProtocol(openflow.ProtocolTCP).MatchCTState(trk.New(true)).MatchDstIP(ip(vip)).MatchDstPort(80).Group(groupID),
		openflow.NewFlow(1, 200).MatchCTState(trk.Inv(true)).Drop(),
		openflow.NewFlow(1, 100).MatchProtocol(openflow.ProtocolIP).MatchCTState(trk).GotoTable(2),
		openflow.NewFlow(2, 100).MatchProtocol(openflow.ProtocolIP).MatchDstIP(ip(client.IP)).Output(uint32(client.OFPort)),
	}
	for _, ep := range eps {
		fbs = append(fbs, openflow.NewFlow(2, 100).MatchProtocol(openflow.ProtocolIP).MatchDstIP(ip(ep.IP)).
			SetEthDst(mac(ep.MAC)).Output(uint32(ep.OFPort)))
	}
	flows := buildAll(t, fbs...)
	ctx := testctx.Timeout(t, callTimeout)
	if err := sw.SyncGroupsAndFlows(ctx, "svc", []*openflow.Group{group(eps...)}, flows...); err != nil {
		t.Fatal(err)
	}

	addr := vip + ":80"
	answered := map[string]int{} // endpoint name -> connections it answered
	connect := func(n int) {
		t.Helper()
		for range n {
			name, err := askOnce(client, addr)
			if err != nil {
				t.Fatalf("connection to %s: %v\nflows:\n%s\ngroups:\n%s\nconntrack:\n%s", addr, err,
					strings.Join(dumpFlows(t, ovs), "\n"), strings.Join(dumpGroups(t, ovs), "\n"), ovs.MustAppctl(t, "dpctl/dump-conntrack"))
			}
			answered[name]++
		}
	}
	const first = 60
	connect(first)
	t.Logf("%d connections answered by %v", first, answered)
	for _, ep := range eps {
		if answered[ep.Name] == 0 {
			t.Errorf("endpoint %s answered none of %d connections", ep.Name, first)
		}
	}
	// Each bucket counts the first packets (SYNs) of its endpoint's
	// connections; the datapath reports them to the group when its flows
	// are revalidated, so wait for the sum.
	wantBuckets := func(what string, names []string, total uint64) {
		t.Helper()
		var got []uint64
		deadline := time.Now().Add(10 * time.Second)
		for {
			got = groupPackets(t, sw, groupID)
			if got[0] >= total || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		want := []uint64{total}
		for _, n := range names {
			want = append(want, uint64(answered[n]))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: group %d counts %v packets (group, buckets), want the connections answered %v", what, groupID, got, want)
		}
	}
	wantBuckets("after the first connections", []string{"e1", "e2", "e3"}, first)

	// A long-lived connection, then its endpoint's bucket leaves the group.
	long, err := dialName(client, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer long.c.Close()
	stuck, err := long.ask()
	if err != nil {
		t.Fatal(err)
	}
	answered[stuck]++
	var rest []*ovstest.Pod
	var restNames []string
	for _, ep := range eps {
		if ep.Name != stuck {
			rest, restNames = append(rest, ep), append(restNames, ep.Name)
		}
	}
	wantBuckets("with the long-lived connection", []string{"e1", "e2", "e3"}, first+1)
	if err := sw.SyncGroupsAndFlows(ctx, "svc", []*openflow.Group{group(rest...)}, flows...); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if name, err := long.ask(); err != nil || name != stuck {
			t.Fatalf("question %d on the established connection after its bucket left: answer %q, err %v; want %s", i, name, err, stuck)
		}
	}
	before := answered[stuck]
	const second = 30
	connect(second)
	if answered[stuck] != before {
		t.Errorf("%d new connections reached %s after its bucket was removed", answered[stuck]-before, stuck)
	}
	t.Logf("after removing %s's bucket: %v", stuck, answered)
	wantBuckets("after the modify and more connections", restNames, first+1+second)
	conntrack := ovs.MustAppctl(t, "dpctl/dump-conntrack")
	if n := strings.Count(conntrack, "zone=5"); n < first+1+second {
		t.Errorf("conntrack holds %d entries in zone 5, want at least %d:\n%s", n, first+1+second, conntrack)
	}
}
