package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/pipeline"
)

// Tuning of the Node controller.
const (
	// nodeWorkers is how many Nodes are reconciled at once.
	nodeWorkers = 2
	// nodeRetryBase and nodeRetryMax bound the per-Node exponential
	// backoff after a failed reconcile.
	nodeRetryBase = 100 * time.Millisecond
	nodeRetryMax  = 30 * time.Second
	// warmTimeout bounds warming the tunnel neighbour of one peer; a peer
	// that does not answer in time is still installed (OVS resolves the
	// address itself, dropping the first packet).
	warmTimeout = 2 * time.Second
	// neighbourWarmers bounds how many tunnel neighbours are warmed at
	// once. Warming runs beside the workers, never in them: a peer that
	// does not answer ARP held a worker for warmTimeout, and at issue 12's
	// S1 (100 simulated Nodes, none answering) the initial Node sync took
	// 100 s with 2 workers (now well under a second).
	neighbourWarmers = 8
)

// PeerPipeline is what the Node controller needs from the pipeline (a
// *pipeline.Pipeline).
type PeerPipeline interface {
	AddPeer(ctx context.Context, peer pipeline.PeerNode) error
	DeletePeer(ctx context.Context, name string) error
	// Peers names the peers with flows installed, sorted.
	Peers() []string
}

// PeerRoutes is the node-side half of a peer: the kernel route to its pod
// CIDR (one per family: EnsurePeerRoute and DeletePeerRoute take an IPv4
// or an IPv6 pod CIDR) and, with the userspace datapath, the tunnel
// neighbour warm-up. NodenetRoutes is the real implementation.
type PeerRoutes interface {
	EnsurePeerRoute(gatewayName string, podCIDR *net.IPNet, gatewayIP net.IP) error
	DeletePeerRoute(gatewayName string, podCIDR *net.IPNet) error
	WarmTunnelNeighbor(ctx context.Context, bridge string, nodeIP net.IP) error
	// ListPeerRoutes returns the destinations of the peer routes Weir
	// owns on the gateway (whoever installed them: this run or an
	// earlier one).
	ListPeerRoutes(gatewayName string) ([]*net.IPNet, error)
	// PruneNeighbours removes next-hop entries Weir pinned for peer routes
	// that no longer exist (an IPv6 route removed outside Weir), and says
	// how many.
	PruneNeighbours(gatewayName string) (int, error)
}

// NodenetRoutes implements PeerRoutes on the kernel's routing table with
// pkg/nodenet, in the network namespace of the calling thread (the agent
// runs in the node's); its routes carry nodenet.RouteProtocolWeir. An IPv6
// route's next hop (the peer's gateway IPv6) is pinned to
// pipeline.GlobalVirtualMAC: the pipeline cannot answer Neighbor Discovery
// for it (nodenet.EnsurePeerRouteV6).
type NodenetRoutes struct{}

// virtualMAC is pipeline.GlobalVirtualMAC parsed.
var virtualMAC = func() net.HardwareAddr {
	mac, err := net.ParseMAC(pipeline.GlobalVirtualMAC)
	if err != nil {
		panic(err) // a constant
	}
	return mac
}()

// EnsurePeerRoute calls nodenet.EnsurePeerRoute for an IPv4 pod CIDR and
// nodenet.EnsurePeerRouteV6 for an IPv6 one.
func (NodenetRoutes) EnsurePeerRoute(gw string, cidr *net.IPNet, gwIP net.IP) error {
	if isIPv6Net(cidr) {
		return nodenet.EnsurePeerRouteV6(gw, cidr, gwIP, virtualMAC)
	}
	return nodenet.EnsurePeerRoute(gw, cidr, gwIP)
}

// DeletePeerRoute calls nodenet.DeletePeerRoute for an IPv4 pod CIDR and
// nodenet.DeletePeerRouteV6 for an IPv6 one.
func (NodenetRoutes) DeletePeerRoute(gw string, cidr *net.IPNet) error {
	if isIPv6Net(cidr) {
		return nodenet.DeletePeerRouteV6(gw, cidr, virtualMAC)
	}
	return nodenet.DeletePeerRoute(gw, cidr)
}

// ListPeerRoutes returns the destinations of nodenet.ListPeerRoutes (IPv4)
// and of nodenet.ListPeerRoutesV6.
func (NodenetRoutes) ListPeerRoutes(gw string) ([]*net.IPNet, error) {
	routes, err := nodenet.ListPeerRoutes(gw)
	if err != nil {
		return nil, err
	}
	out := make([]*net.IPNet, len(routes))
	for i, r := range routes {
		out[i] = r.Dst
	}
	v6, err := nodenet.ListPeerRoutesV6(gw)
	return append(out, v6...), err
}

// PruneNeighbours calls nodenet.PruneNeighboursV6 (IPv4 next hops are
// answered by the pipeline's ARP responder and never pinned).
func (NodenetRoutes) PruneNeighbours(gw string) (int, error) {
	return nodenet.PruneNeighboursV6(gw, virtualMAC)
}

func isIPv6Net(n *net.IPNet) bool { return n != nil && n.IP.To4() == nil && len(n.Mask) == net.IPv6len }

// WarmTunnelNeighbor calls nodenet.WarmTunnelNeighbor.
func (NodenetRoutes) WarmTunnelNeighbor(ctx context.Context, bridge string, ip net.IP) error {
	return nodenet.WarmTunnelNeighbor(ctx, bridge, ip)
}

// NodeControllerConfig configures a NodeController.
type NodeControllerConfig struct {
	// Client reaches the API server; the agent needs list and watch on
	// nodes.
	Client kubernetes.Interface
	// Informers is the agent's shared informer factory
	// (kubecache.NewFactory, whose transform keeps only what this
	// controller reads of a Node: kubecache.SlimNode); its owner starts it
	// once every controller has registered its informers, and shuts it
	// down. Nil gives the controller a factory of its own, which Run starts
	// and shuts down.
	Informers informers.SharedInformerFactory
	// IPv6, when set, says this node has IPv6 pods (the pipeline has its
	// IPv6 configuration): peers with an IPv6 pod CIDR get it too. When
	// unset, a Pipeline with an IPv6Enabled() bool method is asked.
	IPv6 bool
	// IPv6Only says this node has IPv6 pods only (no IPv4 pod CIDR; it
	// implies IPv6): a peer needs an IPv6 pod CIDR, and its IPv4 one, if
	// any, is not used. Unset, a peer needs an IPv4 pod CIDR.
	IPv6Only bool
	// IPv6Underlay says the tunnel endpoints are IPv6: a peer's NodeIP is
	// its IPv6 InternalIP (peers with none are not peers yet). Unset, it is
	// the peer's IPv4 InternalIP. Mixed underlays are not supported: Geneve
	// over IPv6 costs 20 bytes more (nodenet.PodMTUFor), so the pod MTU is
	// chosen for one underlay family.
	IPv6Underlay bool
	// LocalNode is this node's name: it is never a peer, its InternalIP is
	// the local tunnel endpoint (logged only).
	LocalNode string
	// Pipeline receives the peers' flows.
	Pipeline PeerPipeline
	// Routes installs the peers' kernel routes; NodenetRoutes if nil.
	Routes PeerRoutes
	// GatewayName is the local gateway interface the peer routes use.
	GatewayName string
	// UnderlayBridge, when set (userspace datapath with an underlay), is
	// the bridge on which each new peer's tunnel neighbour is warmed.
	UnderlayBridge string
	// Logger receives structured logs.
	Logger klog.Logger
}

// NodeController keeps the overlay in step with the cluster's Nodes: every
// other Node with a pod CIDR and an InternalIP becomes a tunnel peer
// (pipeline flows and a kernel route); a deleted Node, or one that lost
// either, stops being one, and a changed pod CIDR or node IP replaces the
// peer. Node events go through a rate-limited work queue keyed by Node
// name, so a failed reconcile is retried with per-Node exponential backoff
// and a Node is never reconciled by two workers at once.
type NodeController struct {
	cfg        NodeControllerConfig
	factory    informers.SharedInformerFactory
	ownFactory bool // factory is the controller's own: Run starts and shuts it down
	informer   cache.SharedIndexInformer
	lister     corelisters.NodeLister
	queue      workqueue.TypedRateLimitingInterface[string]
	log        klog.Logger

	mu        sync.Mutex
	installed map[string]pipeline.PeerNode // peers whose flows and route are in place
	localIP   net.IP                       // last logged local tunnel endpoint
	// pending holds the Nodes of the informer's initial list not yet
	// reconciled successfully; nil before the informer synced. synced is
	// closed once it is empty.
	pending map[string]struct{}
	synced  chan struct{}
	// gcDone is closed once the garbage collection after the initial
	// sync has run successfully.
	gcDone chan struct{}
	// warmSlots bounds the concurrent neighbour warm-ups (neighbourWarmers);
	// warmers counts the running ones, which Run waits for.
	warmSlots chan struct{}
	warmers   sync.WaitGroup

	// netMu makes a peer's route changes and its entry in installed one
	// step, so that ResyncPeers never re-adds the route of a peer being
	// removed or changed.
	netMu sync.Mutex
}

// NewNodeController creates the controller; Run starts it.
func NewNodeController(cfg NodeControllerConfig) (*NodeController, error) {
	if cfg.Client == nil || cfg.Pipeline == nil || cfg.GatewayName == "" {
		return nil, errors.New("node controller: client, pipeline and gateway name are required")
	}
	if cfg.Routes == nil {
		cfg.Routes = NodenetRoutes{}
	}
	if v6, ok := cfg.Pipeline.(interface{ IPv6Enabled() bool }); ok && !cfg.IPv6 {
		cfg.IPv6 = v6.IPv6Enabled()
	}
	if cfg.IPv6Only {
		cfg.IPv6 = true
	}
	factory, own := cfg.Informers, false
	if factory == nil {
		factory, own = kubecache.NewFactory(cfg.Client), true
	}
	nodes := factory.Core().V1().Nodes()
	c := &NodeController{
		cfg:        cfg,
		factory:    factory,
		ownFactory: own,
		informer:   nodes.Informer(),
		lister:     nodes.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](nodeRetryBase, nodeRetryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodes"}),
		log:       cfg.Logger.WithName("nodes"),
		installed: map[string]pipeline.PeerNode{},
		synced:    make(chan struct{}),
		gcDone:    make(chan struct{}),
		warmSlots: make(chan struct{}, neighbourWarmers),
	}
	enqueue := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			c.log.Error(err, "Ignoring a Node event without a usable key")
			return
		}
		c.queue.Add(key)
	}
	if _, err := c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			if ok1 && ok2 && !peerFieldsChanged(o, n) {
				return // e.g. a kubelet heartbeat
			}
			enqueue(newObj)
		},
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, fmt.Errorf("node controller: registering event handlers: %w", err)
	}
	if err := c.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		c.log.Info("Listing or watching Nodes failed; retrying", "err", err)
	}); err != nil {
		return nil, fmt.Errorf("node controller: %w", err)
	}
	return c, nil
}

// peerFieldsChanged reports whether an update touches what makes a Node a
// peer: its pod CIDRs or addresses.
func peerFieldsChanged(o, n *corev1.Node) bool {
	return o.Spec.PodCIDR != n.Spec.PodCIDR || !slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs) ||
		!slices.Equal(o.Status.Addresses, n.Status.Addresses)
}

// Run starts the informer (of its own factory; a shared one is started by
// its owner) and the workers and blocks until ctx ends; it then stops them.
// Peers stay installed (the flows and routes keep forwarding while the
// agent restarts).
func (c *NodeController) Run(ctx context.Context) {
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
	initial := c.informer.GetStore().ListKeys()
	c.log.Info("Node informer synced", "nodes", len(initial), "took", time.Since(start).Round(time.Millisecond))
	c.mu.Lock()
	c.pending = make(map[string]struct{}, len(initial))
	for _, name := range initial {
		c.pending[name] = struct{}{}
	}
	c.mu.Unlock()
	c.markReconciled("", start) // closes synced at once when there are no Nodes
	var gc sync.WaitGroup
	defer c.warmers.Wait()
	defer gc.Wait() // before the informer and the queue shut down
	gc.Go(func() { c.collectGarbageAfterSync(ctx, start) })
	runWorkers(ctx, nodeWorkers, c.queue, c.processNext)
}

// collectGarbageAfterSync waits for the initial sync, then removes what
// Nodes that no longer exist left behind (collectGarbage), retrying with
// backoff until it succeeds or ctx ends.
func (c *NodeController) collectGarbageAfterSync(ctx context.Context, start time.Time) {
	if c.WaitForInitialSync(ctx) != nil {
		return
	}
	_, err := retryWithBackoff(ctx, nodeRetryBase, nodeRetryMax, time.Time{}, func(ctx context.Context) error {
		routes, peers, err := c.collectGarbage(ctx)
		if err == nil {
			c.log.Info("Garbage of deleted Nodes collected", "routesRemoved", routes, "peersQueued", peers,
				"afterStart", time.Since(start).Round(time.Millisecond))
		}
		return err
	}, func(err error, attempt int, retryIn time.Duration) {
		c.log.Error(err, "Collecting the garbage of deleted Nodes failed; retrying", "attempt", attempt, "retryIn", retryIn)
	})
	if err == nil {
		close(c.gcDone)
	}
}

// WaitForGarbageCollection blocks until the garbage collection after the
// initial sync has run successfully, or ctx ends.
func (c *NodeController) WaitForGarbageCollection(ctx context.Context) error {
	select {
	case <-c.gcDone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the Node controller's garbage collection: %w", ctx.Err())
	}
}

// collectGarbage removes what Nodes that no longer exist left behind:
//
//   - the peer routes Weir owns on the gateway (PeerRoutes.ListPeerRoutes,
//     both families) whose destination is the pod CIDR of no current Node
//     nor installed peer (an IPv6 one only counts on a dual-stack node): routes of Nodes deleted while the agent was down (the informer
//     never tells about those, and the route outlives the agent), or of a
//     pod CIDR changed while it was down;
//   - peers with flows in the pipeline but no Node: they are queued, and
//     the worker's sync removes them (removePeer deletes the flows even of
//     a peer that never became installed), serialized with any event for
//     the same name. The earlier runs' peer flows go with their round
//     (removeStaleFlows); these are the current round's, e.g. of a Node
//     that vanished while its peer was being added.
//
// It holds netMu, which every route change of a peer also holds after
// reading the Node from the cache: a route installed before the snapshot
// below belongs to a Node in it, one installed after cannot be listed.
func (c *NodeController) collectGarbage(ctx context.Context) (routesRemoved, peersQueued int, err error) {
	pipePeers := c.cfg.Pipeline.Peers() // before the Nodes: see above
	c.netMu.Lock()
	defer c.netMu.Unlock()
	nodes, err := c.lister.List(labels.Everything())
	if err != nil {
		return 0, 0, fmt.Errorf("listing Nodes from the informer cache: %w", err)
	}
	names := make(map[string]struct{}, len(nodes))
	keep := map[string]struct{}{}
	for _, n := range nodes {
		names[n.Name] = struct{}{}
		if cidrs, err := NodePodCIDRs(n); err == nil {
			if cidrs.IPv4 != nil && !c.cfg.IPv6Only {
				keep[cidrs.IPv4.String()] = struct{}{}
			}
			if cidrs.IPv6 != nil && c.cfg.IPv6 {
				keep[cidrs.IPv6.String()] = struct{}{}
			}
		}
	}
	c.mu.Lock()
	for _, p := range c.installed {
		if p.PodCIDR != nil {
			keep[p.PodCIDR.String()] = struct{}{}
		}
		if p.PodCIDRv6 != nil {
			keep[p.PodCIDRv6.String()] = struct{}{}
		}
	}
	c.mu.Unlock()
	routes, err := c.cfg.Routes.ListPeerRoutes(c.cfg.GatewayName)
	if err != nil {
		return 0, 0, err
	}
	var errs []error
	for _, dst := range routes {
		if _, ok := keep[dst.String()]; ok {
			continue
		}
		if err := c.cfg.Routes.DeletePeerRoute(c.cfg.GatewayName, dst); err != nil {
			errs = append(errs, fmt.Errorf("removing the stale peer route to %v: %w", dst, err))
			continue
		}
		routesRemoved++
		c.log.Info("Removed the route of a Node that no longer exists", "podCIDR", dst.String(), "gateway", c.cfg.GatewayName)
	}
	// After the routes: a next hop whose route went, here or by hand.
	if n, err := c.cfg.Routes.PruneNeighbours(c.cfg.GatewayName); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		c.log.Info("Removed pinned next-hop neighbour entries no peer route uses", "count", n, "gateway", c.cfg.GatewayName)
	}
	for _, name := range pipePeers {
		if _, ok := names[name]; !ok {
			c.queue.Add(name)
			peersQueued++
		}
	}
	return routesRemoved, peersQueued, errors.Join(errs...)
}

// WaitForInitialSync blocks until every Node of the informer's initial
// list has been reconciled successfully once (so every current peer has its
// flows, installed anew, and its route), or ctx ends. The agent removes the
// previous run's flows only then, so an agent restart does not interrupt
// cross-node traffic.
func (c *NodeController) WaitForInitialSync(ctx context.Context) error {
	select {
	case <-c.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the Node controller's initial sync: %w", ctx.Err())
	}
}

// markReconciled notes that Node name was reconciled successfully; once
// every Node of the initial list was, the initial sync is complete.
func (c *NodeController) markReconciled(name string, start time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		return // the informer has not synced yet
	}
	delete(c.pending, name)
	if len(c.pending) == 0 {
		select {
		case <-c.synced:
		default:
			close(c.synced)
			c.log.Info("Initial Node sync complete", "peers", len(c.installed), "took", time.Since(start).Round(time.Millisecond))
		}
	}
}

// ResyncPeers re-creates the node-side state of every installed peer that a
// restarted ovs-vswitchd may have lost: the kernel route through the
// gateway (with the userspace datapath the gateway is a tap device of
// ovs-vswitchd, so its routes can go with it) and the tunnel neighbour in
// OVS's userspace cache. The peers' flows are not touched: the OpenFlow
// layer replays them. It returns the routing errors; warm-up failures are
// only logged (as for a new peer).
func (c *NodeController) ResyncPeers(ctx context.Context) error {
	c.mu.Lock()
	names := make([]string, 0, len(c.installed))
	for name := range c.installed {
		names = append(names, name)
	}
	c.mu.Unlock()
	slices.Sort(names)
	var errs []error
	var warm []pipeline.PeerNode
	for _, name := range names {
		c.netMu.Lock()
		c.mu.Lock()
		p, ok := c.installed[name]
		c.mu.Unlock()
		if ok {
			if err := c.ensureRoutes(p); err != nil {
				errs = append(errs, fmt.Errorf("restoring the routes of peer %s: %w", name, err))
			} else {
				warm = append(warm, p)
			}
		}
		c.netMu.Unlock()
	}
	var wg sync.WaitGroup
	for _, p := range warm {
		wg.Go(func() { c.warm(ctx, p) })
	}
	wg.Wait()
	c.log.Info("Peer routes and tunnel neighbours restored", "peers", len(warm), "failed", len(errs))
	return errors.Join(errs...)
}

// Peers returns the names of the installed peers, sorted.
func (c *NodeController) Peers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.installed))
	for name := range c.installed {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// processNext reconciles one queued Node; false once the queue shuts down.
func (c *NodeController) processNext(ctx context.Context) bool {
	name, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(name)
	start := time.Now()
	if err := c.sync(ctx, name); err != nil {
		if ctx.Err() != nil {
			return true
		}
		retries := c.queue.NumRequeues(name)
		c.log.Error(err, "Reconciling Node failed; will retry", "node", name, "retries", retries)
		c.queue.AddRateLimited(name)
		return true
	}
	c.queue.Forget(name)
	c.markReconciled(name, start)
	c.log.V(4).Info("Reconciled Node", "node", name, "took", time.Since(start))
	return true
}

// sync brings the peer for Node name in line with the Node object.
func (c *NodeController) sync(ctx context.Context, name string) error {
	node, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return c.removePeer(ctx, name, "Node deleted")
	}
	if err != nil {
		return fmt.Errorf("reading Node %s from the informer cache: %w", name, err)
	}
	if name == c.cfg.LocalNode {
		c.noteLocal(node)
		return nil
	}
	peer, reason, err := peerFromNode(node, c.local())
	if err != nil {
		// A malformed Node does not get better by retrying; its next
		// update is queued anyway.
		c.log.Error(err, "Node cannot be a tunnel peer", "node", name)
		return c.removePeer(ctx, name, "Node unusable")
	}
	if reason != "" {
		c.log.V(2).Info("Node is not a tunnel peer yet", "node", name, "reason", reason)
		return c.removePeer(ctx, name, reason)
	}
	return c.addPeer(ctx, peer)
}

// addPeer installs or updates peer: flows (replaced atomically), route
// (the old one removed first if the pod CIDR changed), neighbour warm-up.
func (c *NodeController) addPeer(ctx context.Context, peer pipeline.PeerNode) error {
	c.mu.Lock()
	old, had := c.installed[peer.Name]
	c.mu.Unlock()
	if had && samePeer(old, peer) {
		return nil
	}
	log := c.log.WithValues("node", peer.Name, "podCIDR", cidrString(peer.PodCIDR), "nodeIP", peer.NodeIP.String())
	if had && old.PodCIDR != nil && cidrString(old.PodCIDR) != cidrString(peer.PodCIDR) {
		if err := c.forgetPeer(peer.Name, old.PodCIDR, old.PodCIDRv6); err != nil {
			return fmt.Errorf("removing the old routes of peer %s to %v: %w", peer.Name, old.PodCIDR, err)
		}
		log.Info("Peer's pod CIDR changed; old routes removed", "oldPodCIDR", cidrString(old.PodCIDR))
	} else if had && old.PodCIDRv6 != nil && cidrString(old.PodCIDRv6) != cidrString(peer.PodCIDRv6) {
		if err := c.forgetPeer(peer.Name, old.PodCIDRv6); err != nil {
			return fmt.Errorf("removing the old route of peer %s to %v: %w", peer.Name, old.PodCIDRv6, err)
		}
		log.Info("Peer's IPv6 pod CIDR changed; old route removed", "oldPodCIDRv6", old.PodCIDRv6.String())
	}
	if err := c.cfg.Pipeline.AddPeer(ctx, peer); err != nil {
		return fmt.Errorf("installing the flows of peer %s: %w", peer.Name, err)
	}
	c.netMu.Lock()
	err := c.ensureRoutes(peer)
	if err == nil {
		c.mu.Lock()
		c.installed[peer.Name] = peer
		c.mu.Unlock()
	}
	c.netMu.Unlock()
	if err != nil {
		return fmt.Errorf("installing the route of peer %s: %w", peer.Name, err)
	}
	if !had || !old.NodeIP.Equal(peer.NodeIP) {
		c.warmLater(ctx, peer)
	}
	if had {
		log.Info("Tunnel peer updated", "oldPodCIDR", cidrString(old.PodCIDR), "oldNodeIP", old.NodeIP.String())
	} else {
		log.Info("Tunnel peer added", "gatewayIP", ipString(peer.GatewayIP), "podCIDRv6", cidrString(peer.PodCIDRv6))
	}
	return nil
}

// ensureRoutes installs peer's route per family it has a pod CIDR of
// (peerFromNode gives it only the families of this node).
func (c *NodeController) ensureRoutes(peer pipeline.PeerNode) error {
	if peer.PodCIDR != nil {
		if err := c.cfg.Routes.EnsurePeerRoute(c.cfg.GatewayName, peer.PodCIDR, peer.GatewayIP); err != nil {
			return err
		}
	}
	if peer.PodCIDRv6 != nil {
		return c.cfg.Routes.EnsurePeerRoute(c.cfg.GatewayName, peer.PodCIDRv6, peer.GatewayIPv6)
	}
	return nil
}

// deleteRoutes removes the routes to the given pod CIDRs (nil ones
// skipped), all of them even if one fails.
func (c *NodeController) deleteRoutes(cidrs ...*net.IPNet) error {
	var errs []error
	for _, cidr := range cidrs {
		if cidr == nil {
			continue
		}
		if err := c.cfg.Routes.DeletePeerRoute(c.cfg.GatewayName, cidr); err != nil {
			errs = append(errs, fmt.Errorf("route to %v: %w", cidr, err))
		}
	}
	return errors.Join(errs...)
}

// cidrString is n.String(), "" for nil.
func cidrString(n *net.IPNet) string {
	if n == nil {
		return ""
	}
	return n.String()
}

// ipString is ip.String(), "" for nil.
func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

// warmLater warms peer's tunnel neighbour (warm) in the background, so
// the worker that installed the peer goes on to the next Node; Run waits
// for it before returning.
func (c *NodeController) warmLater(ctx context.Context, peer pipeline.PeerNode) {
	if c.cfg.UnderlayBridge == "" {
		return
	}
	c.warmers.Go(func() { c.warm(ctx, peer) })
}

// warm warms peer's tunnel neighbour in one of the neighbourWarmers slots,
// within warmTimeout. A failure is only logged, not worth a retry: OVS
// resolves the address itself on the first packet (which it drops).
func (c *NodeController) warm(ctx context.Context, peer pipeline.PeerNode) {
	if c.cfg.UnderlayBridge == "" {
		return
	}
	select {
	case c.warmSlots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-c.warmSlots }()
	wctx, cancel := context.WithTimeout(ctx, warmTimeout)
	defer cancel()
	if err := c.cfg.Routes.WarmTunnelNeighbor(wctx, c.cfg.UnderlayBridge, peer.NodeIP); err != nil {
		c.log.Info("Could not warm the tunnel neighbour of the peer", "node", peer.Name, "nodeIP", peer.NodeIP.String(),
			"err", err)
	}
}

// removePeer removes peer name's flows and route if it has any. A peer
// that is not installed may still have flows, when its route failed after
// its flows were added (then the Node went): those are removed too.
func (c *NodeController) removePeer(ctx context.Context, name, reason string) error {
	c.mu.Lock()
	old, had := c.installed[name]
	c.mu.Unlock()
	if !had {
		if !slices.Contains(c.cfg.Pipeline.Peers(), name) {
			return nil
		}
		if err := c.cfg.Pipeline.DeletePeer(ctx, name); err != nil {
			return fmt.Errorf("removing the flows of peer %s: %w", name, err)
		}
		c.log.Info("Flows of a peer that was never fully installed removed", "node", name, "reason", reason)
		return nil
	}
	c.netMu.Lock()
	defer c.netMu.Unlock()
	if err := c.deleteRoutes(old.PodCIDR, old.PodCIDRv6); err != nil {
		return fmt.Errorf("removing the routes of peer %s: %w", name, err)
	}
	if err := c.cfg.Pipeline.DeletePeer(ctx, name); err != nil {
		return fmt.Errorf("removing the flows of peer %s: %w", name, err)
	}
	c.mu.Lock()
	delete(c.installed, name)
	c.mu.Unlock()
	c.log.Info("Tunnel peer removed", "node", name, "podCIDR", cidrString(old.PodCIDR), "podCIDRv6", cidrString(old.PodCIDRv6),
		"nodeIP", old.NodeIP.String(),
		"reason", reason)
	return nil
}

// forgetPeer removes the routes of peer name to podCIDRs and forgets the
// peer, so that a failure afterwards retries it from scratch.
func (c *NodeController) forgetPeer(name string, podCIDRs ...*net.IPNet) error {
	c.netMu.Lock()
	defer c.netMu.Unlock()
	if err := c.deleteRoutes(podCIDRs...); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.installed, name)
	c.mu.Unlock()
	return nil
}

// noteLocal logs this node's tunnel endpoint when it is first seen or
// changes.
func (c *NodeController) noteLocal(node *corev1.Node) {
	ip := NodeTunnelIP(node, c.cfg.IPv6Underlay)
	c.mu.Lock()
	changed := !ip.Equal(c.localIP)
	c.localIP = ip
	c.mu.Unlock()
	if changed {
		c.log.Info("Local tunnel endpoint", "node", node.Name, "nodeIP", ip.String())
	}
}

func samePeer(a, b pipeline.PeerNode) bool {
	return cidrString(a.PodCIDR) == cidrString(b.PodCIDR) && a.NodeIP.Equal(b.NodeIP) && a.GatewayIP.Equal(b.GatewayIP) &&
		cidrString(a.PodCIDRv6) == cidrString(b.PodCIDRv6) && a.GatewayIPv6.Equal(b.GatewayIPv6)
}

// localNet is what of this node decides which Nodes are its peers, and
// how: the families of its pods and of its underlay.
type localNet struct {
	ipv4, ipv6   bool // the node has pods of the family
	ipv6Underlay bool // tunnel endpoints are IPv6 InternalIPs
}

func (c *NodeController) local() localNet {
	return localNet{ipv4: !c.cfg.IPv6Only, ipv6: c.cfg.IPv6, ipv6Underlay: c.cfg.IPv6Underlay}
}

// peerFromNode returns the tunnel peer a Node describes, for a node whose
// pods and underlay are local. When the Node cannot be a peer yet (no pod
// CIDR of a family the peer needs, no InternalIP of the underlay's
// family), reason says why; err is for a Node whose pod CIDR is malformed.
//
// A peer has the pod CIDRs of the families both nodes have: an IPv4 or a
// dual-stack node needs the peer's IPv4 pod CIDR and takes its IPv6 one
// too if both are dual-stack; an IPv6-only node needs the peer's IPv6 pod
// CIDR. Pod traffic of every family goes over the one underlay: the
// peer's IPv4 InternalIP, or with ipv6Underlay its IPv6 one.
func peerFromNode(node *corev1.Node, local localNet) (peer pipeline.PeerNode, reason string, err error) {
	cidrs, err := NodePodCIDRs(node)
	if err != nil {
		return peer, "", fmt.Errorf("Node %s: %w", node.Name, err)
	}
	switch {
	case local.ipv4 && cidrs.IPv4 == nil:
		return peer, "no IPv4 pod CIDR in spec.podCIDRs", nil
	case !local.ipv4 && cidrs.IPv6 == nil:
		return peer, "no IPv6 pod CIDR in spec.podCIDRs (this node is IPv6-only)", nil
	}
	ip := NodeTunnelIP(node, local.ipv6Underlay)
	if ip == nil {
		family := "IPv4"
		if local.ipv6Underlay {
			family = "IPv6"
		}
		return peer, "no " + family + " InternalIP in status.addresses (the underlay is " + family + ")", nil
	}
	peer = pipeline.PeerNode{Name: node.Name, NodeIP: ip}
	if local.ipv4 {
		peer.PodCIDR, peer.GatewayIP = cidrs.IPv4, ipam.GatewayOf(cidrs.IPv4)
	}
	if local.ipv6 && cidrs.IPv6 != nil {
		peer.PodCIDRv6, peer.GatewayIPv6 = cidrs.IPv6, ipam.GatewayOf(cidrs.IPv6)
	}
	return peer, "", nil
}

// NodeInternalIP returns the first IPv4 InternalIP of node's
// status.addresses, nil if it has none.
func NodeInternalIP(node *corev1.Node) net.IP { return nodeInternalIP(node, false) }

// NodeTunnelIP returns node's tunnel endpoint: its first InternalIP of the
// underlay's family (IPv6 with ipv6Underlay, else IPv4), nil if it has none.
func NodeTunnelIP(node *corev1.Node, ipv6Underlay bool) net.IP {
	return nodeInternalIP(node, ipv6Underlay)
}

func nodeInternalIP(node *corev1.Node, ipv6 bool) net.IP {
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip := net.ParseIP(a.Address)
		switch {
		case ip == nil:
		case !ipv6 && ip.To4() != nil:
			return ip.To4()
		case ipv6 && ip.To4() == nil:
			return ip
		}
	}
	return nil
}

// runWorkers runs n workers, each calling process until it returns false
// (the queue was shut down); when ctx ends it shuts the queue down and
// waits for the workers.
func runWorkers(ctx context.Context, n int, queue interface{ ShutDown() }, process func(context.Context) bool) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for process(ctx) {
			}
		})
	}
	<-ctx.Done()
	queue.ShutDown()
	wg.Wait()
}
