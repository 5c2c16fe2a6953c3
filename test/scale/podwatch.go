package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// podWatch follows the generated pods' IPs: when the harness first saw each
// pod with an IP (for the new-pod latency, which starts when the pod's IP is
// in the API) and how many have one (for convergence).
type podWatch struct {
	factory informers.SharedInformerFactory
	cancel  context.CancelFunc

	mu    sync.Mutex
	ips   map[string]string    // namespace/name → pod IP
	seen  map[string]time.Time // namespace/name → when its IP was first seen
	cond  *sync.Cond
	count int
}

func startPodWatch(ctx context.Context, c kubernetes.Interface) (*podWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	f := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = ScaleLabel + "=true"
	}))
	w := &podWatch{factory: f, cancel: cancel, ips: map[string]string{}, seen: map[string]time.Time{}}
	w.cond = sync.NewCond(&w.mu)
	inf := f.Core().V1().Pods().Informer()
	// Only the IP matters here; 30,000 full pods would cost the harness
	// (on the same 2 cores) more than it needs.
	if err := inf.SetTransform(func(obj any) (any, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, ResourceVersion: p.ResourceVersion},
				Status: corev1.PodStatus{PodIP: p.Status.PodIP}}, nil
		}
		return obj, nil
	}); err != nil {
		cancel()
		return nil, err
	}
	update := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		key := p.Namespace + "/" + p.Name
		w.mu.Lock()
		defer w.mu.Unlock()
		old := w.ips[key]
		switch {
		case p.Status.PodIP != "" && old == "":
			w.count++
			w.seen[key] = time.Now()
		case p.Status.PodIP == "" && old != "":
			w.count--
			delete(w.seen, key)
		}
		if p.Status.PodIP == "" {
			delete(w.ips, key)
		} else {
			w.ips[key] = p.Status.PodIP
		}
		w.cond.Broadcast()
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj any) { update(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				p.Status.PodIP = ""
				update(p)
			}
		},
	}); err != nil {
		cancel()
		return nil, err
	}
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			w.stop()
			return nil, fmt.Errorf("pod watch: %v did not sync", typ)
		}
	}
	return w, nil
}

// stop ends the watch and waits for its goroutines.
func (w *podWatch) stop() {
	w.cancel()
	w.factory.Shutdown()
}

// ip returns the pod's IP and when it was first seen.
func (w *podWatch) ip(key string) (string, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ips[key], w.seen[key]
}

// waitIP waits until key has an IP.
func (w *podWatch) waitIP(key string, timeout time.Duration) (string, time.Time, error) {
	return w.waitCond(timeout, func() bool { return w.ips[key] != "" }, func() error {
		return fmt.Errorf("pod %s has no IP after %v", key, timeout)
	}, key)
}

// waitCount waits until at least n pods have an IP.
func (w *podWatch) waitCount(n int, timeout time.Duration, progress func(have int)) error {
	last := time.Now()
	_, _, err := w.waitCond(timeout, func() bool {
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			progress(w.count)
		}
		return w.count >= n
	}, func() error { return fmt.Errorf("%d of %d pods have an IP after %v", w.count, n, timeout) }, "")
	return err
}

func (w *podWatch) waitCond(timeout time.Duration, ok func() bool, fail func() error, key string) (string, time.Time, error) {
	deadline := time.Now().Add(timeout)
	// Wake the waiter periodically so it notices the deadline.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				w.mu.Lock()
				w.cond.Broadcast()
				w.mu.Unlock()
			}
		}
	}()
	w.mu.Lock()
	defer w.mu.Unlock()
	for !ok() {
		if time.Now().After(deadline) {
			return "", time.Time{}, fail()
		}
		w.cond.Wait()
	}
	return w.ips[key], w.seen[key], nil
}
