package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/pkg/pipeline"
)

const (
	// keySync is queued once the informers have synced, so the first batch
	// exists (and WaitSynced returns) even in a cluster without Services.
	keySync = "\x00sync"
	// sliceIndex indexes the EndpointSlice informer by the namespace/name
	// of the Service a slice belongs to (its kubernetes.io/service-name).
	sliceIndex = "weir.proxy/service"

	// Retry bounds after a failed ApplyServices or health check listen.
	retryBase = 200 * time.Millisecond
	retryMax  = 30 * time.Second
	// isolateAfter is how many Services of a failed batch are applied one
	// by one before giving up on the batch: one Service the realizer
	// refuses must not hold back every other change, but when the switch
	// is gone every call fails and trying each Service would only add
	// calls.
	isolateAfter = 3
)

// ControllerConfig configures a Controller.
type ControllerConfig struct {
	// Client reaches the API server: list and watch on services and
	// endpointslices (discovery.k8s.io).
	Client kubernetes.Interface
	// Informers is the agent's shared informer factory
	// (kubecache.NewFactory, whose transform slims Services and
	// EndpointSlices to what this controller reads); its owner starts it
	// once every controller has registered its informers, and shuts it
	// down. Nil gives the controller a factory of its own, which Run
	// starts and shuts down.
	Informers informers.SharedInformerFactory
	// NodeName is this node: endpoints whose nodeName it is are local
	// (traffic policies Local, the health check, hints for nodes).
	NodeName string
	// Zone is this node's topology.kubernetes.io/zone label ("" if it has
	// none: zone hints are then not used); SetZone changes it.
	Zone string
	// IPFamilies are the families the node serves Services in; nil means
	// IPv4 and IPv6. A Service's port yields one ServicePort per family it
	// has a cluster IP of, among these.
	IPFamilies []corev1.IPFamily
	// Realizer receives the ServicePorts (the pipeline).
	Realizer pipeline.ServiceRealizer
	// DisableHealthCheck turns off serving healthCheckNodePorts (another
	// component, e.g. kube-proxy in coexistence mode, serves them).
	DisableHealthCheck bool
	// HealthCheckAddresses are the node addresses the health check
	// servers listen on, each family's servers on the addresses of that
	// family; nil means 0.0.0.0 and :: (every address, as kube-proxy).
	HealthCheckAddresses []netip.Addr
	// Recorder, if set, records a Warning Event on a Service whose health
	// check cannot listen.
	Recorder record.EventRecorder
	// Logger receives structured logs.
	Logger klog.Logger
	// Observer, if set, is told about every batch that had work to do.
	Observer Observer
}

// Observer receives the controller's batches. It is called on the worker
// goroutine, so it must be cheap.
type Observer interface {
	// ServiceSync reports one ApplyServices call (or the batch's failure):
	// its duration (computation and ApplyServices), the ServicePorts
	// realized afterwards and the error, if any.
	ServiceSync(d time.Duration, servicePorts int, err error)
}

// Stats describe the controller's work so far.
type Stats struct {
	Batches      int // ApplyServices calls that succeeded
	Failures     int // ApplyServices calls that failed
	Upserts      int // ServicePorts sent as upserts
	Deletes      int // ServicePorts sent as deleted
	Services     int // Services with a ServicePort realized now
	ServicePorts int // ServicePorts realized now
}

// Controller keeps the realizer's Services in line with the cluster's
// Services and EndpointSlices: the shared informers feed one workqueue
// keyed by Service (an EndpointSlice event queues its Service); a single
// worker drains it in batches, recomputes the queued Services and sends
// only the ServicePorts that changed, in one ApplyServices call per batch.
type Controller struct {
	cfg        ControllerConfig
	factory    informers.SharedInformerFactory
	ownFactory bool
	svcLister  corelisters.ServiceLister
	slices     cache.Indexer
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]
	families   []corev1.IPFamily
	health     *healthServer // nil when disabled
	log        klog.Logger

	mu      sync.Mutex
	zone    string
	applied map[string]serviceState // by Service namespace/name; written by the worker
	stats   Stats
	failing bool          // the last ApplyServices failed
	synced1 chan struct{} // closed after the first complete apply
}

// NewController creates the controller and registers its informers; Run
// starts it.
func NewController(cfg ControllerConfig) (*Controller, error) {
	if cfg.Client == nil || cfg.Realizer == nil || cfg.NodeName == "" {
		return nil, errors.New("proxy controller: client, realizer and node name are required")
	}
	families := cfg.IPFamilies
	if families == nil {
		families = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}
	for _, f := range families {
		if f != corev1.IPv4Protocol && f != corev1.IPv6Protocol {
			return nil, fmt.Errorf("proxy controller: unknown IP family %q", f)
		}
	}
	for _, a := range cfg.HealthCheckAddresses {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			return nil, fmt.Errorf("proxy controller: health check address %v is not a plain IPv4 or IPv6 address", a)
		}
	}
	factory, own := cfg.Informers, false
	if factory == nil {
		factory, own = kubecache.NewFactory(cfg.Client), true
	}
	svcs := factory.Core().V1().Services()
	eps := factory.Discovery().V1().EndpointSlices()
	c := &Controller{
		cfg: cfg, factory: factory, ownFactory: own, svcLister: svcs.Lister(), families: families,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryBase, retryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "services"}),
		log:     cfg.Logger.WithName("proxy"),
		zone:    cfg.Zone,
		applied: map[string]serviceState{},
		synced1: make(chan struct{}),
	}
	if !cfg.DisableHealthCheck {
		c.health = newHealthServer(c.log.WithName("healthcheck"), cfg.HealthCheckAddresses, c.healthy)
	}
	sliceInf := eps.Informer()
	if _, ok := sliceInf.GetIndexer().GetIndexers()[sliceIndex]; !ok {
		if err := sliceInf.AddIndexers(cache.Indexers{sliceIndex: sliceServiceIndex}); err != nil {
			return nil, fmt.Errorf("proxy controller: indexing EndpointSlices by Service: %w", err)
		}
	}
	c.slices = sliceInf.GetIndexer()

	svcReg, err := svcs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueService,
		UpdateFunc: func(_, obj any) { c.enqueueService(obj) },
		DeleteFunc: c.enqueueService,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy controller: registering Service event handlers: %w", err)
	}
	sliceReg, err := sliceInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueSlice,
		UpdateFunc: func(old, obj any) {
			// A slice relabelled to another Service leaves the first.
			c.enqueueSlice(old)
			c.enqueueSlice(obj)
		},
		DeleteFunc: c.enqueueSlice,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy controller: registering EndpointSlice event handlers: %w", err)
	}
	for kind, inf := range map[string]cache.SharedIndexInformer{"Service": svcs.Informer(), "EndpointSlice": sliceInf} {
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			c.log.Info("Listing or watching failed; retrying", "kind", kind, "err", err)
		}); err != nil {
			return nil, fmt.Errorf("proxy controller: %w", err)
		}
	}
	// The registrations' HasSynced (not the informers'): the first batch
	// must hold every Service of the initial lists, which this
	// controller's handlers have queued only when these return true.
	c.synced = []cache.InformerSynced{svcReg.HasSynced, sliceReg.HasSynced}
	return c, nil
}

// sliceServiceIndex indexes an EndpointSlice by its Service's key.
func sliceServiceIndex(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{es.Namespace + "/" + name}, nil
}

func (c *Controller) enqueueService(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		c.log.Error(err, "Ignoring a Service event without a usable key")
		return
	}
	c.queue.Add(key)
}

func (c *Controller) enqueueSlice(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	keys, _ := sliceServiceIndex(obj)
	for _, k := range keys {
		c.queue.Add(k)
	}
}

// SetZone changes this node's zone (its topology.kubernetes.io/zone
// label) and recomputes every Service if it changed: zone hints select
// endpoints by it.
func (c *Controller) SetZone(zone string) {
	c.mu.Lock()
	changed := c.zone != zone
	c.zone = zone
	c.mu.Unlock()
	if !changed {
		return
	}
	c.log.Info("Node zone changed; recomputing Services", "zone", zone)
	svcs, err := c.svcLister.List(labels.Everything())
	if err != nil {
		c.log.Error(err, "Listing Services from the cache")
		return
	}
	for _, svc := range svcs {
		c.enqueueService(svc)
	}
}

// WaitSynced waits until the first complete set of Services has been
// applied.
func (c *Controller) WaitSynced(ctx context.Context) error {
	select {
	case <-c.synced1:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the first Service sync: %w", ctx.Err())
	}
}

// Services returns the ServicePorts as last applied, sorted by key (a
// copy: for tooling, e.g. weirctl get services).
func (c *Controller) Services() []pipeline.ServicePort {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []pipeline.ServicePort
	for _, st := range c.applied {
		for _, p := range st.ports {
			out = append(out, clonePort(p))
		}
	}
	slices.SortFunc(out, func(a, b pipeline.ServicePort) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// HealthCheckPorts returns the healthCheckNodePort served for each Service
// (namespace/name) that has one open; nil when health checks are off.
func (c *Controller) HealthCheckPorts() map[string]uint16 {
	if c.health == nil {
		return nil
	}
	return c.health.ports()
}

// Stats returns the controller's counters.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// healthy is the health check's serviceProxyHealthy: the first sync is
// done and the last ApplyServices succeeded.
func (c *Controller) healthy() bool {
	select {
	case <-c.synced1:
	default:
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.failing
}

// Run starts the informers (of its own factory; a shared one is started
// by its owner), applies every Service once they have synced, then applies
// changes until ctx ends. It closes the health check servers on return.
func (c *Controller) Run(ctx context.Context) {
	if c.ownFactory {
		defer c.factory.Shutdown()
	}
	defer c.queue.ShutDown()
	if c.health != nil {
		defer c.health.closeAll()
	}
	start := time.Now()
	if c.ownFactory {
		c.factory.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	c.log.Info("Service informers synced", "took", time.Since(start).Round(time.Millisecond))
	c.queue.Add(keySync)
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for c.processBatch(ctx) {
	}
}

// change is one Service's computed state and its difference to what is
// applied.
type change struct {
	key     string
	state   serviceState
	upserts []pipeline.ServicePort
	deleted []string
}

// processBatch takes one key (blocking), then every key queued meanwhile,
// computes those Services and applies what changed. It returns false when
// the queue shut down.
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
	slices.Sort(keys) // deterministic calls and logs
	start := time.Now()
	c.mu.Lock()
	topo := topology{node: c.cfg.NodeName, zone: c.zone}
	c.mu.Unlock()
	full := false
	var changes []change
	for _, k := range keys {
		if k == keySync {
			full = true
			continue
		}
		changes = append(changes, c.compute(k, topo))
	}
	failed := c.apply(ctx, changes, start)
	if c.health != nil {
		for _, ch := range changes {
			if failed[ch.key] {
				continue
			}
			if err := c.health.sync(ch.key, ch.state.hc); err != nil {
				failed[ch.key] = true
				c.log.Error(err, "Serving a health check failed; retrying", "service", ch.key)
				c.event(ch.key, err)
			}
		}
	}
	for _, k := range keys {
		if failed[k] || (k == keySync && len(failed) > 0) {
			c.queue.AddRateLimited(k)
		} else {
			c.queue.Forget(k)
		}
		c.queue.Done(k)
	}
	if full && len(failed) == 0 {
		select {
		case <-c.synced1:
		default:
			c.mu.Lock()
			st := c.stats
			c.mu.Unlock()
			close(c.synced1)
			c.log.Info("Services synced", "services", st.Services, "servicePorts", st.ServicePorts,
				"took", time.Since(start).Round(time.Millisecond))
		}
	}
	return true
}

// compute recomputes the Service named key and diffs it against what is
// applied.
func (c *Controller) compute(key string, topo topology) change {
	ch := change{key: key}
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	svc, err := c.svcLister.Services(ns).Get(name)
	if err != nil {
		svc = nil
	}
	var eslices []*discoveryv1.EndpointSlice
	if svc != nil {
		objs, err := c.slices.ByIndex(sliceIndex, key)
		if err != nil {
			c.log.Error(err, "Looking up EndpointSlices", "service", key)
		}
		for _, o := range objs {
			if es, ok := o.(*discoveryv1.EndpointSlice); ok {
				eslices = append(eslices, es)
			}
		}
		// Deterministic: which of two copies of an endpoint (moving
		// between slices) wins depends on the order.
		slices.SortFunc(eslices, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	}
	ch.state = computeService(svc, eslices, c.families, topo)
	c.mu.Lock()
	old := c.applied[key]
	c.mu.Unlock()
	for k, p := range ch.state.ports {
		if o, ok := old.ports[k]; !ok || !equalPort(o, p) {
			ch.upserts = append(ch.upserts, p)
		}
	}
	for k := range old.ports {
		if _, ok := ch.state.ports[k]; !ok {
			ch.deleted = append(ch.deleted, k)
		}
	}
	slices.SortFunc(ch.upserts, func(a, b pipeline.ServicePort) int { return cmp.Compare(a.Key, b.Key) })
	slices.Sort(ch.deleted)
	return ch
}

// apply realizes the changes in one ApplyServices call and commits them;
// if that fails and more than one Service changed, it applies them one by
// one (up to isolateAfter failures in a row), so that one Service the
// realizer refuses does not hold back the others. It returns the Services
// not realized.
func (c *Controller) apply(ctx context.Context, changes []change, start time.Time) map[string]bool {
	var pending []change
	for _, ch := range changes {
		if len(ch.upserts) > 0 || len(ch.deleted) > 0 {
			pending = append(pending, ch)
		} else {
			c.commit(ch)
		}
	}
	failed := map[string]bool{}
	if len(pending) == 0 {
		return failed
	}
	err := c.call(ctx, pending, start)
	if err == nil {
		return failed
	}
	if ctx.Err() != nil || len(pending) == 1 {
		for _, ch := range pending {
			failed[ch.key] = true
		}
		if ctx.Err() == nil {
			c.log.Error(err, "Applying Services failed; retrying", "service", pending[0].key)
		}
		return failed
	}
	c.log.Error(err, "Applying Services failed; applying them one by one", "services", len(pending))
	inRow := 0
	for i, ch := range pending {
		if inRow >= isolateAfter || ctx.Err() != nil {
			for _, rest := range pending[i:] {
				failed[rest.key] = true
			}
			break
		}
		if err := c.call(ctx, []change{ch}, time.Now()); err != nil {
			failed[ch.key] = true
			inRow++
			if ctx.Err() == nil {
				c.log.Error(err, "Applying a Service failed; retrying", "service", ch.key)
			}
			continue
		}
		inRow = 0
	}
	return failed
}

// call sends the changes in one ApplyServices call and commits them if it
// succeeds.
func (c *Controller) call(ctx context.Context, changes []change, start time.Time) (err error) {
	var upserts []pipeline.ServicePort
	var deleted []string
	for _, ch := range changes {
		upserts = append(upserts, ch.upserts...)
		deleted = append(deleted, ch.deleted...)
	}
	if o := c.cfg.Observer; o != nil {
		defer func() {
			c.mu.Lock()
			n := c.stats.ServicePorts
			c.mu.Unlock()
			o.ServiceSync(time.Since(start), n, err)
		}()
	}
	err = c.cfg.Realizer.ApplyServices(ctx, upserts, deleted)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.stats.Failures++
		c.failing = true
		return fmt.Errorf("applying %d ServicePorts and deleting %d: %w", len(upserts), len(deleted), err)
	}
	c.failing = false
	c.stats.Batches++
	c.stats.Upserts += len(upserts)
	c.stats.Deletes += len(deleted)
	for _, ch := range changes {
		c.commitLocked(ch)
	}
	c.log.V(2).Info("Services applied", "upserts", len(upserts), "deletes", len(deleted),
		"services", len(changes), "took", time.Since(start))
	return nil
}

func (c *Controller) commit(ch change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commitLocked(ch)
}

func (c *Controller) commitLocked(ch change) {
	old := c.applied[ch.key]
	c.stats.ServicePorts += len(ch.state.ports) - len(old.ports)
	switch {
	case len(old.ports) == 0 && len(ch.state.ports) > 0:
		c.stats.Services++
	case len(old.ports) > 0 && len(ch.state.ports) == 0:
		c.stats.Services--
	}
	if len(ch.state.ports) == 0 && ch.state.hc.port == 0 {
		delete(c.applied, ch.key)
		return
	}
	c.applied[ch.key] = ch.state
}

// event records a Warning Event on the Service named key.
func (c *Controller) event(key string, err error) {
	if c.cfg.Recorder == nil {
		return
	}
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	ref := &corev1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: ns, Name: name}
	c.cfg.Recorder.Event(ref, corev1.EventTypeWarning, "FailedToStartServiceHealthcheck",
		fmt.Sprintf("node %s: %v", c.cfg.NodeName, err))
}
