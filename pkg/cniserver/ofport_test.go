package cniserver

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestOFPortAllocator(t *testing.T) {
	a := newOFPortAllocator()
	p1, _ := a.reserve("a")
	p2, _ := a.reserve("b")
	if p1 != firstPodOFPort || p2 != firstPodOFPort+1 {
		t.Fatalf("got %d, %d; want %d, %d", p1, p2, firstPodOFPort, firstPodOFPort+1)
	}
	if again, _ := a.reserve("a"); again != p1 {
		t.Fatalf("reserve is not idempotent: %d then %d", p1, again)
	}
	a.release("a")
	a.release("a") // releasing twice is harmless
	// Round-robin: the freed number is not reused at once.
	if p3, _ := a.reserve("c"); p3 == p1 {
		t.Fatalf("just-released port %d reused at once", p1)
	}
	// Ports found at restore are skipped.
	b := newOFPortAllocator()
	b.markUsed("gw", 2)
	b.markUsed("old", 3)
	if p, _ := b.reserve("new"); p != 4 {
		t.Fatalf("after restore of port 3, got %d, want 4", p)
	}
	// Exhaustion is an error, not a duplicate.
	c := newOFPortAllocator()
	for i := firstPodOFPort; i <= lastPodOFPort; i++ {
		c.markUsed(fmt.Sprintf("p%d", i), i)
	}
	if p, err := c.reserve("x"); err == nil {
		t.Fatalf("full allocator handed out %d", p)
	}
}

func TestKeyedMutexSerializesPerKey(t *testing.T) {
	var k keyedMutex
	k.m = map[string]*keyedEntry{}
	var mu sync.Mutex
	inside := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		key := []string{"a", "b"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := k.lock(key)
			defer unlock()
			mu.Lock()
			inside[key]++
			if inside[key] > 1 {
				t.Errorf("two holders of key %s at once", key)
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inside[key]--
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(k.m) != 0 {
		t.Fatalf("entries leak: %d left", len(k.m))
	}
}
