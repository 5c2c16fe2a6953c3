package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/pkg/pipeline"
)

// Realizer applies a policy change atomically (a *pipeline.Pipeline).
type Realizer interface {
	ApplyPolicy(ctx context.Context, c pipeline.PolicyChange) error
}

// PodPorts looks up the OpenFlow port of a local pod's primary interface
// (the node's *interfacestore.Store).
type PodPorts interface {
	PodOFPort(namespace, name string) (uint32, bool)
}

// Queue keys: a kind prefix and the object's key.
const (
	kindPod       = "pod/"
	kindNamespace = "ns/"
	kindPolicy    = "np/"
	keySync       = "sync"
)

// Retry bounds after a failed ApplyPolicy.
const (
	retryBase = 200 * time.Millisecond
	retryMax  = 30 * time.Second
)

// ControllerConfig configures a Controller.
type ControllerConfig struct {
	// Client reaches the API server: list and watch on pods, namespaces
	// and networkpolicies; create and patch on events.
	Client kubernetes.Interface
	// Informers is the agent's shared informer factory
	// (kubecache.NewFactory), whose owner starts it once every controller
	// has registered its informers, and shuts it down. Nil gives the
	// controller a factory of its own, which Run starts and shuts down.
	Informers informers.SharedInformerFactory
	// NodeName is this node; its pods are the targets.
	NodeName string
	// Realizer receives the changes (the pipeline).
	Realizer Realizer
	// Ports gives the OpenFlow ports of local pods (the CNI server); call
	// Controller.PodPortChanged when one appears or disappears.
	Ports PodPorts
	// Recorder records Events on policies; nil creates one that writes
	// to the API server.
	Recorder record.EventRecorder
	// Logger receives structured logs.
	Logger klog.Logger
	// Observer, if set, is told about every sync that had work to do (for
	// metrics, see pkg/metrics).
	Observer Observer
}

// Observer receives the controller's syncs. It is called on the worker
// goroutine, so it must be cheap.
type Observer interface {
	// PolicySync reports one batch realized (or failed): its duration
	// (model computation and ApplyPolicy), the rules realized afterwards
	// and the error, if any.
	PolicySync(d time.Duration, rules int, err error)
}

// Stats describe the controller's work so far.
type Stats struct {
	Batches  int // ApplyPolicy calls that succeeded
	Failures int // ApplyPolicy calls that failed
	Upserts  int // rules upserted
	Deletes  int // rules deleted
	Rules    int // rules realized now
}

// Controller keeps the realizer's policy in line with the cluster's
// NetworkPolicies for the local pods: shared informers on Pods, Namespaces
// and NetworkPolicies feed one workqueue; a single worker drains it in
// batches, recomputes only the affected policies and applies the
// difference in one ApplyPolicy call per batch.
type Controller struct {
	cfg         ControllerConfig
	factory     informers.SharedInformerFactory
	ownFactory  bool // factory is the controller's own: Run starts and shuts it down
	podLister   corelisters.PodLister
	nsLister    corelisters.NamespaceLister
	npLister    networkinglisters.NetworkPolicyLister
	synced      []cache.InformerSynced
	queue       workqueue.TypedRateLimitingInterface[string]
	broadcaster record.EventBroadcaster
	log         klog.Logger

	model *Model // only the worker touches it

	// isoMu is held from the start of an apply until isolated matches it,
	// so a trace that saw the new drop flows also sees their policies
	// (without it, TestToolingPolicyDrop saw a DROP naming no policy).
	isoMu    sync.Mutex
	isolated map[pipeline.Direction]map[uint32][]string // Model.IsolationIndex after the last commit

	mu       sync.Mutex
	stats    Stats
	warned   map[string]int64 // policy UID -> generation already warned about
	synced1  chan struct{}    // closed after the first successful apply
	syncOnce sync.Once
}

// NewController creates the controller; Run starts it.
func NewController(cfg ControllerConfig) (*Controller, error) {
	if cfg.Client == nil || cfg.Realizer == nil || cfg.Ports == nil || cfg.NodeName == "" {
		return nil, errors.New("policy controller: client, realizer, ports and node name are required")
	}
	factory, own := cfg.Informers, false
	if factory == nil {
		factory, own = kubecache.NewFactory(cfg.Client), true
	}
	pods := factory.Core().V1().Pods()
	nss := factory.Core().V1().Namespaces()
	nps := factory.Networking().V1().NetworkPolicies()
	c := &Controller{
		cfg: cfg, factory: factory, ownFactory: own, podLister: pods.Lister(), nsLister: nss.Lister(), npLister: nps.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryBase, retryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "networkpolicy"}),
		log:     cfg.Logger.WithName("policy"),
		model:   NewModel(cfg.NodeName),
		warned:  map[string]int64{},
		synced1: make(chan struct{}),
	}
	if c.cfg.Recorder == nil {
		c.broadcaster = record.NewBroadcaster()
		c.cfg.Recorder = c.broadcaster.NewRecorder(scheme.Scheme,
			corev1.EventSource{Component: "weir-agent", Host: cfg.NodeName})
	}
	// Pods are many: the factory's transform (kubecache.SlimPod) keeps
	// only what the model and the agent's Pod controller read.
	for _, reg := range []struct {
		kind string
		inf  cache.SharedIndexInformer
	}{{kindPod, pods.Informer()}, {kindNamespace, nss.Informer()}, {kindPolicy, nps.Informer()}} {
		kind := reg.kind
		enqueue := func(obj any) {
			key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			if err != nil {
				c.log.Error(err, "Ignoring an event without a usable key", "kind", kind)
				return
			}
			c.queue.Add(kind + key)
		}
		if _, err := reg.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    enqueue,
			UpdateFunc: func(_, obj any) { enqueue(obj) },
			DeleteFunc: enqueue,
		}); err != nil {
			return nil, fmt.Errorf("policy controller: registering event handlers: %w", err)
		}
		if err := reg.inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			c.log.Info("Listing or watching failed; retrying", "kind", strings.TrimSuffix(kind, "/"), "err", err)
		}); err != nil {
			return nil, fmt.Errorf("policy controller: %w", err)
		}
		c.synced = append(c.synced, reg.inf.HasSynced)
	}
	return c, nil
}

// PodPortChanged tells the controller that the OpenFlow port of a local
// pod appeared or disappeared (the CNI server added or deleted it).
func (c *Controller) PodPortChanged(namespace, name string) {
	c.queue.Add(kindPod + namespace + "/" + name)
}

// IsolatingPolicies returns the policies ("namespace/name") that isolate
// the local pod on ofport in dir, as last applied; safe for concurrent use.
func (c *Controller) IsolatingPolicies(ofport uint32, dir pipeline.Direction) []string {
	c.isoMu.Lock()
	defer c.isoMu.Unlock()
	return slices.Clone(c.isolated[dir][ofport])
}

// Stats returns the controller's counters.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// WaitSynced waits until the first complete policy has been applied.
func (c *Controller) WaitSynced(ctx context.Context) error {
	select {
	case <-c.synced1:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the first policy sync: %w", ctx.Err())
	}
}

// Run starts the informers (of its own factory; a shared one is started
// by its owner), applies the complete policy once they have synced, then
// applies changes until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	if c.ownFactory {
		defer c.factory.Shutdown()
	}
	defer c.queue.ShutDown()
	if c.broadcaster != nil {
		c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cfg.Client.CoreV1().Events("")})
		defer c.broadcaster.Shutdown()
	}
	start := time.Now()
	if c.ownFactory {
		c.factory.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	c.log.Info("Policy informers synced", "took", time.Since(start).Round(time.Millisecond))
	// The first batch holds everything the informers listed; this key
	// makes sure there is one even in an empty cluster.
	c.queue.Add(keySync)
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for c.processBatch(ctx) {
	}
}

// processBatch takes one key (blocking), then every key queued meanwhile,
// applies them to the model and realizes the difference. It returns false
// when the queue shut down.
func (c *Controller) processBatch(ctx context.Context) bool {
	first, quit := c.queue.Get()
	if quit {
		return false
	}
	keys := []string{first}
	for c.queue.Len() > 0 {
		k, quit := c.queue.Get()
		if quit {
			break
		}
		keys = append(keys, k)
	}
	start := time.Now()
	for _, k := range keys {
		c.update(k)
	}
	err := c.flush(ctx)
	for _, k := range keys {
		if err != nil {
			c.queue.AddRateLimited(k)
		} else {
			c.queue.Forget(k)
		}
		c.queue.Done(k)
	}
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error(err, "Applying the policy failed; retrying", "keys", len(keys))
		}
		return true
	}
	c.log.V(4).Info("Policy batch done", "keys", len(keys), "took", time.Since(start))
	return true
}

// update feeds the current state of one object into the model.
func (c *Controller) update(key string) {
	switch {
	case strings.HasPrefix(key, kindPod):
		k := strings.TrimPrefix(key, kindPod)
		ns, name, _ := cache.SplitMetaNamespaceKey(k)
		pod, err := c.podLister.Pods(ns).Get(name)
		if err != nil {
			pod = nil
		}
		var ofport uint32
		if pod != nil && pod.Spec.NodeName == c.cfg.NodeName {
			ofport, _ = c.cfg.Ports.PodOFPort(ns, name)
		}
		if n := c.model.SetPod(k, pod, ofport); n > 0 {
			c.log.V(4).Info("Pod change affects policies", "pod", k, "policies", n)
		}
	case strings.HasPrefix(key, kindNamespace):
		name := strings.TrimPrefix(key, kindNamespace)
		ns, err := c.nsLister.Get(name)
		if err != nil {
			ns = nil
		}
		c.model.SetNamespace(name, ns)
	case strings.HasPrefix(key, kindPolicy):
		k := strings.TrimPrefix(key, kindPolicy)
		nsName, name, _ := cache.SplitMetaNamespaceKey(k)
		np, err := c.npLister.NetworkPolicies(nsName).Get(name)
		if err != nil {
			np = nil
		}
		if err := c.model.SetPolicy(k, np); err != nil {
			// API validation makes this unreachable for stored objects.
			c.log.Error(err, "Ignoring a NetworkPolicy that cannot be compiled", "policy", k)
			c.event(np, corev1.EventTypeWarning, "PolicyInvalid", err.Error())
		}
	}
}

// applyAndCommit realizes plan and commits it to the model, then
// publishes the new isolation index; on failure the model is rolled back.
func (c *Controller) applyAndCommit(ctx context.Context, plan *Plan) error {
	c.isoMu.Lock()
	defer c.isoMu.Unlock()
	if !plan.Empty() {
		if err := c.cfg.Realizer.ApplyPolicy(ctx, plan.Change); err != nil {
			c.model.Abort(plan)
			return fmt.Errorf("applying policy change: %w", err)
		}
	}
	c.model.Commit(plan)
	c.isolated = c.model.IsolationIndex()
	return nil
}

// flush realizes the model's pending changes.
func (c *Controller) flush(ctx context.Context) (err error) {
	first := false
	select {
	case <-c.synced1:
	default:
		first = true
	}
	if c.model.Dirty() == 0 && !first {
		return nil
	}
	start := time.Now()
	if o := c.cfg.Observer; o != nil {
		defer func() { o.PolicySync(time.Since(start), c.model.Rules(), err) }()
	}
	plan, err := c.model.Compute()
	if err != nil {
		return err
	}
	computed := time.Since(start)
	if err := c.applyAndCommit(ctx, plan); err != nil {
		c.mu.Lock()
		c.stats.Failures++
		c.mu.Unlock()
		return err
	}
	for pk, ws := range plan.Warnings {
		c.warn(pk, ws)
	}
	c.mu.Lock()
	if !plan.Empty() {
		c.stats.Batches++
	}
	c.stats.Upserts += len(plan.Change.Upsert)
	c.stats.Deletes += len(plan.Change.Delete)
	c.stats.Rules = c.model.Rules()
	c.mu.Unlock()
	if first {
		c.syncOnce.Do(func() { close(c.synced1) })
		c.log.Info("Policy synced", "policies", len(c.model.policies), "rules", c.model.Rules(),
			"isolatedIngress", len(plan.Change.Isolation.Ingress), "isolatedEgress", len(plan.Change.Isolation.Egress),
			"compute", computed, "total", time.Since(start))
	} else if !plan.Empty() {
		c.log.V(2).Info("Policy changed", "upserts", len(plan.Change.Upsert), "deletes", len(plan.Change.Delete),
			"isolation", plan.Change.Isolation != nil, "compute", computed, "total", time.Since(start))
	}
	return nil
}

// warn reports a policy's problems once per policy generation: a log line
// and a Warning Event on the policy.
func (c *Controller) warn(policyKey string, warnings []string) {
	ns, name, _ := cache.SplitMetaNamespaceKey(policyKey)
	np, err := c.npLister.NetworkPolicies(ns).Get(name)
	if err != nil {
		return
	}
	c.mu.Lock()
	gen, done := c.warned[string(np.UID)]
	done = done && gen == np.Generation
	c.warned[string(np.UID)] = np.Generation
	c.mu.Unlock()
	if done {
		return
	}
	for _, w := range warnings {
		c.log.Info("NetworkPolicy partly ignored", "policy", policyKey, "reason", w)
		c.event(np, corev1.EventTypeWarning, "IPBlockExceptIgnored", w)
	}
}

func (c *Controller) event(np *networkingv1.NetworkPolicy, typ, reason, msg string) {
	if np == nil {
		return
	}
	ref := &corev1.ObjectReference{Kind: "NetworkPolicy", APIVersion: "networking.k8s.io/v1",
		Namespace: np.Namespace, Name: np.Name, UID: np.UID, ResourceVersion: np.ResourceVersion}
	c.cfg.Recorder.Event(ref, typ, reason, msg)
}
