package agent

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/agentapi"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
	"github.com/weirnet/weir/pkg/policy"
	"github.com/weirnet/weir/pkg/proxy"
	"github.com/weirnet/weir/pkg/unixctl"
)

// PeerNodes returns the installed peers, sorted by name (for the tooling
// API's traces and flow filters).
func (c *NodeController) PeerNodes() []pipeline.PeerNode {
	names := c.Peers()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]pipeline.PeerNode, 0, len(names))
	for _, n := range names {
		if p, ok := c.installed[n]; ok {
			out = append(out, p)
		}
	}
	return out
}

// apiDeps are what the tooling API reads from a running agent.
type apiDeps struct {
	cfg Config
	// alloc, cidr and gwIP are the primary family's (IPv4, else IPv6 on
	// an IPv6-only node); alloc6, cidr6 and gwIP6 a dual-stack node's IPv6
	// ones (nil otherwise).
	alloc  *ipam.Allocator
	cidr   *net.IPNet
	gwIP   net.IP
	alloc6 *ipam.Allocator
	cidr6  *net.IPNet
	gwIP6  net.IP
	gwMAC  net.HardwareAddr
	gwPort int
	tun    int
	db     *ovsdb.Client
	sw     *openflow.Switch
	pipe   *pipeline.Pipeline
	ifaces *interfacestore.Store
	nc     *NodeController    // nil in standalone mode
	polc   *policy.Controller // nil in standalone mode
	proxyc *proxy.Controller  // nil unless the Service proxy runs
	ready  func() (bool, string)
	// staleGroupsGone, with the proxy on, returns once the earlier runs'
	// Service groups are deleted (after the stale flows), so the audit does
	// not count them as orphans before.
	staleGroupsGone func(context.Context) error
}

// serveAPI serves the operator tooling API (pkg/agentapi) until ctx ends;
// it returns when it stopped. A failure is logged: the API is not worth
// stopping the node's networking for.
func serveAPI(ctx context.Context, d apiDeps, log klog.Logger) {
	deps := agentapi.Deps{Switch: d.sw, Pipeline: d.pipe, Pods: d.ifaces, OVSDB: d.db,
		Unixctl: unixctl.New(d.cfg.OVSRunDir, "ovs-vswitchd")}
	if d.nc != nil {
		deps.Peers = d.nc
	}
	if d.polc != nil {
		deps.Isolation = d.polc
	}
	if d.proxyc != nil {
		// All three or none: ListServices, and traces through Services.
		deps.Services, deps.ServiceGroups, deps.Groups = d.proxyc, d.pipe, d.sw
	}
	deps.Audit = auditSources(d)
	api := agentapi.New(agentapi.Config{NodeName: d.cfg.NodeName, Bridge: d.cfg.Bridge, DatapathType: d.cfg.DatapathType,
		PodCIDR: d.cidr, PodCIDRv6: d.cidr6, GatewayName: d.cfg.GatewayName, GatewayIP: d.gwIP, GatewayIPv6: d.gwIP6, GatewayMAC: d.gwMAC, GatewayOFPort: uint32(d.gwPort),
		TunnelOFPort: uint32(d.tun), OVSDBEndpoint: d.cfg.OVSDBEndpoint, MgmtSocket: d.cfg.MgmtSocket(), Ready: d.ready,
		Logger: log}, deps)
	err := api.Serve(ctx, agentapi.ServeConfig{UnixSocket: d.cfg.APISocketPath(), TCPAddress: d.cfg.APITCPAddress,
		TLSCertFile: d.cfg.APITLSCertFile, TLSKeyFile: d.cfg.APITLSKeyFile})
	if err != nil && ctx.Err() == nil {
		log.Error(err, "Agent API stopped")
	}
}

// connReady reports the agent ready for the tooling API's AgentInfo once
// it serves CNI (the API starts then) while both OVS connections are up.
func connReady(sw *openflow.Switch, db *ovsdb.Client) (bool, string) {
	switch {
	case sw.State() != openflow.StateReady:
		return false, "the OpenFlow connection to ovs-vswitchd is " + sw.State().String()
	case !db.Connected():
		return false, "the OVSDB connection is down"
	}
	return true, ""
}

// auditSources are what the tooling API's Audit reads (pkg/agentapi,
// audit.go).
func auditSources(d apiDeps) agentapi.AuditSources {
	src := agentapi.AuditSources{Flows: d.sw, IPAM: allocations{d.alloc},
		Kernel: nodeKernel{gateway: d.cfg.GatewayName},
		// Every cookie the pipeline makes carries this run's round.
		Round: d.pipe.PolicyRuleCookie(0).Round()}
	if d.alloc6 != nil {
		src.IPAMv6 = allocations{d.alloc6}
	}
	if d.proxyc != nil {
		src.Groups = d.sw
	}
	if d.nc != nil {
		// Run removes the earlier rounds' flows once both controllers
		// have synced (removeStaleFlows); the few milliseconds that
		// removal takes after the sync are not covered.
		src.InitialSyncDone = func() bool {
			return syncedNow(d.nc.WaitForInitialSync) && syncedNow(d.polc.WaitSynced) && (d.staleGroupsGone == nil || syncedNow(d.staleGroupsGone))
		}
		src.Kube = kubePods{client: d.nc.cfg.Client, node: d.cfg.NodeName}
	}
	return src
}

// syncedNow reports whether wait returns at once. The wait is bounded by
// a short timeout rather than an expired context, because a select
// between a closed "synced" channel and a done context picks either.
func syncedNow(wait func(context.Context) error) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	return wait(ctx) == nil
}

// allocations adapts the running IPAM allocator (the one the CNI server
// allocates from) to the audit.
type allocations struct{ alloc *ipam.Allocator }

func (a allocations) Allocations(context.Context) (map[string]net.IP, error) {
	return a.alloc.List(), nil
}

// nodeKernel reads the node's network namespace (the agent's own).
type nodeKernel struct{ gateway string }

func (k nodeKernel) PodVeths(context.Context) ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []string
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() == "veth" && strings.HasPrefix(name, podnet.HostIfPrefix) { // the audit checks the rest of the name
			out = append(out, name)
		}
	}
	return out, nil
}

// GatewayRoutes returns Weir's peer routes (nodenet.ListPeerRoutes), not
// every route through the gateway: routes an administrator added are not
// the audit's business.
func (k nodeKernel) GatewayRoutes(context.Context) ([]agentapi.Route, error) {
	routes, err := nodenet.ListPeerRoutes(k.gateway)
	if err != nil {
		return nil, err
	}
	out := make([]agentapi.Route, len(routes))
	for i, r := range routes {
		out[i] = agentapi.Route{Dst: r.Dst, Via: r.Via, Dev: k.gateway}
	}
	return out, nil
}

// GatewayRoutesV6 returns Weir's IPv6 peer routes
// (nodenet.ListPeerRoutesV6), destinations only: their next hop is not
// read back, so the audit does not compare it.
func (k nodeKernel) GatewayRoutesV6(context.Context) ([]agentapi.Route, error) {
	dsts, err := nodenet.ListPeerRoutesV6(k.gateway)
	if err != nil {
		return nil, err
	}
	out := make([]agentapi.Route, len(dsts))
	for i, dst := range dsts {
		out[i] = agentapi.Route{Dst: dst, Dev: k.gateway}
	}
	return out, nil
}

// kubePods checks attachments against the API server (a live read, not
// an informer's cache), with the Pod controller's rule (staleAgainst).
type kubePods struct {
	client kubernetes.Interface
	node   string
}

func (k kubePods) StaleAttachments(ctx context.Context, atts []interfacestore.Interface) (map[string]string, int, error) {
	list, err := k.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", k.node).String()})
	if err != nil {
		return nil, 0, fmt.Errorf("listing the Pods of node %s: %w", k.node, err)
	}
	pods := make(map[string]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		pods[p.Namespace+"/"+p.Name] = p
	}
	stale := map[string]string{}
	for _, att := range atts {
		if att.PodName == "" || att.PodNamespace == "" {
			continue // not created by a kubelet
		}
		pod, ok := pods[att.PodNamespace+"/"+att.PodName]
		if !ok { // gone, or a pod of that name on another node
			pod, err = k.client.CoreV1().Pods(att.PodNamespace).Get(ctx, att.PodName, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				stale[att.Key()] = "the pod does not exist"
				continue
			}
			if err != nil {
				return nil, 0, fmt.Errorf("reading Pod %s/%s: %w", att.PodNamespace, att.PodName, err)
			}
		}
		if reason := staleAgainst(att, pod, k.node); reason != "" {
			stale[att.Key()] = reason
		}
	}
	return stale, len(list.Items), nil
}
