package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/transport"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/cniserver"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/pkg/metrics"
	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
	"github.com/weirnet/weir/pkg/policy"
	"github.com/weirnet/weir/pkg/proxy"
)

// defaultMTU is the pod MTU without a tunnel, and the underlay MTU assumed
// when the underlay interface cannot be found.
const defaultMTU = 1500

// ovsdbInitTimeout bounds the wait for a new OVS database to be initialized
// by the OVS container started next to the agent.
const ovsdbInitTimeout = time.Minute

// Run starts the agent and serves until ctx ends. Start-up order: pod CIDR
// (from the config, or else from the Node object once it has one), OVSDB,
// bridge (with table names), underlay (netdev datapath with
// UnderlayInterface), pod MTU, gateway port and address, pod egress SNAT
// (nftables table ip weir, or its removal with snat: false), Geneve port
// (cluster mode), OpenFlow connection, base pipeline, IPAM, restore of
// existing pods, removal of the flows of every earlier run's cookie round
// (standalone mode), CNI readiness, and then, in cluster mode, the Node
// controller that installs the tunnel peers (CNI readiness does not wait
// for peers) and then removes the routes and flows of Nodes deleted while
// the agent was down, the removal of every earlier round's flows once the
// Node and policy controllers have re-installed the current peers and rules
// (so an agent restart does not interrupt cross-node traffic), and the Pod
// controller that frees the interfaces of pods deleted behind the
// runtime's back (at start-up and periodically). net.ipv4.ip_forward
// is set to 1 after the gateway. Before CNI readiness, and after every
// OpenFlow reconnect, flow-restore-wait is cleared so ovs-vswitchd forwards
// with the restored flows; after a reconnect (ovs-vswitchd restarted) the
// node networking it may have lost is restored first (nodeNetwork.Restore:
// underlay, gateway, peer routes).
func Run(ctx context.Context, cfg Config, log klog.Logger) error {
	runStart := time.Now() // weir_agent_initial_sync_seconds counts from here
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid agent config: %w", err)
	}
	// Metrics and health first: /healthz answers during start-up.
	mon := metrics.NewAgent()
	stopMetrics, err := mon.Start(ctx, cfg.MetricsAddress, log.WithName("metrics"))
	if err != nil {
		return err
	}
	defer stopMetrics()
	cidrs, err := podCIDRs(ctx, cfg, mon.WrapKubeTransport, log)
	if err != nil {
		return err
	}
	// The primary family's pod CIDR (IPv4, else IPv6 on an IPv6-only
	// node): its IPAM is the CNI server's first, its gateway address gives
	// the gateway's MAC.
	cidr := cidrs.Primary()
	start := time.Now() // the pod CIDR wait is logged on its own

	db, err := ovsdb.Connect(ctx, cfg.OVSDBEndpoint, log.WithName("ovsdb"), ovsdb.WithObserver(mon))
	if err != nil {
		return fmt.Errorf("connecting to OVSDB at %s: %w", cfg.OVSDBEndpoint, err)
	}
	defer db.Close()
	waitCtx, cancel := context.WithTimeout(ctx, ovsdbInitTimeout)
	err = db.WaitInitialized(waitCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("OVSDB at %s was not initialized (is ovs-vswitchd running?): %w", cfg.OVSDBEndpoint, err)
	}
	if _, err := db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: cfg.Bridge, DatapathType: cfg.DatapathType}); err != nil {
		return fmt.Errorf("ensuring bridge %s: %w", cfg.Bridge, err)
	}
	if err := db.SetFlowTableNames(ctx, cfg.Bridge, pipeline.TableNames()); err != nil {
		return fmt.Errorf("naming the pipeline's tables: %w", err)
	}

	var client kubernetes.Interface
	if cfg.ClusterMode() {
		if client, err = NewKubeClient(cfg.Kubeconfig, cfg.KubeAPIServerOverride, mon.WrapKubeTransport); err != nil {
			return err
		}
	}
	// The local Node's tunnel endpoint and InternalIPs (NodePort frontends
	// reached from pods, with the proxy), read before the underlay moves
	// the NIC's addresses onto br-phy: the API server may be unreachable
	// for a moment after that (measured on weir-local: "no route to host"
	// on the first read after the move).
	var localIP net.IP
	var nodeIPs []netip.Addr
	if cfg.ClusterMode() {
		localIP, nodeIPs = localTunnelEndpoint(ctx, client, cfg.NodeName, log)
	}
	var underlay *nodenet.Underlay
	var underlayCfg *nodenet.UnderlayConfig
	if cfg.DatapathType == ovsdb.DatapathNetdev && cfg.UnderlayInterface != "" {
		underlayCfg = &nodenet.UnderlayConfig{OVSDB: db, NIC: cfg.UnderlayInterface}
		if underlay, err = nodenet.SetupUnderlay(ctx, *underlayCfg); err != nil {
			return fmt.Errorf("setting up the underlay on %s: %w", cfg.UnderlayInterface, err)
		}
		addrs := make([]string, 0, len(underlay.Addrs))
		for _, a := range underlay.Addrs {
			addrs = append(addrs, a.String())
		}
		log.Info("Underlay ready", "bridge", underlay.Bridge, "nic", underlay.NIC, "addrs", addrs, "mtu", underlay.MTU)
	}
	// The underlay's family: the tunnel endpoints are the Nodes'
	// InternalIPs of one family (NodeControllerConfig.IPv6Underlay).
	ipv6Underlay := underlayIsIPv6(localIP, underlay, cidrs)
	mtu := podMTU(cfg, underlay, localIP, ipv6Underlay, log)

	// An IPAM per family, each with its own state file (ipam.json for
	// IPv4, ipam-v6.json for IPv6) and its gateway address on the one
	// gateway port.
	var alloc4, alloc6 *ipam.Allocator
	var gwIPv4, gwIPv6 net.IP
	if cidrs.IPv4 != nil {
		if alloc4, err = ipam.New(cidrs.IPv4, ipam.NewFileStore(filepath.Join(cfg.StateDir, "ipam.json"))); err != nil {
			return fmt.Errorf("opening IPAM state: %w", err)
		}
		gwIPv4 = alloc4.Gateway()
	}
	if cidrs.IPv6 != nil {
		if alloc6, err = ipam.New(cidrs.IPv6, ipam.NewFileStore(filepath.Join(cfg.StateDir, "ipam-v6.json"))); err != nil {
			return fmt.Errorf("opening IPv6 IPAM state: %w", err)
		}
		gwIPv6 = alloc6.Gateway()
	}
	// The CNI server's first IPAM is the primary family's; the second
	// (cniserver.Config.IPv6) only a dual-stack node's IPv6 one.
	alloc, second, secondCIDR, secondGW := alloc4, alloc6, cidrs.IPv6, gwIPv6
	if alloc4 == nil {
		alloc, second, secondCIDR, secondGW = alloc6, nil, nil, nil
	}
	gwIP := alloc.Gateway()
	gwMAC := podnet.MACFromIP(gwIP)
	gwPort, err := db.EnsureInternalPort(ctx, cfg.Bridge, cfg.GatewayName, ovsdb.PortOptions{
		OFPortRequest: int(interfacestore.GatewayOFPort), MAC: gwMAC.String(), MTU: mtu,
		ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway},
	})
	if err != nil {
		return fmt.Errorf("ensuring gateway port %s: %w", cfg.GatewayName, err)
	}
	var gwAddrs []*net.IPNet
	if alloc4 != nil {
		gwAddrs = append(gwAddrs, &net.IPNet{IP: gwIPv4, Mask: cidrs.IPv4.Mask})
	}
	if alloc6 != nil {
		gwAddrs = append(gwAddrs, &net.IPNet{IP: gwIPv6, Mask: cidrs.IPv6.Mask})
	}
	if err := configureGateway(ctx, cfg.GatewayName, mtu, gwAddrs...); err != nil {
		return err
	}
	if alloc4 != nil {
		// ARP for pods from the gateway IP, whatever address the node
		// sends from (the pipeline handles the other case too:
		// docs/overlay.md).
		arpChanged, err := nodenet.SetGatewayARPAnnounce(cfg.GatewayName)
		if err != nil {
			return err
		}
		log.Info("Gateway ARP source is the gateway IP", "sysctl", "net.ipv4.conf."+cfg.GatewayName+".arp_announce=2", "changed", arpChanged)
	}
	if cfg.DatapathType == ovsdb.DatapathNetdev {
		// Before forwarding is on: the kernel must not answer or route
		// what pods send on their host-side veths (OVS does).
		if err := nodenet.InstallPodGuard(ctx, cfg.GatewayName); err != nil {
			return err
		}
	}
	// The node routes pod traffic: egress to SNAT, Service traffic sent
	// back through the gateway.
	if alloc4 != nil {
		changed, err := nodenet.EnableIPv4Forwarding()
		if err != nil {
			return err
		}
		log.Info("IPv4 forwarding on", "sysctl", "net.ipv4.ip_forward=1", "changed", changed)
	}
	if alloc6 != nil {
		changed, err := nodenet.EnableIPv6Forwarding()
		if err != nil {
			return err
		}
		log.Info("IPv6 forwarding on", "sysctl", "net.ipv6.conf.all.forwarding=1", "changed", changed)
	}
	if err := reconcileSNAT(ctx, cfg, cidrs, log); err != nil {
		return err
	}
	var tunPort int
	if cfg.ClusterMode() {
		tunPort, err = db.EnsureGenevePort(ctx, cfg.Bridge, cfg.TunnelPort, ovsdb.PortOptions{OFPortRequest: int(interfacestore.TunnelOFPort),
			ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeTunnel}})
		if err != nil {
			return fmt.Errorf("ensuring Geneve tunnel port %s: %w", cfg.TunnelPort, err)
		}
	}

	sw, err := openflow.Open(openflow.Config{MgmtSocket: cfg.MgmtSocket(), Logger: log.WithName("openflow"), Observer: mon})
	if err != nil {
		return err
	}
	mon.SetSwitch(sw)
	defer sw.Close()
	if err := sw.WaitReady(ctx); err != nil {
		return err
	}
	// The cookie round of this run: one no flow on the bridge carries
	// (rounds.go). Flows of every other round are removed once this run
	// has re-installed the current state (removeStaleFlows).
	before, err := readRounds(ctx, sw)
	if err != nil {
		return err
	}
	round, err := pickRound(before)
	if err != nil {
		return fmt.Errorf("choosing a cookie round: %w", err)
	}
	log.Info("Cookie round chosen", "round", round, "previous", before.latest, "roundsOnBridge", roundsForLog(before.rounds()))
	svcCIDR, svcCIDRv6, err := serviceCIDRs(cfg, cidrs, log)
	if err != nil {
		return err
	}
	pipe, err := pipeline.New(sw, pipeline.Config{ServiceCIDR: svcCIDR, ServiceCIDRv6: svcCIDRv6, GatewayOFPort: uint32(gwPort), GatewayMAC: gwMAC,
		GatewayIP: gwIPv4, TunnelOFPort: uint32(tunPort), PodCIDR: cidrs.IPv4, GatewayIPv6: gwIPv6, PodCIDRv6: cidrs.IPv6, CTZone: cfg.CTZone,
		Round: round, Proxy: proxyConfig(cfg, cidrs, nodeIPs)})
	if err != nil {
		return err
	}
	mon.SetPipeline(pipe)
	if err := pipe.InstallBase(ctx); err != nil {
		return err
	}

	// The node's pod interfaces: the CNI server writes them; the policy
	// and Pod controllers, the tooling API and metrics read them.
	ifaces := interfacestore.NewStore()
	srv := cniserver.New(cniserver.Config{Bridge: cfg.Bridge, MTU: mtu, TxChecksumOff: cfg.DatapathType == "netdev",
		IPv6: second, Interfaces: ifaces, Logger: log, Observer: mon, Dataplane: openFlowHealth(sw)}, db, pipe, alloc)
	mon.SetCNIServer(srv, cfg.CNISocket)
	st, err := srv.Restore(ctx)
	if err != nil {
		// A pod that cannot be restored must not keep the node from
		// serving the others; it is logged and CHECK reports it.
		log.Error(err, "Restoring some pods failed")
	}
	if !cfg.ClusterMode() {
		// Flows of the previous run that were not re-installed (pods
		// deleted while the agent was down) still carry its round. (In
		// cluster mode, only once the Node controller re-installed the
		// peers: below.)
		if err := removeStaleFlows(ctx, sw, round, nil, log); err != nil {
			return err
		}
		recordInitialSync(runStart, mon.SetInitialSync, log)
	}
	// The flows are complete: let an ovs-vswitchd started with
	// flow-restore-wait (the OVS container does) forward with them.
	if err := db.ClearFlowRestoreWait(ctx); err != nil {
		return fmt.Errorf("telling ovs-vswitchd the flows are restored: %w", err)
	}
	srv.SetReady(true)
	log.Info("Agent ready", "bridge", cfg.Bridge, "datapath", cfg.DatapathType, "podCIDRs", cidrs.String(),
		"gateways", gatewayStrings(gwAddrs), "ipv6Underlay", ipv6Underlay, "mtu", mtu, "tunnelOFPort", tunPort, "round", round, "restoredPods", st.Restored, "removedPods", st.Removed,
		"releasedIPs", st.Released, "startup", time.Since(start).Round(time.Millisecond))

	// In cluster mode: the Node controller (tunnel peers and routes), the
	// Pod controller (interfaces of pods deleted behind the runtime's back)
	// and NetworkPolicy (docs/policy.md; the CNI server tells it when a
	// pod's port appears or goes). They share one informer factory, so
	// each kind is listed and watched once (Pods feed both the Pod and the
	// policy controller), slimmed by one transform (pkg/kubecache).
	var (
		nc     *NodeController
		pc     *PodController
		polc   *policy.Controller
		proxyc *proxy.Controller // nil unless cfg.ProxyEnabled()
		// staleGroupsGone is closed once the earlier runs' groups are
		// deleted (cluster mode).
		staleGroupsGone = make(chan struct{})
	)
	if cfg.ClusterMode() {
		factory := kubecache.NewFactory(client)
		if nc, err = NewNodeController(NodeControllerConfig{Client: client, Informers: factory, LocalNode: cfg.NodeName, Pipeline: pipe,
			IPv6: cidrs.IPv6 != nil, IPv6Only: cidrs.IPv6Only(), IPv6Underlay: ipv6Underlay, GatewayName: cfg.GatewayName, UnderlayBridge: underlayBridge(underlay), Logger: log}); err != nil {
			return err
		}
		if pc, err = NewPodController(PodControllerConfig{Client: client, Informers: factory, NodeName: cfg.NodeName, Interfaces: ifaces, Releaser: srv,
			Logger: log}); err != nil {
			return err
		}
		if polc, err = policy.NewController(policy.ControllerConfig{Client: client, Informers: factory, NodeName: cfg.NodeName,
			Realizer: pipe, Ports: ifaces, Logger: log, Observer: mon}); err != nil {
			return err
		}
		mon.SetPolicyController(polc)
		if cfg.ProxyEnabled() {
			// Coexistence: kube-proxy still serves the health check node
			// ports (docs/proxy.md). Kube-proxy-free: the controller does,
			// and the node's kernel hands the node's own and external
			// Service traffic to the pipeline (proxyall.go).
			var realizer pipeline.ServiceRealizer = pipe
			if cfg.ProxyAllEnabled() {
				nsn := newNodeServiceNet(cfg.GatewayName, gwMAC, gwIPv4, gwIPv6, svcCIDR, svcCIDRv6, log.WithName("proxy"))
				if err := nsn.setup(ctx); err != nil {
					return fmt.Errorf("kube-proxy-free mode: %w", err)
				}
				realizer = nsn.wrap(pipe)
			}
			if proxyc, err = proxy.NewController(proxy.ControllerConfig{Client: client, Informers: factory, NodeName: cfg.NodeName,
				IPFamilies: cidrs.families(), Realizer: realizer, DisableHealthCheck: !cfg.ProxyAllEnabled(), Logger: log.WithName("proxy")}); err != nil {
				return err
			}
		}
		if !cfg.ProxyAllEnabled() {
			if err := proxyAllCleanup(ctx, cfg.GatewayName); err != nil {
				log.Error(err, "Removing the kube-proxy-free mode's routes and rules failed")
			}
		}
		ifaces.WatchPods(func(r interfacestore.PodRef) { polc.PodPortChanged(r.Namespace, r.Name) })
		// Started once, now that every informer is registered; stopped
		// after the controllers (defers run in reverse).
		defer startInformers(ctx, factory)()
		defer background(ctx, nc.Run)()
		defer background(ctx, pc.Run)()
		defer background(ctx, polc.Run)()
		if proxyc != nil {
			defer background(ctx, proxyc.Run)()
		}
		// The previous run's peer and policy flows keep forwarding (and
		// isolating) until the Node controller has re-installed every
		// current peer and the policy controller every current rule in this
		// round: an agent restart neither drops cross-node traffic nor
		// opens isolated pods.
		defer background(ctx, func(ctx context.Context) {
			synced := []initialSync{{"Node controller", nc.WaitForInitialSync}, {"policy controller", polc.WaitSynced}}
			if proxyc != nil {
				synced = append(synced, initialSync{"Service proxy", proxyc.WaitSynced})
			}
			if err := removeStaleFlows(ctx, sw, round, synced, log); err != nil {
				if ctx.Err() == nil {
					log.Error(err, "Removing the flows of earlier runs failed")
				}
				return
			}
			// The earlier runs' Service groups, now that no flow of theirs
			// is left to use them (their IDs carry their round).
			if n, err := pipe.DeleteStaleGroups(ctx); err != nil {
				log.Error(err, "Removing the Service groups of earlier runs failed")
			} else if n > 0 {
				log.Info("Removed the Service groups of earlier runs", "groups", n)
			}
			close(staleGroupsGone)
			if err := nc.WaitForGarbageCollection(ctx); err != nil {
				return
			}
			recordInitialSync(runStart, mon.SetInitialSync, log)
		})()
	}
	// The operator tooling API (docs/tooling.md).
	defer background(ctx, func(ctx context.Context) {
		serveAPI(ctx, apiDeps{cfg: cfg, alloc: alloc, cidr: cidr, gwIP: gwIP, alloc6: second, cidr6: secondCIDR, gwIP6: secondGW, gwMAC: gwMAC, gwPort: gwPort, tun: tunPort, db: db, sw: sw,
			pipe: pipe, ifaces: ifaces, nc: nc, polc: polc, proxyc: proxyc, staleGroupsGone: closedBy(staleGroupsGone), ready: func() (bool, string) { return connReady(sw, db) }}, log)
	})()
	// After an ovs-vswitchd restart: restore what it may have lost, then
	// clear flow-restore-wait.
	node := &nodeNetwork{underlay: underlayCfg, gateway: cfg.GatewayName, gatewayAddrs: gwAddrs, mtu: mtu, peers: nc,
		log: log.WithName("restore")}
	defer background(ctx, func(ctx context.Context) { watchReconnectsRestoring(ctx, sw, db, node.Restore, log) })()
	return srv.Serve(ctx, cfg.CNISocket)
}

// reconcileSNAT installs (cfg.SNAT) or removes the masquerade of pod
// egress: nftables table "ip weir" for the IPv4 pod CIDR and, on a
// dual-stack node, "ip6 weir" for the IPv6 one; a node without an IPv6 pod
// CIDR (any more) has no ip6 table (docs/overlay.md, "SNAT").
func reconcileSNAT(ctx context.Context, cfg Config, cidrs PodCIDRs, log klog.Logger) error {
	if !cfg.SNAT {
		if err := nodenet.RemoveSNAT(ctx); err != nil {
			return err
		}
		log.Info("Pod egress SNAT off", "tables", "ip "+nodenet.SNATTable+", ip6 "+nodenet.SNATTable)
		return nil
	}
	if err := nodenet.ReconcileSNAT(ctx, nodenet.SNATConfig{PodCIDR: cidrs.IPv4, PodCIDRv6: cidrs.IPv6, GatewayName: cfg.GatewayName}); err != nil {
		return err
	}
	var tables []string
	if cidrs.IPv4 != nil {
		tables = append(tables, "ip "+nodenet.SNATTable)
	}
	if cidrs.IPv6 != nil {
		tables = append(tables, "ip6 "+nodenet.SNATTable)
	}
	log.Info("Pod egress SNAT installed", "tables", strings.Join(tables, ", "), "podCIDRs", cidrs.String(), "except", cfg.GatewayName)
	return nil
}

// underlayBridge is the bridge tunnel neighbours are warmed on: br-phy
// when the agent set up a userspace underlay, else none.
func underlayBridge(u *nodenet.Underlay) string {
	if u == nil {
		return ""
	}
	return u.Bridge
}

// podMTU returns the MTU of pods and the gateway: the configured one, or
// (cfg.MTU 0) with a tunnel (cluster mode) the underlay's MTU less the
// Geneve overhead of the underlay's family (nodenet.PodMTUFor: 50 bytes
// over IPv4, 70 over IPv6), else defaultMTU. The underlay is the set-up
// underlay (netdev), else UnderlayInterface, else the interface holding
// the local tunnel endpoint localIP; if none is found an underlay of
// defaultMTU is assumed.
func podMTU(cfg Config, u *nodenet.Underlay, localIP net.IP, ipv6Underlay bool, log klog.Logger) int {
	if cfg.MTU != 0 {
		return cfg.MTU
	}
	if !cfg.ClusterMode() {
		return defaultMTU
	}
	underlayMTU, from := defaultMTU, "assumed"
	switch {
	case u != nil:
		underlayMTU, from = u.MTU, u.NIC
	case cfg.UnderlayInterface != "":
		if link, err := netlink.LinkByName(cfg.UnderlayInterface); err != nil {
			log.Error(err, "Cannot read the underlay interface's MTU; assuming the default", "interface", cfg.UnderlayInterface,
				"assumedMTU", defaultMTU)
		} else {
			underlayMTU, from = link.Attrs().MTU, cfg.UnderlayInterface
		}
	case localIP != nil:
		if link := linkOfIP(localIP, log); link != nil {
			underlayMTU, from = link.Attrs().MTU, link.Attrs().Name
		}
	}
	mtu := nodenet.PodMTUFor(underlayMTU, ipv6Underlay)
	log.Info("Pod MTU chosen automatically", "mtu", mtu, "underlayMTU", underlayMTU, "underlay", from, "ipv6Underlay", ipv6Underlay)
	return mtu
}

// localTunnelEndpoint reads Node nodeName and returns its tunnel endpoint
// (its IPv4 InternalIP, else its IPv6 one: an IPv6 underlay) and all its
// InternalIPs; nil (logged) if the Node cannot be read or has no
// InternalIP yet.
func localTunnelEndpoint(ctx context.Context, client kubernetes.Interface, nodeName string, log klog.Logger) (net.IP, []netip.Addr) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var node *corev1.Node
	var err error
	for delay := 100 * time.Millisecond; ; delay *= 2 {
		if node, err = client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{}); err == nil || ctx.Err() != nil {
			break
		}
		log.Info("Reading the Node failed; retrying", "node", nodeName, "err", err, "retryIn", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
	if err != nil {
		log.Error(err, "Cannot read the Node to find the underlay; assuming the default MTU and the pod CIDRs' underlay family", "node", nodeName)
		return nil, nil
	}
	var all []netip.Addr
	for _, a := range node.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); a.Type == corev1.NodeInternalIP && err == nil && ip.Zone() == "" {
			all = append(all, ip.Unmap())
		}
	}
	for _, v6 := range []bool{false, true} {
		if ip := NodeTunnelIP(node, v6); ip != nil {
			return ip, all
		}
	}
	log.Info("The Node has no InternalIP yet; assuming the default underlay MTU and the pod CIDRs' underlay family", "node", nodeName)
	return nil, nil
}

// underlayIsIPv6 says whether the tunnel endpoints are IPv6: the local
// endpoint's family when it is known, else the set-up underlay's (IPv6
// when it holds IPv6 addresses only), else IPv6 exactly on an IPv6-only
// node. A dual-stack node whose Node has an IPv4 InternalIP tunnels over
// IPv4, as before IPv6 underlays existed.
func underlayIsIPv6(localIP net.IP, u *nodenet.Underlay, cidrs PodCIDRs) bool {
	switch {
	case localIP != nil:
		return localIP.To4() == nil
	case u != nil && (len(u.Addrs) > 0 || len(u.Addrs6) > 0):
		return len(u.Addrs) == 0
	default:
		return cidrs.IPv6Only()
	}
}

// linkOfIP returns the local interface that holds ip, nil (logged) if
// there is none.
func linkOfIP(ip net.IP, log klog.Logger) netlink.Link {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		log.Error(err, "Listing addresses failed; assuming the default underlay MTU")
		return nil
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			if link, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				return link
			}
		}
	}
	log.Info("No local interface holds the Node's InternalIP; assuming the default underlay MTU", "nodeIP", ip.String())
	return nil
}

// serviceCIDRs returns the ClusterIP ranges of the families the node has
// pods of; a configured range of another family (the default IPv4 range
// on an IPv6-only node) is dropped with a log line: no pod of the node can
// send to it.
func serviceCIDRs(cfg Config, cidrs PodCIDRs, log klog.Logger) (v4, v6 *net.IPNet, err error) {
	if v4, v6, err = cfg.ParseServiceCIDRs(); err != nil {
		return nil, nil, err
	}
	if v4 != nil && cidrs.IPv4 == nil {
		log.Info("Ignoring the IPv4 Service CIDR: this node has no IPv4 pods", "serviceCIDR", v4.String())
		v4 = nil
	}
	if v6 != nil && cidrs.IPv6 == nil {
		log.Info("Ignoring the IPv6 Service CIDR: this node has no IPv6 pods", "serviceCIDR", v6.String())
		v6 = nil
	}
	return v4, v6, nil
}

// closedBy returns a wait function that returns once ch is closed or ctx
// ends (initialSync's shape).
func closedBy(ch <-chan struct{}) func(context.Context) error {
	return func(ctx context.Context) error {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Hairpin source addresses of the proxy: what a pod sees as the source
// when it reaches itself through a Service; link-local and ULA addresses
// no pod, node or Service uses (Antrea's, so captures read alike).
var (
	proxyHairpinIPv4 = netip.MustParseAddr("169.254.0.253")
	proxyHairpinIPv6 = netip.MustParseAddr("fc00::aabb:ccdd:eeff")
)

// proxyConfig is the pipeline's proxy configuration, nil with the proxy
// off: a hairpin address per family the node has pods of, the Node's
// InternalIPs for NodePorts reached from pods, and the hairpin SNAT's
// conntrack zone next to the pods' zone.
func proxyConfig(cfg Config, cidrs PodCIDRs, nodeIPs []netip.Addr) *pipeline.ProxyConfig {
	if !cfg.ProxyEnabled() {
		return nil
	}
	pc := &pipeline.ProxyConfig{NodeIPs: nodeIPs, SNATZone: cfg.CTZone + 1, FromGateway: cfg.ProxyAllEnabled()}
	if cidrs.IPv4 != nil {
		pc.HairpinIP = proxyHairpinIPv4
		if pc.FromGateway {
			pc.NodePortIP = nodenet.ServiceNextHopIPv4
		}
	}
	if cidrs.IPv6 != nil {
		pc.HairpinIPv6 = proxyHairpinIPv6
		if pc.FromGateway {
			pc.NodePortIPv6 = nodenet.ServiceNextHopIPv6
		}
	}
	return pc
}

// gatewayStrings returns the gateway addresses for the log.
func gatewayStrings(addrs []*net.IPNet) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.IP.String()
	}
	return out
}

// podCIDRs returns the configured pod CIDRs or, when none is configured,
// waits until the API server's Node object cfg.NodeName has them; wrap
// wraps the client's transport (NewKubeClient).
func podCIDRs(ctx context.Context, cfg Config, wrap transport.WrapperFunc, log klog.Logger) (PodCIDRs, error) {
	if cfg.PodCIDR != "" {
		return cfg.ParsePodCIDRs()
	}
	client, err := NewKubeClient(cfg.Kubeconfig, cfg.KubeAPIServerOverride, wrap)
	if err != nil {
		return PodCIDRs{}, err
	}
	cidrs, err := WaitForPodCIDR(ctx, client, cfg.NodeName, log.WithName("podcidr"))
	if err != nil {
		return PodCIDRs{}, fmt.Errorf("reading the pod CIDR from the API server: %w", err)
	}
	return cidrs, nil
}

func ptr[T any](v T) *T { return &v }

// configureGateway puts the gateway address on the gateway interface and
// brings it up. OVS creates the interface asynchronously, so wait for it.
func configureGateway(ctx context.Context, name string, mtu int, addrs ...*net.IPNet) error {
	var link netlink.Link
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if link, err = netlink.LinkByName(name); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("gateway interface %s did not appear: %w", name, errors.Join(err, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("setting MTU %d on gateway %s: %w", mtu, name, err)
	}
	for _, addr := range addrs {
		a := &netlink.Addr{IPNet: addr}
		if addr.IP.To4() == nil {
			// The address is the node's alone; without DAD it is usable
			// at once.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(link, a); err != nil {
			return fmt.Errorf("adding %s to gateway %s: %w", addr, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing gateway %s up: %w", name, err)
	}
	return nil
}

// background runs fn in a goroutine with a context of its own and returns
// the function that cancels that context and waits for fn to return (for
// defer).
func background(ctx context.Context, fn func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// startInformers starts every informer of factory registered so far and
// returns the function that stops them and waits for their goroutines (for
// defer). They get a context of their own: ctx may outlive Run.
func startInformers(ctx context.Context, factory informers.SharedInformerFactory) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	factory.Start(ctx.Done())
	return func() {
		cancel()
		factory.Shutdown()
	}
}

// recordInitialSync records the agent's first complete sync, which ended
// now, start being when its Run began (weir_agent_initial_sync_seconds).
func recordInitialSync(start time.Time, record func(time.Duration), log klog.Logger) {
	took := time.Since(start)
	record(took)
	log.Info("Initial sync complete", "sinceStart", took.Round(time.Millisecond))
}

// openFlowHealth reports, for CNI STATUS, whether the pods' flows are being
// kept: while the OpenFlow connection to ovs-vswitchd is down (a vswitchd
// restart) flows cannot be replayed or changed, so existing pods may have
// limited connectivity (STATUS code 51).
func openFlowHealth(sw *openflow.Switch) func() error {
	return func() error {
		if st := sw.State(); st != openflow.StateReady {
			return fmt.Errorf("OpenFlow connection to ovs-vswitchd is %s", st)
		}
		return nil
	}
}
