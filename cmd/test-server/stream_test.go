package main

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestStreamStatsReport(t *testing.T) {
	for _, tc := range []struct {
		name     string
		received []bool
		want     string
	}{
		{"none lost", []bool{true, true, true}, "sent 3 received 3 lost 0 longest-outage 0ms\n"},
		{"one run and one single", []bool{true, false, false, true, false}, "sent 5 received 2 lost 3 longest-outage 20ms\nlost 1-2,4\n"},
		{"all lost", []bool{false, false}, "sent 2 received 0 lost 2 longest-outage 20ms\nlost 0-1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := streamStats{sent: len(tc.received), received: tc.received, interval: 10 * time.Millisecond}
			if got := st.String(); got != tc.want {
				t.Errorf("report %q, want %q", got, tc.want)
			}
		})
	}
}

// TestUDPStreamThroughEcho: every datagram comes back through a live echo,
// over IPv4 and IPv6 (the stream dials the family of its address); once the
// echo is gone the rest are counted lost.
func TestUDPStreamThroughEcho(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) { testUDPStreamThroughEcho(t, host) })
	}
}

func testUDPStreamThroughEcho(t *testing.T, host string) {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- udpEcho(ctx, pc) }()
	addr := pc.LocalAddr().String()
	st, err := udpStream(context.Background(), addr, 200, 500*time.Millisecond, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if st.sent < 90 || len(st.lostRanges()) != 0 {
		t.Errorf("with the echo up: %s", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err = udpStream(context.Background(), addr, 200, 200*time.Millisecond, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.lostRanges(); st.sent == 0 || len(r) != 1 || r[0] != [2]int{0, st.sent - 1} {
		t.Errorf("with the echo gone: %s", st)
	}
}
