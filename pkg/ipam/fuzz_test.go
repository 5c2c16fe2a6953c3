package ipam

import (
	"errors"
	"fmt"
	"net"
	"testing"
)

// FuzzAllocateRelease drives an Allocator on a /28 (13 pod addresses, so
// exhaustion is reached) with a byte-coded sequence of Allocate, Release and
// restart operations, against a simple reference model of round-robin
// allocation. It checks that no address is ever handed out twice, that the
// network, gateway and broadcast addresses are never handed out, and that
// every result is the one the model predicts.
//
// Each input byte is one operation: the high two bits select it (0, 1:
// Allocate; 2: Release; 3: restart from the store when the owner bits are
// 15, else Lookup), the low four bits select one of 16 owners.
func FuzzAllocateRelease(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0x02, 0x81, 0x03})
	f.Add([]byte{0x00, 0x80, 0x00, 0x80, 0x00})
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0x85, 15, 0xff, 0x46, 14})
	f.Add([]byte{0, 1, 2, 0xff, 0x81, 3, 0xff, 4, 0xc1})

	f.Fuzz(func(t *testing.T, ops []byte) { runOps(t, ops) })
}

const (
	fuzzCIDR  = "10.20.30.32/28"
	fuzzFirst = 2  // offset of the first pod address (.34)
	fuzzLast  = 14 // offset of the last pod address (.46)
)

// runOps runs one byte-coded operation sequence (see FuzzAllocateRelease).
func runOps(t *testing.T, ops []byte) {
	const first, last, cidr = fuzzFirst, fuzzLast, fuzzCIDR
	_, ipnet, _ := net.ParseCIDR(cidr)
	base := ipnet.IP.To4()
	offsetOf := func(ip net.IP) int {
		v4 := ip.To4()
		if v4 == nil || !ipnet.Contains(v4) {
			return -1
		}
		return int(v4[3] - base[3])
	}

	store := &MemStore{}
	a, err := New(ipnet, store)
	if err != nil {
		t.Fatal(err)
	}
	// Reference model.
	owners := map[string]int{} // owner -> offset
	used := map[int]string{}   // offset -> owner
	recent := -1

	for i, b := range ops {
		owner := fmt.Sprintf("owner-%d", b&0x0f)
		switch b >> 6 {
		case 0, 1:
			ip, err := a.Allocate(owner)
			if off, ok := owners[owner]; ok {
				if err != nil || offsetOf(ip) != off {
					t.Fatalf("op %d: repeated Allocate(%s) = %v, %v; want offset %d", i, owner, ip, err, off)
				}
				break
			}
			if len(used) == last-first+1 {
				if !errors.Is(err, ErrExhausted) {
					t.Fatalf("op %d: Allocate(%s) on a full range = %v, %v", i, owner, ip, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("op %d: Allocate(%s): %v", i, owner, err)
			}
			// Round-robin: the first free offset after the most
			// recently allocated one, wrapping.
			want := recent
			for {
				want++
				if want < first || want > last {
					want = first
				}
				if _, u := used[want]; !u {
					break
				}
			}
			got := offsetOf(ip)
			if got < first || got > last {
				t.Fatalf("op %d: Allocate(%s) = %s: not a pod address of %s", i, owner, ip, cidr)
			}
			if prev, dup := used[got]; dup {
				t.Fatalf("op %d: Allocate(%s) = %s, already owned by %s", i, owner, ip, prev)
			}
			if got != want {
				t.Fatalf("op %d: Allocate(%s) = offset %d, want %d", i, owner, got, want)
			}
			owners[owner], used[got], recent = got, owner, got
		case 2:
			if err := a.Release(owner); err != nil {
				t.Fatalf("op %d: Release(%s): %v", i, owner, err)
			}
			if off, ok := owners[owner]; ok {
				delete(used, off)
				delete(owners, owner)
			}
		case 3:
			if b&0x0f == 0x0f {
				if a, err = New(ipnet, store); err != nil {
					t.Fatalf("op %d: restart: %v", i, err)
				}
				break
			}
			ip, ok := a.Lookup(owner)
			off, want := owners[owner]
			if ok != want || (ok && offsetOf(ip) != off) {
				t.Fatalf("op %d: Lookup(%s) = %v, %v; model has %d, %v", i, owner, ip, ok, off, want)
			}
		}
		// Full-state invariants.
		list := a.List()
		if len(list) != len(owners) {
			t.Fatalf("op %d: List() has %d entries, model %d", i, len(list), len(owners))
		}
		seen := map[string]string{}
		for o, ip := range list {
			if prev, dup := seen[ip.String()]; dup {
				t.Fatalf("op %d: %s owned by %s and %s", i, ip, prev, o)
			}
			seen[ip.String()] = o
			if off := offsetOf(ip); off != owners[o] {
				t.Fatalf("op %d: %s has %s, model offset %d", i, o, ip, owners[o])
			}
		}
	}
}
