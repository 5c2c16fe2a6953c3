package ipam

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func mustCIDR(t testing.TB, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatalf("ParseCIDR(%q): %v", s, err)
	}
	return n
}

func mustNew(t testing.TB, cidr string, store Store) *Allocator {
	t.Helper()
	a, err := New(mustCIDR(t, cidr), store)
	if err != nil {
		t.Fatalf("New(%s): %v", cidr, err)
	}
	return a
}

func mustAllocate(t testing.TB, a *Allocator, owner string) net.IP {
	t.Helper()
	ip, err := a.Allocate(owner)
	if err != nil {
		t.Fatalf("Allocate(%q): %v", owner, err)
	}
	return ip
}

func TestNew(t *testing.T) {
	tests := []struct {
		name     string
		cidr     *net.IPNet
		wantErr  string // substring; empty means success
		gateway  string
		wantSize uint64
	}{
		{name: "ipv4 /24", cidr: mustCIDR(t, "10.10.1.0/24"), gateway: "10.10.1.1", wantSize: 253},
		{name: "ipv4 /30", cidr: mustCIDR(t, "10.10.1.4/30"), gateway: "10.10.1.5", wantSize: 1},
		{name: "ipv4 host bits set", cidr: &net.IPNet{IP: net.ParseIP("10.10.1.77"), Mask: net.CIDRMask(24, 32)}, gateway: "10.10.1.1", wantSize: 253},
		{name: "ipv4 /31 too small", cidr: mustCIDR(t, "10.10.1.0/31"), wantErr: "10.10.1.0/31 is too small"},
		{name: "ipv4 /32 too small", cidr: mustCIDR(t, "10.10.1.0/32"), wantErr: "10.10.1.0/32 is too small"},
		{name: "ipv6 /120", cidr: mustCIDR(t, "fd00:10::/120"), gateway: "fd00:10::1", wantSize: 254},
		{name: "ipv6 /64 saturates", cidr: mustCIDR(t, "fd00:10::/64"), gateway: "fd00:10::1", wantSize: ^uint64(0)},
		{name: "ipv6 /127 too small", cidr: mustCIDR(t, "fd00:10::/127"), wantErr: "is too small"},
		{name: "nil CIDR", cidr: nil, wantErr: "nil CIDR"},
		{name: "non-canonical mask", cidr: &net.IPNet{IP: net.IPv4(10, 0, 0, 0).To4(), Mask: net.IPv4Mask(255, 0, 255, 0)}, wantErr: "non-canonical mask"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.cidr, &MemStore{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New() error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(): %v", err)
			}
			if got := a.Gateway().String(); got != tc.gateway {
				t.Errorf("Gateway() = %s, want %s", got, tc.gateway)
			}
			if got := a.Size(); got != tc.wantSize {
				t.Errorf("Size() = %d, want %d", got, tc.wantSize)
			}
		})
	}
}

func TestNewNilStore(t *testing.T) {
	if _, err := New(mustCIDR(t, "10.0.0.0/24"), nil); err == nil {
		t.Fatal("New with nil store succeeded")
	}
}

// TestAllocateSequence allocates owners in order and checks every result,
// including exhaustion and the reserved addresses never being handed out.
func TestAllocateSequence(t *testing.T) {
	tests := []struct {
		name string
		cidr string
		want []string // expected address per allocation; "full" means ErrExhausted
	}{
		{name: "/30 holds one pod after the gateway", cidr: "10.0.0.0/30", want: []string{"10.0.0.2", "full", "full"}},
		{name: "/29", cidr: "10.0.0.8/29", want: []string{"10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14", "full"}},
		{name: "ipv6 /126", cidr: "fd00::/126", want: []string{"fd00::2", "fd00::3", "full"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, tc.cidr, &MemStore{})
			for i, want := range tc.want {
				owner := fmt.Sprintf("pod-%d", i)
				ip, err := a.Allocate(owner)
				if want == "full" {
					if !errors.Is(err, ErrExhausted) {
						t.Fatalf("Allocate(%s) = %v, %v; want ErrExhausted", owner, ip, err)
					}
					if !strings.Contains(err.Error(), tc.cidr) {
						t.Errorf("exhausted error %q does not name the CIDR %s", err, tc.cidr)
					}
					if _, ok := a.Lookup(owner); ok {
						t.Errorf("failed Allocate left an allocation for %s", owner)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Allocate(%s): %v", owner, err)
				}
				if ip.String() != want {
					t.Errorf("Allocate(%s) = %s, want %s", owner, ip, want)
				}
			}
		})
	}
}

func TestAllocateIdempotent(t *testing.T) {
	store := &MemStore{}
	a := mustNew(t, "10.0.0.0/24", store)
	first := mustAllocate(t, a, "c1/eth0")
	saves := store.Saves()
	for range 3 {
		if again := mustAllocate(t, a, "c1/eth0"); !again.Equal(first) {
			t.Fatalf("second Allocate = %s, want %s", again, first)
		}
	}
	if store.Saves() != saves {
		t.Errorf("idempotent Allocate saved state again (%d saves, want %d)", store.Saves(), saves)
	}
	if other := mustAllocate(t, a, "c2/eth0"); other.Equal(first) {
		t.Errorf("different owner got the same address %s", other)
	}
	if got, ok := a.Lookup("c1/eth0"); !ok || !got.Equal(first) {
		t.Errorf("Lookup = %s, %v; want %s, true", got, ok, first)
	}
	if _, err := a.Allocate(""); err == nil {
		t.Error("Allocate(\"\") succeeded")
	}
}

// TestRoundRobin checks that a released address is not reused while other
// addresses are free, and is reused once the range wraps around.
func TestRoundRobin(t *testing.T) {
	type step struct {
		op    string // "alloc" or "release"
		owner string
		want  string // for alloc
	}
	tests := []struct {
		name  string
		cidr  string
		steps []step
	}{
		{
			name: "released address skipped while others are free",
			cidr: "10.0.0.0/29", // pods .2-.6
			steps: []step{
				{"alloc", "a", "10.0.0.2"},
				{"alloc", "b", "10.0.0.3"},
				{"alloc", "c", "10.0.0.4"},
				{"release", "b", ""},
				{"alloc", "d", "10.0.0.5"},
				{"alloc", "b", "10.0.0.6"},
				{"alloc", "e", "10.0.0.3"}, // wrapped: the only free one
				{"alloc", "f", "full"},
			},
		},
		{
			name: "release of the last allocated",
			cidr: "10.0.0.0/29",
			steps: []step{
				{"alloc", "a", "10.0.0.2"},
				{"release", "a", ""},
				{"alloc", "b", "10.0.0.3"},
				{"release", "b", ""},
				{"alloc", "c", "10.0.0.4"},
			},
		},
		{
			name: "wrap around skips reserved addresses",
			cidr: "10.0.0.0/29",
			steps: []step{
				{"alloc", "a", "10.0.0.2"},
				{"alloc", "b", "10.0.0.3"},
				{"alloc", "c", "10.0.0.4"},
				{"alloc", "d", "10.0.0.5"},
				{"alloc", "e", "10.0.0.6"},
				{"release", "a", ""},
				{"release", "e", ""},
				{"alloc", "f", "10.0.0.2"},
				{"alloc", "g", "10.0.0.6"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, tc.cidr, &MemStore{})
			for i, s := range tc.steps {
				switch s.op {
				case "release":
					if err := a.Release(s.owner); err != nil {
						t.Fatalf("step %d: Release(%s): %v", i, s.owner, err)
					}
				case "alloc":
					ip, err := a.Allocate(s.owner)
					if s.want == "full" {
						if !errors.Is(err, ErrExhausted) {
							t.Fatalf("step %d: Allocate(%s) = %v, %v; want ErrExhausted", i, s.owner, ip, err)
						}
						continue
					}
					if err != nil {
						t.Fatalf("step %d: Allocate(%s): %v", i, s.owner, err)
					}
					if ip.String() != s.want {
						t.Fatalf("step %d: Allocate(%s) = %s, want %s", i, s.owner, ip, s.want)
					}
				}
			}
		})
	}
}

func TestRelease(t *testing.T) {
	a := mustNew(t, "10.0.0.0/24", &MemStore{})
	ip := mustAllocate(t, a, "x")
	for i := range 2 { // idempotent
		if err := a.Release("x"); err != nil {
			t.Fatalf("Release #%d: %v", i+1, err)
		}
	}
	if err := a.Release("never-allocated"); err != nil {
		t.Fatalf("Release of unknown owner: %v", err)
	}
	if _, ok := a.Lookup("x"); ok {
		t.Fatal("Lookup found a released owner")
	}
	if len(a.List()) != 0 {
		t.Fatalf("List() = %v after release", a.List())
	}
	if again := mustAllocate(t, a, "x"); again.Equal(ip) {
		t.Errorf("re-allocation after release reused %s while the range has free addresses", ip)
	}
}

func TestListIsACopy(t *testing.T) {
	a := mustNew(t, "10.0.0.0/24", &MemStore{})
	mustAllocate(t, a, "a")
	l := a.List()
	l["a"][3] = 99
	delete(l, "a")
	if got, ok := a.Lookup("a"); !ok || got.String() != "10.0.0.2" {
		t.Fatalf("mutating List() changed the allocator: %v %v", got, ok)
	}
}

// TestPersistenceAcrossRestart: a new allocator on the same file (an
// agent restart) has the allocations and the round-robin position, for an
// IPv4 and an IPv6 pod CIDR (an IPv6-only node keeps its only allocator's
// state the same way).
func TestPersistenceAcrossRestart(t *testing.T) {
	for _, cidr := range []string{"10.1.2.0/24", "fd00:1:2::/64"} {
		t.Run(cidr, func(t *testing.T) { testPersistenceAcrossRestart(t, cidr) })
	}
}

func testPersistenceAcrossRestart(t *testing.T, cidr string) {
	path := filepath.Join(t.TempDir(), "sub", "ipam.json")

	a := mustNew(t, cidr, NewFileStore(path))
	ipA := mustAllocate(t, a, "a")
	ipB := mustAllocate(t, a, "b")
	ipC := mustAllocate(t, a, "c")
	if err := a.Release("b"); err != nil {
		t.Fatal(err)
	}

	// "Restart": a new allocator on the same file.
	b := mustNew(t, cidr, NewFileStore(path))
	want := map[string]string{"a": ipA.String(), "c": ipC.String()}
	got := map[string]string{}
	for o, ip := range b.List() {
		got[o] = ip.String()
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after restart List() = %v, want %v", got, want)
	}
	if ip := mustAllocate(t, b, "a"); !ip.Equal(ipA) {
		t.Errorf("after restart Allocate(a) = %s, want %s", ip, ipA)
	}
	// The round-robin position survives the restart: the next address is
	// after c, not b's released address.
	ipD := mustAllocate(t, b, "d")
	if ipD.Equal(ipA) || ipD.Equal(ipC) || ipD.Equal(ipB) {
		t.Errorf("after restart Allocate(d) = %s, reusing one of %s %s %s", ipD, ipA, ipB, ipC)
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("state file mode %o, want 600", perm)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the state file (temp files left?)", len(entries))
	}
}

func TestStaleTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.json")
	stale := filepath.Join(dir, "ipam.json.tmp-12345")
	if err := os.WriteFile(stale, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustNew(t, "10.0.0.0/24", NewFileStore(path))
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file still there: %v", err)
	}
}

func TestCorruptFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr string
	}{
		{name: "garbage", content: "this is not json", wantErr: "decoding JSON"},
		{name: "empty", content: "", wantErr: "file is empty"},
		{name: "truncated", content: `{"version":1,"allocations":{"a":"10.0.0.2"`, wantErr: "decoding JSON"},
		{name: "trailing data", content: `{"version":1,"allocations":{}} {}`, wantErr: "trailing data"},
		{name: "unknown version", content: `{"version":7,"allocations":{}}`, wantErr: "unsupported version 7"},
		{name: "missing allocations", content: `{"version":1}`, wantErr: `missing "allocations"`},
		{name: "unknown field", content: `{"version":1,"allocations":{},"bogus":1}`, wantErr: "bogus"},
		{name: "bad address", content: `{"version":1,"allocations":{"a":"10.0.0.300"}}`, wantErr: `invalid address "10.0.0.300" for owner "a"`},
		{name: "bad lastAllocated", content: `{"version":1,"lastAllocated":"x","allocations":{}}`, wantErr: "invalid lastAllocated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ipam.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			// The corrupt file is moved aside and the allocator starts
			// empty (the agent then restores from OVSDB).
			a, err := New(mustCIDR(t, "10.0.0.0/24"), NewFileStore(path))
			if err != nil {
				t.Fatalf("New on a corrupt state file: %v", err)
			}
			if got := a.List(); len(got) != 0 {
				t.Fatalf("allocations after a corrupt file: %v, want none", got)
			}
			if _, err := decodeFile([]byte(tc.content)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("decoding %q: %v, want an error containing %q", tc.content, err, tc.wantErr)
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("corrupt copies %v, want exactly one", aside)
			}
			// The file must be kept as it was for a human to inspect.
			if data, _ := os.ReadFile(aside[0]); string(data) != tc.content {
				t.Errorf("corrupt file was modified: %q", data)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("corrupt file still at %s: %v", path, err)
			}
			// The next allocation is saved to a fresh, valid file.
			ip, err := a.Allocate("x")
			if err != nil {
				t.Fatal(err)
			}
			b := mustNew(t, "10.0.0.0/24", NewFileStore(path))
			if got, ok := b.Lookup("x"); !ok || !got.Equal(ip) {
				t.Errorf("after reopening: x has %v (%v), want %v", got, ok, ip)
			}
		})
	}
}

func TestStoredStateMustFitCIDR(t *testing.T) {
	tests := []struct {
		name    string
		allocs  string
		wantErr []string
	}{
		{name: "outside", allocs: `{"a":"10.9.9.9","b":"10.0.0.5"}`, wantErr: []string{`"a": 10.9.9.9 is outside 10.0.0.0/24`}},
		{name: "gateway", allocs: `{"gw":"10.0.0.1"}`, wantErr: []string{`"gw": 10.0.0.1 is reserved (gateway)`}},
		{name: "duplicate", allocs: `{"a":"10.0.0.5","b":"10.0.0.5"}`, wantErr: []string{`10.0.0.5 is claimed by both "a" and "b"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ipam.json")
			doc := `{"version":1,"allocations":` + tc.allocs + `}`
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(mustCIDR(t, "10.0.0.0/24"), NewFileStore(path))
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestRestore(t *testing.T) {
	ip := net.ParseIP
	tests := []struct {
		name    string
		allocs  map[string]net.IP
		wantErr []string // substrings; nil means success
	}{
		{name: "valid", allocs: map[string]net.IP{"a": ip("10.0.0.7"), "b": ip("10.0.0.200")}},
		{name: "empty", allocs: map[string]net.IP{}},
		{name: "outside CIDR", allocs: map[string]net.IP{"a": ip("10.0.0.7"), "bad1": ip("192.168.0.1"), "bad2": ip("10.0.1.0")},
			wantErr: []string{"2 invalid", `"bad1": 192.168.0.1 is outside 10.0.0.0/24`, `"bad2": 10.0.1.0 is outside`}},
		{name: "duplicate address", allocs: map[string]net.IP{"a": ip("10.0.0.7"), "b": ip("10.0.0.7")},
			wantErr: []string{`10.0.0.7 is claimed by both "a" and "b"`}},
		{name: "network address", allocs: map[string]net.IP{"n": ip("10.0.0.0")}, wantErr: []string{"reserved (network address)"}},
		{name: "gateway", allocs: map[string]net.IP{"g": ip("10.0.0.1")}, wantErr: []string{"reserved (gateway)"}},
		{name: "broadcast", allocs: map[string]net.IP{"b": ip("10.0.0.255")}, wantErr: []string{"reserved (broadcast address)"}},
		{name: "nil address", allocs: map[string]net.IP{"x": nil}, wantErr: []string{`"x": invalid address`}},
		{name: "empty owner", allocs: map[string]net.IP{"": ip("10.0.0.9")}, wantErr: []string{"empty owner"}},
		{name: "ipv6 in ipv4 CIDR", allocs: map[string]net.IP{"v6": ip("fd00::5")}, wantErr: []string{"fd00::5 is outside"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ipam.json")
			a := mustNew(t, "10.0.0.0/24", NewFileStore(path))
			before := mustAllocate(t, a, "old")
			err := a.Restore(tc.allocs)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("Restore succeeded")
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				if got, ok := a.Lookup("old"); !ok || !got.Equal(before) || len(a.List()) != 1 {
					t.Errorf("failed Restore changed the state: %v", a.List())
				}
				return
			}
			if err != nil {
				t.Fatalf("Restore: %v", err)
			}
			check := func(a *Allocator) {
				t.Helper()
				got := a.List()
				if len(got) != len(tc.allocs) {
					t.Fatalf("List() = %v, want %v", got, tc.allocs)
				}
				for o, want := range tc.allocs {
					if !got[o].Equal(want) {
						t.Errorf("owner %s: %s, want %s", o, got[o], want)
					}
				}
			}
			check(a)
			check(mustNew(t, "10.0.0.0/24", NewFileStore(path))) // persisted
			// New allocations avoid the restored addresses.
			for i := range 20 {
				got := mustAllocate(t, a, fmt.Sprintf("new-%d", i))
				for o, r := range tc.allocs {
					if got.Equal(r) {
						t.Fatalf("allocated %s, restored for %s", got, o)
					}
				}
			}
		})
	}
}

// failingStore fails Save when fail is set.
type failingStore struct {
	MemStore
	fail bool
}

func (f *failingStore) Save(s Snapshot) error {
	if f.fail {
		return errors.New("disk on fire")
	}
	return f.MemStore.Save(s)
}

func TestSaveFailureChangesNothing(t *testing.T) {
	store := &failingStore{}
	a := mustNew(t, "10.0.0.0/29", store)
	ipA := mustAllocate(t, a, "a")
	store.fail = true

	if ip, err := a.Allocate("b"); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Allocate with failing store = %v, %v", ip, err)
	}
	if _, ok := a.Lookup("b"); ok {
		t.Error("failed Allocate left an allocation")
	}
	if err := a.Release("a"); err == nil {
		t.Fatal("Release with failing store succeeded")
	}
	if got, ok := a.Lookup("a"); !ok || !got.Equal(ipA) {
		t.Error("failed Release removed the allocation")
	}
	if err := a.Restore(map[string]net.IP{"z": net.ParseIP("10.0.0.5")}); err == nil {
		t.Fatal("Restore with failing store succeeded")
	}
	if len(a.List()) != 1 {
		t.Errorf("failed Restore changed the state: %v", a.List())
	}

	store.fail = false
	// The failed allocation of b did not advance the round-robin position.
	if ip := mustAllocate(t, a, "b"); ip.String() != "10.0.0.3" {
		t.Errorf("Allocate(b) = %s, want 10.0.0.3", ip)
	}
}

func TestConcurrentAllocate(t *testing.T) {
	const n = 50
	a := mustNew(t, "10.0.0.0/24", NewFileStore(filepath.Join(t.TempDir(), "ipam.json")))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[string]string{}
		errs []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("pod-%d", i)
			ip, err := a.Allocate(owner)
			if err == nil {
				// Concurrent readers and idempotent re-allocation.
				_ = a.List()
				var again net.IP
				again, err = a.Allocate(owner)
				if err == nil && !again.Equal(ip) {
					err = fmt.Errorf("%s: second Allocate %s != %s", owner, again, ip)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if prev, dup := seen[ip.String()]; dup {
				errs = append(errs, fmt.Errorf("%s handed to both %s and %s", ip, prev, owner))
			}
			seen[ip.String()] = owner
		}()
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(seen) != n {
		t.Errorf("%d unique addresses, want %d", len(seen), n)
	}
	if _, ok := seen[a.Gateway().String()]; ok {
		t.Error("gateway handed out")
	}
	// Concurrent release of everything.
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Release(fmt.Sprintf("pod-%d", i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if l := a.List(); len(l) != 0 {
		t.Errorf("after releasing all, List() = %v", l)
	}
}

func TestCIDR(t *testing.T) {
	for _, s := range []string{"10.0.0.0/24", "fd00:1::/112"} {
		a := mustNew(t, s, &MemStore{})
		if got := a.CIDR().String(); got != s {
			t.Errorf("CIDR() = %s, want %s", got, s)
		}
	}
}

func BenchmarkAllocateRelease(b *testing.B) {
	for _, tc := range []struct {
		name  string
		store func(b *testing.B) Store
	}{
		{"mem", func(*testing.B) Store { return &MemStore{} }},
		{"file", func(b *testing.B) Store { return NewFileStore(filepath.Join(b.TempDir(), "ipam.json")) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			a := mustNew(b, "10.0.0.0/16", tc.store(b))
			for i := range 200 { // a realistically busy node
				mustAllocate(b, a, fmt.Sprintf("bg-%d", i))
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				owner := fmt.Sprintf("p-%d", i)
				if _, err := a.Allocate(owner); err != nil {
					b.Fatal(err)
				}
				if err := a.Release(owner); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestFileStoreEmptyPath(t *testing.T) {
	if _, err := New(mustCIDR(t, "10.0.0.0/24"), NewFileStore("")); err == nil || !strings.Contains(err.Error(), "path is empty") {
		t.Fatalf("New with an empty state file path = %v", err)
	}
}

func TestGatewayOf(t *testing.T) {
	tests := []struct{ cidr, want string }{
		{"10.244.1.0/24", "10.244.1.1"},
		{"10.244.1.7/24", "10.244.1.1"}, // not masked: the network's gateway
		{"10.128.0.0/10", "10.128.0.1"},
		{"fd00:10:244:1::/64", "fd00:10:244:1::1"},
	}
	for _, tt := range tests {
		ip, n, _ := net.ParseCIDR(tt.cidr)
		n.IP = ip.Mask(n.Mask)
		if tt.cidr == "10.244.1.7/24" {
			n.IP = ip.To4()
		}
		if got := GatewayOf(n); got.String() != tt.want {
			t.Errorf("GatewayOf(%s) = %v, want %s", tt.cidr, got, tt.want)
		}
		// The Allocator of the node agrees.
		a, err := New(n, &MemStore{})
		if err != nil {
			t.Fatalf("New(%s): %v", tt.cidr, err)
		}
		if !a.Gateway().Equal(GatewayOf(n)) {
			t.Errorf("New(%s).Gateway() = %v; GatewayOf says %v", tt.cidr, a.Gateway(), GatewayOf(n))
		}
	}
	if GatewayOf(nil) != nil {
		t.Error("GatewayOf(nil) is not nil")
	}
}
