package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/agentapi"
	"github.com/weirnet/weir/pkg/cniserver"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
	"github.com/weirnet/weir/pkg/policy"
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
	cfg    Config
	cidr   *net.IPNet
	gwIP   net.IP
	gwMAC  net.HardwareAddr
	gwPort int
	tun    int
	db     *ovsdb.Client
	sw     *openflow.Switch
	pipe   *pipeline.Pipeline
	srv    *cniserver.Server
	nc     *NodeController    // nil in standalone mode
	polc   *policy.Controller // nil in standalone mode
	ready  func() (bool, string)
}

// serveAPI serves the operator tooling API (pkg/agentapi) until ctx ends;
// it returns when it stopped. A failure is logged: the API is not worth
// stopping the node's networking for.
func serveAPI(ctx context.Context, d apiDeps, log klog.Logger) {
	deps := agentapi.Deps{Switch: d.sw, Pipeline: d.pipe, Pods: d.srv, OVSDB: d.db,
		Unixctl: unixctl.New(d.cfg.OVSRunDir, "ovs-vswitchd")}
	if d.nc != nil {
		deps.Peers = d.nc
	}
	if d.polc != nil {
		deps.Isolation = d.polc
	}
	deps.Audit = auditSources(d)
	api := agentapi.New(agentapi.Config{NodeName: d.cfg.NodeName, Bridge: d.cfg.Bridge, DatapathType: d.cfg.DatapathType,
		PodCIDR: d.cidr, GatewayName: d.cfg.GatewayName, GatewayIP: d.gwIP, GatewayMAC: d.gwMAC, GatewayOFPort: uint32(d.gwPort),
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
	src := agentapi.AuditSources{Flows: d.sw, IPAM: ipamFile{path: filepath.Join(d.cfg.StateDir, ipamStateFile)},
		Kernel: nodeKernel{gateway: d.cfg.GatewayName},
		// Every cookie the pipeline makes carries this run's round.
		Round: d.pipe.PolicyRuleCookie(0).Round()}
	if d.nc != nil {
		// Run removes the earlier rounds' flows once both controllers
		// have synced (removeStaleFlows); the few milliseconds that
		// removal takes after the sync are not covered.
		src.InitialSyncDone = func() bool { return syncedNow(d.nc.WaitForInitialSync) && syncedNow(d.polc.WaitSynced) }
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

// ipamStateFile is the IPAM allocator's file in Config.StateDir (Run
// creates the allocator with it).
const ipamStateFile = "ipam.json"

// ipamFile reads the allocations from the IPAM state file. The allocator
// saves every change to it before the change becomes visible, so it holds
// exactly what the allocator holds. It is decoded here, read-only, because
// ipam.FileStore.Load has side effects (it removes temporary files, which
// could be a live Save's, and moves a corrupt file aside).
type ipamFile struct{ path string }

// ipamDoc is the part of ipam's state document (version 1) the audit reads.
type ipamDoc struct {
	Version     int               `json:"version"`
	Allocations map[string]string `json:"allocations"`
}

func (f ipamFile) Allocations(context.Context) (map[string]net.IP, error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]net.IP{}, nil // nothing allocated yet
	}
	if err != nil {
		return nil, fmt.Errorf("reading the IPAM state file: %w", err)
	}
	var doc ipamDoc
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("decoding the IPAM state file %s: %w", f.path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("IPAM state file %s: version %d, the audit reads version 1", f.path, doc.Version)
	}
	out := make(map[string]net.IP, len(doc.Allocations))
	for owner, s := range doc.Allocations {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("IPAM state file %s: owner %s has an invalid address %q", f.path, owner, s)
		}
		out[owner] = ip
	}
	return out, nil
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

func (k nodeKernel) GatewayRoutes(context.Context) ([]agentapi.Route, error) {
	link, err := netlink.LinkByName(k.gateway)
	if err != nil {
		return nil, fmt.Errorf("gateway interface %s: %w", k.gateway, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes through %s: %w", k.gateway, err)
	}
	var out []agentapi.Route
	for _, r := range routes {
		if r.Dst != nil && r.Gw != nil { // the pod CIDR's own route has no next hop
			out = append(out, agentapi.Route{Dst: r.Dst, Via: r.Gw, Dev: k.gateway})
		}
	}
	return out, nil
}

// kubePods checks attachments against the API server (a live read, not
// an informer's cache), with the Pod controller's rule (staleAgainst).
type kubePods struct {
	client kubernetes.Interface
	node   string
}

func (k kubePods) StaleAttachments(ctx context.Context, atts []cniserver.Attachment) (map[string]string, int, error) {
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
				stale[att.Key] = "the pod does not exist"
				continue
			}
			if err != nil {
				return nil, 0, fmt.Errorf("reading Pod %s/%s: %w", att.PodNamespace, att.PodName, err)
			}
		}
		if reason := staleAgainst(att, pod, k.node); reason != "" {
			stale[att.Key] = reason
		}
	}
	return stale, len(list.Items), nil
}
