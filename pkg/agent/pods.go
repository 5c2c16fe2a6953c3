package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/kubecache"
)

// Tuning of the Pod controller.
const (
	// DefaultPodReleaseGrace is how long after a Pod is deleted the agent
	// waits before releasing an interface the runtime has not removed
	// with CNI DEL. The kubelet normally calls DEL well within it; the
	// agent must not race it.
	DefaultPodReleaseGrace = 60 * time.Second
	// podWorkers is how many pods are reconciled at once.
	podWorkers = 1
	// podRetryBase and podRetryMax bound the per-pod backoff after a
	// failed release.
	podRetryBase = 500 * time.Millisecond
	podRetryMax  = 60 * time.Second
	// podGetTimeout bounds the API read that confirms a pod is gone.
	podGetTimeout = 10 * time.Second
)

// PodInterfaces is what the Pod controller needs: the node's pod
// interfaces to read (the *interfacestore.Store), and a way to release one
// exactly as a CNI DEL would (the *cniserver.Server).
type PodInterfaces interface {
	List() []interfacestore.Interface
}

// InterfaceReleaser releases a pod interface as a CNI DEL would (a
// *cniserver.Server).
type InterfaceReleaser interface {
	Release(ctx context.Context, key string) (bool, error)
}

// PodControllerConfig configures a PodController.
type PodControllerConfig struct {
	// Client reaches the API server; the agent needs list, watch and get
	// on pods.
	Client kubernetes.Interface
	// Informers is the agent's shared informer factory
	// (kubecache.NewFactory): its Pod informer holds every Pod of the
	// cluster (the policy model needs them all), of which this controller
	// looks only at those with spec.nodeName NodeName. Its owner starts it
	// once every controller has registered its informers, and shuts it
	// down. Nil gives the controller a factory of its own, which Run
	// starts and shuts down.
	Informers informers.SharedInformerFactory
	// NodeName is this node: only pods with spec.nodeName equal to it
	// matter.
	NodeName string
	// Interfaces are the pod interfaces of this node (its interface
	// store), and Releaser releases one (the CNI server).
	Interfaces PodInterfaces
	Releaser   InterfaceReleaser
	// GracePeriod is how long after a Pod delete event its interfaces
	// are released if still there, and how long the periodic re-check
	// must have found an interface's pod missing before it releases it;
	// 0 means DefaultPodReleaseGrace.
	GracePeriod time.Duration
	// RecheckInterval is how often every interface is re-checked against
	// the Pods while the controller runs; 0 means GracePeriod/2, so an
	// interface whose pod never existed is released between GracePeriod
	// and 1.5*GracePeriod after its ADD (its first sighting comes within
	// one interval, its release a grace period later).
	RecheckInterval time.Duration
	// Logger receives structured logs.
	Logger klog.Logger
}

// PodController frees the networking of pods that no longer exist but
// whose interfaces the runtime never removed: at start-up (pods deleted
// while the agent was down), after GracePeriod for pods deleted while it
// runs (normally the kubelet's CNI DEL comes first and there is nothing
// left to do), and at a periodic re-check (RecheckInterval) for any
// interface whose pod has been missing for GracePeriod. An interface is stale when its pod (namespace/name from
// CNI_ARGS) does not exist, or exists with a different UID when the
// interface recorded one (K8S_POD_UID), or now runs on another node.
// Interfaces without a pod name (not created by a kubelet) are never
// touched. Absence seen in the informer's cache is confirmed with a read
// from the API server before anything is released, and release is exactly
// a CNI DEL (flows, OVS port, veth, IP).
type PodController struct {
	cfg        PodControllerConfig
	factory    informers.SharedInformerFactory
	ownFactory bool // factory is the controller's own: Run starts and shuts it down
	informer   cache.SharedIndexInformer
	lister     corelisters.PodLister
	queue      workqueue.TypedRateLimitingInterface[string]
	log        klog.Logger

	initialOnce sync.Once
	initial     chan struct{} // closed after the start-up reconcile
	mu          sync.Mutex
	released    int // interfaces released so far
	// staleSince is when the periodic re-check first found each
	// interface (by key) without its pod. The CNI server records no
	// creation time for an attachment, so this is what keeps a fresh ADD,
	// whose Pod the informer may not have seen yet, from being released:
	// only an interface found stale for GracePeriod is.
	staleSince map[string]time.Time
}

// NewPodController creates the controller; Run starts it.
func NewPodController(cfg PodControllerConfig) (*PodController, error) {
	if cfg.Client == nil || cfg.Interfaces == nil || cfg.Releaser == nil || cfg.NodeName == "" {
		return nil, errors.New("pod controller: client, interfaces, releaser and node name are required")
	}
	if cfg.GracePeriod <= 0 {
		cfg.GracePeriod = DefaultPodReleaseGrace
	}
	if cfg.RecheckInterval <= 0 {
		cfg.RecheckInterval = cfg.GracePeriod / 2
	}
	// No spec.nodeName field selector: that would be a second list and
	// watch of Pods next to the policy controller's (which needs every
	// Pod); the handlers and lookups below filter by node instead.
	factory, own := cfg.Informers, false
	if factory == nil {
		factory, own = kubecache.NewFactory(cfg.Client), true
	}
	pods := factory.Core().V1().Pods()
	c := &PodController{
		cfg:        cfg,
		factory:    factory,
		ownFactory: own,
		informer:   pods.Informer(),
		lister:     pods.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](podRetryBase, podRetryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"}),
		log:        cfg.Logger.WithName("pods"),
		initial:    make(chan struct{}),
		staleSince: map[string]time.Time{},
	}
	// What the controller reads of a Pod is kept by the factory's
	// transform (kubecache.SlimPod).
	if _, err := c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if !c.mayBeLocal(obj) {
				return // another node's pod: no interface here
			}
			key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			if err != nil {
				c.log.Error(err, "Ignoring a Pod delete event without a usable key")
				return
			}
			c.log.V(2).Info("Pod deleted; checking its interfaces after the grace period", "pod", key,
				"grace", c.cfg.GracePeriod)
			c.queue.AddAfter(key, c.cfg.GracePeriod)
		},
	}); err != nil {
		return nil, fmt.Errorf("pod controller: registering event handlers: %w", err)
	}
	if err := c.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		c.log.Info("Listing or watching Pods failed; retrying", "err", err)
	}); err != nil {
		return nil, fmt.Errorf("pod controller: %w", err)
	}
	return c, nil
}

// mayBeLocal reports whether a deleted object (a Pod, or the tombstone of
// one) may have run on this node: false only for a Pod bound to another
// node or to none. A tombstone without a Pod is checked anyway (sync only
// touches this node's interfaces).
func (c *PodController) mayBeLocal(obj any) bool {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	return !ok || pod.Spec.NodeName == c.cfg.NodeName
}

// Run starts the informer (of its own factory; a shared one is started by
// its owner), reconciles every interface once the informer has synced, then
// handles Pod deletions until ctx ends.
func (c *PodController) Run(ctx context.Context) {
	if c.ownFactory {
		defer c.factory.Shutdown()
	}
	defer c.queue.ShutDown()
	start := time.Now()
	if c.ownFactory {
		c.factory.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return
	}
	c.log.Info("Pod informer synced", "podsInCluster", len(c.informer.GetStore().ListKeys()),
		"took", time.Since(start).Round(time.Millisecond))
	c.reconcileAll(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // before the informer and the queue shut down
	wg.Go(func() {
		t := time.NewTicker(c.cfg.RecheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.recheck(ctx)
			}
		}
	})
	runWorkers(ctx, podWorkers, c.queue, c.processNext)
}

// recheck is the periodic re-check: every interface whose pod the
// informer's cache says is gone (or is another pod now) and has said so
// for GracePeriod is released (after reconcile confirms it with the API
// server). It catches what the delete events miss: an ADD for a pod that
// never existed or was deleted before the ADD (a runtime that never calls
// DEL), and a delete event lost while the watch was down.
func (c *PodController) recheck(ctx context.Context) {
	now := time.Now()
	atts := c.cfg.Interfaces.List()
	seen := make(map[string]struct{}, len(atts))
	var due []interfacestore.Interface
	c.mu.Lock()
	for _, att := range atts {
		if att.PodName == "" || att.PodNamespace == "" {
			continue
		}
		seen[att.Key()] = struct{}{}
		if c.cachedStaleReason(att) == "" {
			delete(c.staleSince, att.Key())
			continue
		}
		since, ok := c.staleSince[att.Key()]
		if !ok {
			c.staleSince[att.Key()] = now
			c.log.V(2).Info("Interface without its pod; releasing it if that lasts the grace period", "pod",
				att.PodNamespace+"/"+att.PodName, "interface", att.Key(), "grace", c.cfg.GracePeriod)
			continue
		}
		// 1% less: the ticker fires a grace period after the first
		// sighting give or take microseconds, and being early by that
		// must not cost a whole extra interval (measured: with the
		// defaults the release came 120 s after the ADD instead of 90).
		if now.Sub(since) >= c.cfg.GracePeriod-c.cfg.GracePeriod/100 {
			due = append(due, att)
		}
	}
	for key := range c.staleSince {
		if _, ok := seen[key]; !ok {
			delete(c.staleSince, key) // released, or DEL'd by the runtime
		}
	}
	c.mu.Unlock()
	for _, att := range due {
		if _, err := c.reconcile(ctx, att, "periodic re-check"); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Error(err, "Releasing the interface of a missing pod failed; will retry at the next re-check", "pod",
				att.PodNamespace+"/"+att.PodName, "interface", att.Key())
		}
	}
}

// cachedStaleReason is staleReason from the informer's cache alone (no
// API read): cheap enough to run for every interface at every re-check.
func (c *PodController) cachedStaleReason(att interfacestore.Interface) string {
	pod, err := c.lister.Pods(att.PodNamespace).Get(att.PodName)
	if err != nil {
		return "the pod is not in the informer's cache"
	}
	return staleAgainst(att, pod, c.cfg.NodeName)
}

// WaitInitialReconcile waits until the start-up reconcile has run (or ctx
// ends).
func (c *PodController) WaitInitialReconcile(ctx context.Context) error {
	select {
	case <-c.initial:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the start-up pod reconcile: %w", ctx.Err())
	}
}

// Released returns how many interfaces the controller has released.
func (c *PodController) Released() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.released
}

// reconcileAll checks every interface against the synced cache; the
// release of pods whose check or release fails is retried through the
// queue.
func (c *PodController) reconcileAll(ctx context.Context) {
	defer c.initialOnce.Do(func() { close(c.initial) })
	start := time.Now()
	checked, released, failed := 0, 0, 0
	for _, att := range c.cfg.Interfaces.List() {
		if att.PodName == "" || att.PodNamespace == "" {
			continue
		}
		checked++
		ok, err := c.reconcile(ctx, att, "start-up")
		if err != nil {
			failed++
			c.log.Error(err, "Reconciling a pod interface at start-up failed; will retry", "pod",
				att.PodNamespace+"/"+att.PodName, "interface", att.Key())
			c.queue.AddRateLimited(att.PodNamespace + "/" + att.PodName)
			continue
		}
		if ok {
			released++
		}
	}
	c.log.Info("Start-up pod reconcile done", "checked", checked, "released", released, "failed", failed,
		"took", time.Since(start).Round(time.Millisecond))
}

// processNext handles one queued pod; false once the queue shuts down.
func (c *PodController) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		if ctx.Err() != nil {
			return true
		}
		c.log.Error(err, "Releasing the interfaces of a deleted pod failed; will retry", "pod", key,
			"retries", c.queue.NumRequeues(key))
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// sync reconciles every interface of pod key ("namespace/name").
func (c *PodController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // cannot be retried into shape
	}
	var errs []error
	for _, att := range c.cfg.Interfaces.List() {
		if att.PodNamespace != ns || att.PodName != name {
			continue
		}
		if _, err := c.reconcile(ctx, att, "pod deleted"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reconcile releases att if its pod is gone and reports whether it did.
func (c *PodController) reconcile(ctx context.Context, att interfacestore.Interface, trigger string) (bool, error) {
	reason, err := c.staleReason(ctx, att)
	if err != nil || reason == "" {
		return false, err
	}
	existed, err := c.cfg.Releaser.Release(ctx, att.Key())
	if err != nil {
		return false, err
	}
	if !existed {
		return false, nil // the runtime's DEL came first
	}
	c.mu.Lock()
	c.released++
	c.mu.Unlock()
	c.log.Info("Released the interface of a pod that is gone", "pod", att.PodNamespace+"/"+att.PodName,
		"container", att.ContainerID, "ifname", att.IfName, "ips", att.IPs, "hostIf", att.PortName,
		"reason", reason, "trigger", trigger)
	return true, nil
}

// staleReason says why att's pod is gone, "" if it is not. A pod missing
// from the informer's cache is looked up on the API server before it is
// declared gone, so a cache that lags behind never costs a live pod its
// network.
func (c *PodController) staleReason(ctx context.Context, att interfacestore.Interface) (string, error) {
	pod, err := c.lister.Pods(att.PodNamespace).Get(att.PodName)
	if apierrors.IsNotFound(err) {
		gctx, cancel := context.WithTimeout(ctx, podGetTimeout)
		pod, err = c.cfg.Client.CoreV1().Pods(att.PodNamespace).Get(gctx, att.PodName, metav1.GetOptions{})
		cancel()
		if apierrors.IsNotFound(err) {
			return "the pod does not exist", nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("reading Pod %s/%s: %w", att.PodNamespace, att.PodName, err)
	}
	return staleAgainst(att, pod, c.cfg.NodeName), nil
}

// staleAgainst says why att does not belong to pod, an existing Pod of
// the same namespace and name, or "" if it may.
func staleAgainst(att interfacestore.Interface, pod *corev1.Pod, nodeName string) string {
	if pod.Spec.NodeName != nodeName {
		// The kubelet only runs pods bound to its node: a pod of this
		// name elsewhere (or not yet scheduled) is a new one.
		return fmt.Sprintf("a pod of this name now has spec.nodeName %q", pod.Spec.NodeName)
	}
	if att.PodUID == "" {
		return "" // nothing recorded to compare; do not guess
	}
	uid := string(pod.UID)
	if m, ok := pod.Annotations[kubecache.MirrorPodAnnotation]; ok {
		uid = m // a static pod: the runtime knows its UID, not the mirror's
	}
	if uid != att.PodUID {
		return fmt.Sprintf("the pod was recreated (UID %s, interface recorded %s)", uid, att.PodUID)
	}
	return ""
}
