package cniserver

import (
	"sync"
	"testing"
	"time"
)

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
