package interfacestore

import (
	"fmt"
	"testing"
)

func TestOFPorts(t *testing.T) {
	a := NewOFPorts()
	p1, _ := a.Reserve("a")
	p2, _ := a.Reserve("b")
	if p1 != FirstPodOFPort || p2 != FirstPodOFPort+1 {
		t.Fatalf("got %d, %d; want %d, %d", p1, p2, FirstPodOFPort, FirstPodOFPort+1)
	}
	if again, _ := a.Reserve("a"); again != p1 {
		t.Fatalf("Reserve is not idempotent: %d then %d", p1, again)
	}
	a.Release("a")
	a.Release("a") // releasing twice is harmless
	if got := a.Reserved(); len(got) != 1 || got["b"] != p2 {
		t.Fatalf("Reserved = %v, want only b", got)
	}
	// Round-robin: the freed number is not reused at once.
	if p3, _ := a.Reserve("c"); p3 == p1 {
		t.Fatalf("just-released port %d reused at once", p1)
	}
	// Ports found at restore are skipped, the agent's own included.
	b := NewOFPorts()
	b.MarkUsed("gw", int(GatewayOFPort))
	b.MarkUsed("old", 3)
	b.MarkUsed("pending", 0)
	if p, _ := b.Reserve("new"); p != 4 {
		t.Fatalf("after restore of port 3, got %d, want 4", p)
	}
	// Exhaustion is an error, not a duplicate.
	c := NewOFPorts()
	for i := FirstPodOFPort; i <= LastPodOFPort; i++ {
		c.MarkUsed(fmt.Sprintf("p%d", i), int(i))
	}
	if p, err := c.Reserve("x"); err == nil {
		t.Fatalf("full allocator handed out %d", p)
	}
}

func TestOFPortNumbering(t *testing.T) {
	if TunnelOFPort >= FirstPodOFPort || GatewayOFPort >= FirstPodOFPort || TunnelOFPort == GatewayOFPort {
		t.Fatalf("agent ports %d, %d collide with the pod pool from %d", TunnelOFPort, GatewayOFPort, FirstPodOFPort)
	}
	if LastPodOFPort > 0xfeff {
		t.Fatalf("LastPodOFPort %#x is above what ofport_request accepts", LastPodOFPort)
	}
}
