package ovsdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	libovsdb "github.com/ovn-org/libovsdb/ovsdb"

	"github.com/weirnet/weir/pkg/ovsdb/vswitchd"
)

func TestNormalizeEndpoint(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "unix:/run/openvswitch/db.sock", want: "unix:/run/openvswitch/db.sock"},
		{in: "unix:/run/openvswitch/../openvswitch/db.sock", want: "unix:/run/openvswitch/db.sock"},
		{in: "tcp:127.0.0.1:6640", want: "tcp:127.0.0.1:6640"},
		{in: "tcp:[::1]:6640", want: "tcp:[::1]:6640"},
		{in: "unix:", wantErr: true},
		{in: "tcp:127.0.0.1", wantErr: true},
		{in: "ssl:127.0.0.1:6640", wantErr: true},
		{in: "/run/openvswitch/db.sock", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := normalizeEndpoint(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("normalizeEndpoint(%q) = %q, %v; want ErrInvalidArgument", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("normalizeEndpoint(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	// A relative unix path becomes absolute (libovsdb would silently use
	// the system socket instead).
	if got, err := normalizeEndpoint("unix:db.sock"); err != nil || !strings.HasPrefix(got, "unix:/") || !strings.HasSuffix(got, "/db.sock") {
		t.Errorf("normalizeEndpoint(unix:db.sock) = %q, %v; want an absolute path", got, err)
	}
}

func TestBridgeConfigNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in      BridgeConfig
		want    BridgeConfig
		wantErr bool
	}{
		{
			name: "defaults",
			in:   BridgeConfig{Name: "br-int"},
			want: BridgeConfig{Name: "br-int", DatapathType: DatapathSystem},
		},
		{
			name: "canonical forms",
			in:   BridgeConfig{Name: "br-int", DatapathType: DatapathNetdev, DatapathID: "00000000DEADBEEF", HWAddr: "02-00-0A-00-00-01"},
			want: BridgeConfig{Name: "br-int", DatapathType: DatapathNetdev, DatapathID: "00000000deadbeef", HWAddr: "02:00:0a:00:00:01"},
		},
		{name: "15 characters", in: BridgeConfig{Name: "br-0123456789ab"}, want: BridgeConfig{Name: "br-0123456789ab", DatapathType: DatapathSystem}},
		{name: "16 characters", in: BridgeConfig{Name: "br-0123456789abc"}, wantErr: true},
		{name: "dot", in: BridgeConfig{Name: "."}, wantErr: true},
		{name: "blank", in: BridgeConfig{Name: "br int"}, wantErr: true},
		{name: "colon", in: BridgeConfig{Name: "br:int"}, wantErr: true},
		{name: "datapath type", in: BridgeConfig{Name: "br", DatapathType: "dummy"}, wantErr: true},
		{name: "datapath ID length", in: BridgeConfig{Name: "br", DatapathID: "0xdeadbeef"}, wantErr: true},
		{name: "hwaddr", in: BridgeConfig{Name: "br", HWAddr: "not-a-mac"}, wantErr: true},
		{name: "multicast hwaddr", in: BridgeConfig{Name: "br", HWAddr: "01:00:5e:00:00:01"}, wantErr: true},
		{name: "zero hwaddr", in: BridgeConfig{Name: "br", HWAddr: "00:00:00:00:00:00"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.normalize()
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("normalize(%+v) = %v, want ErrInvalidArgument", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("normalize(%+v): %v", tt.in, err)
			}
			if got.Name != tt.want.Name || got.DatapathType != tt.want.DatapathType ||
				got.DatapathID != tt.want.DatapathID || got.HWAddr != tt.want.HWAddr {
				t.Fatalf("normalize(%+v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestMustReplace(t *testing.T) {
	spec := portSpec{bridge: "br-int", name: "p", ifType: InterfaceTypeInternal, opts: PortOptions{OFPortRequest: 3}}
	healthy := func() *vswitchd.Interface {
		return &vswitchd.Interface{Name: "p", Type: InterfaceTypeInternal, OfportRequest: ptr(3), Ofport: ptr(3)}
	}
	tests := []struct {
		name   string
		mutate func(*vswitchd.Interface)
		want   string // substring of the reason, "" for in-place
	}{
		{"as wanted", func(*vswitchd.Interface) {}, ""},
		{"not yet assigned", func(i *vswitchd.Interface) { i.Ofport = nil }, ""},
		{"other MAC is updated in place", func(i *vswitchd.Interface) { i.MAC = ptr("02:00:00:00:00:01") }, ""},
		{"other type", func(i *vswitchd.Interface) { i.Type = InterfaceTypeSystem }, "type"},
		{"other ofport request", func(i *vswitchd.Interface) { i.OfportRequest = ptr(4) }, "ofport request"},
		{"no ofport request", func(i *vswitchd.Interface) { i.OfportRequest = nil }, "ofport request"},
		{"failed", func(i *vswitchd.Interface) { i.Ofport = ptr(-1); i.Error = ptr("could not open network device p") }, "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iface := healthy()
			tt.mutate(iface)
			got := mustReplace(iface, spec)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Fatalf("mustReplace = %q, want a reason containing %q", got, tt.want)
			}
		})
	}
}

func TestCheckFlowTableNames(t *testing.T) {
	tests := []struct {
		names map[uint8]string
		ok    bool
	}{
		{nil, true},
		{map[uint8]string{0: "Classifier", 1: "SpoofGuard", 254: "Output"}, true},
		{map[uint8]string{0: "_private", 1: "a.b-c_d9"}, true},
		{map[uint8]string{255: "All"}, false},
		{map[uint8]string{0: ""}, false},
		{map[uint8]string{0: "9lives"}, false},
		{map[uint8]string{0: "a,b"}, false},
		{map[uint8]string{0: "a=b"}, false},
		{map[uint8]string{0: "Same", 7: "Same"}, false},
	}
	for _, tt := range tests {
		err := checkFlowTableNames(tt.names)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("checkFlowTableNames(%v) = %v, want ok=%v", tt.names, err, tt.ok)
		}
	}
}

func TestTransactionError(t *testing.T) {
	insert := libovsdb.Operation{Op: libovsdb.OperationInsert, Table: "Port"}
	mutate := libovsdb.Operation{Op: libovsdb.OperationMutate, Table: "Bridge"}
	tests := []struct {
		name    string
		res     []libovsdb.OperationResult
		wantNil bool
		wantAs  func(error) bool
		wantMsg string
	}{
		{
			name:    "success",
			res:     []libovsdb.OperationResult{{}, {Count: 1}},
			wantNil: true,
		},
		{
			name: "operation error",
			res:  []libovsdb.OperationResult{{}, {Error: "referential integrity violation", Details: "no row"}},
			wantAs: func(err error) bool {
				var target *libovsdb.ReferentialIntegrityViolation
				return errors.As(err, &target)
			},
			wantMsg: "mutate on table Bridge: referential integrity violation: no row",
		},
		{
			name: "commit error",
			res:  []libovsdb.OperationResult{{}, {}, {Error: "constraint violation", Details: "duplicate name"}},
			wantAs: func(err error) bool {
				var target *libovsdb.ConstraintViolation
				return errors.As(err, &target) && isRetriable(err)
			},
			wantMsg: "constraint violation: duplicate name",
		},
		{
			name:    "short reply",
			res:     []libovsdb.OperationResult{{}},
			wantAs:  func(err error) bool { return !isRetriable(err) },
			wantMsg: "2 operations submitted but only 1 results",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := transactionError(tt.res, []libovsdb.Operation{insert, mutate})
			if tt.wantNil {
				if err != nil {
					t.Fatalf("transactionError = %v, want nil", err)
				}
				return
			}
			if err == nil || !tt.wantAs(err) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("transactionError = %v, want %q of the right type", err, tt.wantMsg)
			}
		})
	}
}

func TestConnectionLost(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"broken pipe", &net.OpError{Op: "write", Net: "unix", Err: os.NewSyscallError("write", syscall.EPIPE)}, true},
		{"reset", fmt.Errorf("rpc: %w", syscall.ECONNRESET), true},
		{"eof", io.EOF, true},
		{"closed", fmt.Errorf("wrap: %w", net.ErrClosed), true},
		{"constraint", &libovsdb.ConstraintViolation{}, false},
		{"deadline", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := connectionLost(tt.err); got != tt.want {
				t.Errorf("connectionLost(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestOFPortError(t *testing.T) {
	tests := []struct {
		name        string
		err         *OFPortError
		wantMsg     string
		wantTimeout bool
	}{
		{
			name:    "device missing",
			err:     &OFPortError{Bridge: "br-int", Port: "veth1", OFPort: -1, Reason: "could not open network device veth1 (No such device)"},
			wantMsg: "ovsdb: port veth1 on bridge br-int got no OpenFlow port: could not open network device veth1 (No such device)",
		},
		{
			name:        "timeout",
			err:         &OFPortError{Bridge: "br-int", Port: "gw0", Reason: "timed out", err: ErrOFPortTimeout},
			wantMsg:     "ovsdb: port gw0 on bridge br-int got no OpenFlow port: timed out",
			wantTimeout: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error = tt.err
			if got := err.Error(); got != tt.wantMsg {
				t.Errorf("Error() = %q, want %q", got, tt.wantMsg)
			}
			if got := errors.Is(err, ErrOFPortTimeout); got != tt.wantTimeout {
				t.Errorf("errors.Is(err, ErrOFPortTimeout) = %v, want %v", got, tt.wantTimeout)
			}
		})
	}
}

// TestReconnectBackOffNeverStops guards against libovsdb's panic when the
// reconnect backoff gives up.
func TestReconnectBackOffNeverStops(t *testing.T) {
	b := newReconnectBackOff(time.Millisecond, 10*time.Millisecond)
	// Pretend the reconnect loop has been running for a day (the default
	// ExponentialBackOff gives up after 15 minutes).
	clock := &fakeClock{start: time.Now()}
	b.exp.Clock = clock
	b.Reset()
	clock.offset = 24 * time.Hour
	for i := range 1000 {
		d := b.NextBackOff()
		if d < 0 || d > 15*time.Millisecond {
			t.Fatalf("NextBackOff #%d = %v, want a delay in (0, 15ms]", i, d)
		}
	}
	b.Reset()
	if d := b.next(); d > 2*time.Millisecond {
		t.Fatalf("after Reset, next = %v, want about the initial 1ms", d)
	}
}

// TestReconnectBackOffStop checks that a stopped backoff ends the goroutine
// calling NextBackOff (libovsdb's reconnect loop).
func TestReconnectBackOffStop(t *testing.T) {
	b := newReconnectBackOff(time.Millisecond, 10*time.Millisecond)
	b.stop()
	done := make(chan struct{})
	returned := false
	go func() {
		defer close(done)
		b.NextBackOff()
		returned = true
	}()
	<-done
	if returned {
		t.Fatal("NextBackOff returned after stop")
	}
}

type fakeClock struct {
	start  time.Time
	offset time.Duration
}

func (c *fakeClock) Now() time.Time { return c.start.Add(c.offset) }
