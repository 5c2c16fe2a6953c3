package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
)

// Ports is what the server needs from OVSDB (an *ovsdb.Client).
type Ports interface {
	AddPort(ctx context.Context, bridge, name string, opts ovsdb.PortOptions) (int, error)
	DeletePort(ctx context.Context, bridge, name string) error
	GetPort(ctx context.Context, bridge, name string) (ovsdb.PortInfo, error)
	ListPorts(ctx context.Context, bridge string) ([]ovsdb.PortInfo, error)
}

// Flows is what the server needs from the pipeline (a *pipeline.Pipeline).
type Flows interface {
	AddPod(ctx context.Context, pod pipeline.PodInterface) error
	DeletePod(ctx context.Context, key string) error
	CheckPod(ctx context.Context, key string) error
}

// Config configures the CNI server.
type Config struct {
	// Bridge is the integration bridge pods are attached to.
	Bridge string
	// MTU is the pod interface MTU unless the network config sets one.
	MTU int
	// TxChecksumOff turns off tx checksum offload in pods; needed with
	// OVS's userspace (netdev) datapath, whose conntrack drops packets with
	// partial checksums.
	TxChecksumOff bool
	// HostNetNSPath is the node's network namespace (empty: the agent's).
	HostNetNSPath string
	Logger        klog.Logger
	// Observer, if set, is told about every CNI request Serve answers (for
	// metrics, see pkg/metrics).
	Observer Observer
	// DefaultNetwork is the network GC attributes attachments to whose
	// OVSDB record names no network (written by Weir before it recorded the
	// network name; empty: DefaultNetworkName). See legacyNetwork.
	DefaultNetwork string
	// IPv6, if set, is the IPAM of the node's IPv6 pod CIDR on a
	// dual-stack node: pods get an address of each family, the allocator
	// passed to New giving the IPv4 one. Nil on an IPv4-only node, and on
	// an IPv6-only one, whose IPv6 allocator is the one passed to New (see
	// New).
	IPv6 *ipam.Allocator
	// Interfaces is the node's store of pod interfaces, which the server
	// writes (nil: a store of its own; see Server.Interfaces).
	Interfaces *interfacestore.Store
	// Dataplane, if set, reports a condition under which the pods already
	// attached may have lost connectivity, e.g. the OpenFlow connection to
	// ovs-vswitchd is down (nil: none). STATUS then answers 51 ("existing
	// containers in the network may have limited connectivity") with its
	// message.
	Dataplane func() error
}

// DefaultNetworkName is the "name" of the network configuration Weir
// ships (build/yamls/weir.yml); before Weir recorded network names it was
// the only network Weir could serve, as a second attachment per container
// failed.
const DefaultNetworkName = "weir"

// Observer receives the CNI requests the server answered. It is called on
// the request's goroutine, so it must be cheap and safe for concurrent use.
type Observer interface {
	// CNIRequest reports one request: command is ADD, DEL, CHECK, STATUS
	// or GC; code is the CNI error code returned (0: success).
	CNIRequest(command string, code uint32, d time.Duration)
}

// cniCommands maps the gRPC methods to CNI commands.
var cniCommands = map[string]string{
	cniv1.Cni_CmdAdd_FullMethodName: "ADD", cniv1.Cni_CmdDel_FullMethodName: "DEL",
	cniv1.Cni_CmdCheck_FullMethodName: "CHECK", cniv1.Cni_CmdStatus_FullMethodName: "STATUS",
	cniv1.Cni_CmdGC_FullMethodName: "GC",
}

// observeInterceptor reports each CNI request to o.
func observeInterceptor(o Observer) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		cmd, ok := cniCommands[info.FullMethod]
		if !ok {
			return resp, err
		}
		var code uint32
		if r, ok := resp.(*cniv1.CniCmdResponse); ok {
			code = r.GetError().GetCode()
		}
		if err != nil && code == 0 {
			code = cniv1.CodeInternal
		}
		o.CNIRequest(cmd, code, time.Since(start))
		return resp, err
	}
}

// ofNetwork reports whether a DEL or CHECK of network name concerns i. An
// interface restored from a record without a network name (Legacy) is
// every network's: older Weir served one network, so the runtime's request
// is for that network whatever it is named, and refusing a DEL would leak
// the pod's IP and port. GC attributes it to Config.DefaultNetwork.
func ofNetwork(i *interfacestore.Interface, name string) bool { return i.Legacy() || i.Network == name }

func (s *Server) gcNetwork(a *interfacestore.Interface) string {
	if !a.Legacy() {
		return a.Network
	}
	if s.cfg.DefaultNetwork != "" {
		return s.cfg.DefaultNetwork
	}
	return DefaultNetworkName
}

// Server is the agent's CNI server: it implements the cniv1.Cni service by
// setting up pod interfaces (pkg/podnet), OVS ports (pkg/ovsdb), IPs
// (pkg/ipam) and flows (pkg/pipeline), and undoing all of it on DEL or
// when a step fails.
type Server struct {
	cniv1.UnimplementedCniServer
	cfg   Config
	log   klog.Logger
	ports Ports
	flows Flows
	ipam  *ipam.Allocator

	ready atomic.Bool

	// store holds the attachments; the per-container lock orders the
	// changes of one container's entries.
	store   *interfacestore.Store
	ofports *interfacestore.OFPorts
	locks   keyedMutex
}

// New returns a server; it reports not ready until SetReady(true). alloc is
// the IPAM of the node's primary pod CIDR, the family every pod has an
// address of: the IPv4 one on an IPv4-only or dual-stack node (with
// cfg.IPv6 the IPv6 one beside it), the IPv6 one on an IPv6-only node
// (cfg.IPv6 nil). Pods then get an address of alloc's family and, with
// cfg.IPv6, one of IPv6; their MAC is derived from the primary address
// (podnet.MACFromIP). alloc must not be nil, and with cfg.IPv6 set it must
// be IPv4.
func New(cfg Config, ports Ports, flows Flows, alloc *ipam.Allocator) *Server {
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = klog.Background()
	}
	store := cfg.Interfaces
	if store == nil {
		store = interfacestore.NewStore()
	}
	return &Server{cfg: cfg, log: cfg.Logger.WithName("cni"), ports: ports, flows: flows, ipam: alloc,
		store: store, locks: keyedMutex{m: map[string]*keyedEntry{}}, ofports: interfacestore.NewOFPorts()}
}

// Interfaces returns the store of the pod interfaces the server attached
// (Config.Interfaces, or the server's own).
func (s *Server) Interfaces() *interfacestore.Store { return s.store }

// SetReady sets what STATUS reports.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Ready reports whether the server accepts ADD (SetReady). STATUS also
// fails while it is ready if no IP address is left.
func (s *Server) Ready() bool { return s.ready.Load() }

// Serve listens on a unix socket at path (mode 0600; the directory is
// created 0700 if missing) until ctx ends.
func (s *Server) Serve(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating CNI socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale CNI socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on CNI socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("restricting CNI socket %s: %w", path, err)
	}
	var opts []grpc.ServerOption
	if s.cfg.Observer != nil {
		opts = append(opts, grpc.UnaryInterceptor(observeInterceptor(s.cfg.Observer)))
	}
	g := grpc.NewServer(opts...)
	cniv1.RegisterCniServer(g, s)
	go func() {
		<-ctx.Done()
		g.GracefulStop()
	}()
	s.log.Info("Serving CNI", "socket", path)
	if err := g.Serve(l); err != nil && ctx.Err() == nil {
		return fmt.Errorf("serving CNI on %s: %w", path, err)
	}
	return nil
}

func fail(e *cniError) (*cniv1.CniCmdResponse, error) {
	return cniv1.NewErrorResponse(e.code, e.msg, e.details), nil
}

// CmdAdd sets up a pod interface and rolls back everything on failure. An
// ADD for an interface the container already has fails (CNI spec: "If an
// interface of the requested name already exists in the container, the CNI
// plugin MUST return with an error"), whichever network it belongs to; the
// existing attachment is left as it is. Runtimes DEL before they retry an
// ADD, and the DEL removes it.
func (s *Server) CmdAdd(ctx context.Context, in *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	start := time.Now()
	req, cerr := parseRequest("ADD", in.GetCniArgs(), true, true)
	if cerr != nil {
		s.log.Info("CNI ADD rejected", "err", cerr.Error())
		return fail(cerr)
	}
	if !s.ready.Load() {
		return fail(errorf(cniv1.CodeTryAgainLater, "weir: the agent is starting and not ready for pods yet"))
	}
	unlock := s.locks.lock(req.containerID)
	defer unlock()
	log := s.log.WithValues("container", req.containerID, "ifname", req.ifName, "netns", req.netns)

	if existing, ok := s.store.Get(req.key()); ok {
		network := existing.Network
		if network == "" {
			network = "unrecorded"
		}
		cerr := errorf(cniv1.CodeInterfaceExists,
			"weir: container %s already has interface %s (network %q, netns %s); DEL it before adding it again",
			req.containerID, req.ifName, network, existing.NetNS)
		log.Info("CNI ADD rejected", "err", cerr.Error())
		return fail(cerr)
	}
	routes, cerr := req.conf.extraRoutes(req.ifName, s.gateways()...)
	if cerr != nil {
		log.Info("CNI ADD rejected", "err", cerr.Error())
		return fail(cerr)
	}
	att, cerr := s.add(ctx, req, routes, log)
	if cerr != nil {
		log.Error(errors.New(cerr.Error()), "CNI ADD failed", "code", cerr.code)
		return fail(cerr)
	}
	log.Info("CNI ADD done", "ips", att.IPs, "hostIf", att.PortName, "ofport", att.OFPort, "duration", time.Since(start))
	return s.result(req, att, routes)
}

// add does the work of ADD; on failure it undoes what it did.
func (s *Server) add(ctx context.Context, req *request, routes []*net.IPNet, log klog.Logger) (*interfacestore.Interface, *cniError) {
	var undo []func()
	rollback := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	// Rollback uses its own context: the request's may be what failed.
	cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()

	att := &interfacestore.Interface{ContainerID: req.containerID, IfName: req.ifName, NetNS: req.netns,
		PortName: podnet.HostIfName(req.containerID, req.ifName),
		PodName:  req.args["K8S_POD_NAME"], PodNamespace: req.args["K8S_POD_NAMESPACE"], PodUID: req.args["K8S_POD_UID"],
		Network: req.conf.Name}

	steps := make([]any, 0, 8)
	mark := time.Now()
	step := func(name string) {
		now := time.Now()
		steps = append(steps, name, now.Sub(mark))
		mark = now
	}
	defer func() { log.V(2).Info("ADD steps", steps...) }()
	// One address per family, the primary one (IPv4 unless the node is
	// IPv6-only) first.
	var addrs []*net.IPNet
	var gws []net.IP
	for _, alloc := range s.allocators() {
		ip, err := alloc.Allocate(req.key())
		if err != nil {
			rollback()
			if errors.Is(err, ipam.ErrExhausted) {
				return nil, withDetails(cniv1.CodeIPAMExhausted, fmt.Sprintf("weir: no IP address left for the pod in %s", alloc.CIDR()), err)
			}
			return nil, withDetails(cniv1.CodeInternal, "weir: allocating the pod's IP failed", err)
		}
		undo = append(undo, func() {
			if err := alloc.Release(req.key()); err != nil {
				log.Error(err, "Rollback: releasing IP failed", "ip", ip)
			}
		})
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			rollback()
			return nil, errorf(cniv1.CodeInternal, "weir: IPAM allocated an invalid address %v", ip)
		}
		att.IPs = append(att.IPs, a.Unmap())
		addrs = append(addrs, &net.IPNet{IP: ip, Mask: alloc.CIDR().Mask})
		gws = append(gws, alloc.Gateway())
	}
	ip := addrs[0].IP
	step("ipam")

	// The pod's MAC follows from its IP, and the agent picks the OpenFlow
	// port number itself (ofport_request), so the pod's flows can be
	// installed while the veth pair is being created, and are in place
	// before the port exists: the slow part of attaching a port is
	// ovs-vswitchd reconfiguring, which would otherwise delay the flows.
	att.MAC = podnet.MACFromIP(ip)
	ofport, err := s.ofports.Reserve(att.PortName)
	if err != nil {
		rollback()
		return nil, withDetails(cniv1.CodeOVSFailure, "weir: no OpenFlow port number left on the bridge", err)
	}
	att.OFPort = ofport
	undo = append(undo, func() { s.ofports.Release(att.PortName) })

	mtu := s.mtuFor(req)
	vcfg := podnet.VethConfig{
		NetNSPath: req.netns, IfName: req.ifName, HostIfName: att.PortName, HostNetNSPath: s.cfg.HostNetNSPath,
		MAC: att.MAC, MTU: mtu, IPNet: addrs[0], Gateway: gws[0], TxChecksumOff: s.cfg.TxChecksumOff,
		NoDefaultRoute: !req.conf.wantsDefaultRoute(req.ifName), Routes: ofFamily(routes, gws[0]),
	}
	if len(addrs) > 1 {
		vcfg.Second = &podnet.Address{IPNet: addrs[1], Gateway: gws[1], Routes: ofFamily(routes, gws[1])}
	}
	flowsErr := make(chan error, 1)
	go func() { flowsErr <- s.flows.AddPod(ctx, podInterface(att)) }()
	_, vethErr := podnet.SetupVeth(ctx, vcfg)
	ferr := <-flowsErr
	step("veth+flows")
	undo = append(undo, func() {
		// The pipeline may know part of the pod's flows even if AddPod failed.
		if err := s.flows.DeletePod(cleanupCtx, att.Key()); err != nil {
			log.Error(err, "Rollback: deleting the pod's flows failed")
		}
	})
	if vethErr == nil {
		undo = append(undo, func() {
			if err := podnet.TeardownVeth(cleanupCtx, s.cfg.HostNetNSPath, att.PortName, req.netns, req.ifName); err != nil {
				log.Error(err, "Rollback: removing the veth pair failed")
			}
		})
	}
	if vethErr != nil {
		rollback()
		if errors.Is(vethErr, podnet.ErrIfNameInUse) {
			return nil, withDetails(cniv1.CodeInterfaceExists,
				fmt.Sprintf("weir: netns %s already has an interface %s that Weir did not create", req.netns, req.ifName), vethErr)
		}
		return nil, withDetails(cniv1.CodeInterfaceSetupFailure, "weir: setting up the pod interface failed", vethErr)
	}
	if ferr != nil {
		rollback()
		return nil, withDetails(cniv1.CodeOVSFailure, "weir: installing the pod's flows failed", ferr)
	}
	if cerr := s.setupBandwidth(ctx, req, vcfg); cerr != nil {
		rollback()
		return nil, cerr
	}

	if _, err := s.ports.AddPort(ctx, s.cfg.Bridge, att.PortName, ovsdb.PortOptions{
		OFPortRequest: int(ofport), ExternalIDs: interfacestore.ExternalIDs(*att), KeepQdiscs: shapesBandwidth(req)}); err != nil {
		rollback()
		return nil, withDetails(cniv1.CodeOVSFailure, "weir: attaching the pod to OVS failed", err)
	}
	step("port")
	if err := s.store.Put(*att); err != nil {
		// Another interface holds the port number or the IP: the
		// allocators are out of step with the store, a bug.
		if derr := s.ports.DeletePort(cleanupCtx, s.cfg.Bridge, att.PortName); derr != nil {
			log.Error(derr, "Rollback: removing the OVS port failed")
		}
		rollback()
		return nil, withDetails(cniv1.CodeInternal, "weir: recording the pod interface failed", err)
	}
	return att, nil
}

// podInterface is what the pipeline needs of an interface.
func podInterface(i *interfacestore.Interface) pipeline.PodInterface {
	return pipeline.PodInterface{Key: i.Key(), OFPort: i.OFPort, IPs: slices.Clone(i.IPs), MAC: i.MAC}
}

// result builds the CNI result for an attachment in the request's version.
// Routes lists exactly the routes ADD installed via the gateway (the
// kernel's on-link route of the pod CIDR is not one of them).
func (s *Server) result(req *request, att *interfacestore.Interface, routes []*net.IPNet) (*cniv1.CniCmdResponse, error) {
	sandboxIdx := 1
	var rs []*types.Route
	var ips []*current.IPConfig
	for _, alloc := range s.allocators() {
		gw := alloc.Gateway()
		ip := sameFamily(gw, ipsOf(att))
		if ip == nil {
			continue
		}
		ips = append(ips, &current.IPConfig{Interface: &sandboxIdx, Address: net.IPNet{IP: ip, Mask: alloc.CIDR().Mask}, Gateway: gw})
		if req.conf.wantsDefaultRoute(req.ifName) {
			rs = append(rs, &types.Route{Dst: *defaultRoute(gw), GW: gw})
		}
		for _, dst := range ofFamily(routes, gw) {
			rs = append(rs, &types.Route{Dst: *dst, GW: gw})
		}
	}
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: att.PortName},
			{Name: att.IfName, Mac: att.MAC.String(), Sandbox: att.NetNS},
		},
		IPs:    ips,
		Routes: rs,
		DNS:    req.conf.DNS,
	}
	if mtu := s.mtuFor(req); mtu != 0 {
		r.Interfaces[1].Mtu = mtu
	}
	// Chained after another plugin, Weir adds its interfaces, address and
	// routes to the previous result (CNI spec: a plugin "MUST handle
	// prevResult by either passing it through, or modifying it").
	prev, cerr := req.prevResult()
	if cerr != nil {
		return fail(cerr)
	}
	if prev != nil {
		sandboxIdx += len(prev.Interfaces)
		r.Interfaces = append(prev.Interfaces, r.Interfaces...)
		r.IPs = append(prev.IPs, r.IPs...)
		r.Routes = append(prev.Routes, r.Routes...)
		if r.DNS.IsEmpty() {
			r.DNS = prev.DNS
		}
	}
	converted, err := r.GetAsVersion(req.conf.CNIVersion)
	if err != nil {
		return fail(withDetails(cniv1.CodeIncompatibleVersion, "weir: converting the result to cniVersion "+req.conf.CNIVersion, err))
	}
	data, err := json.Marshal(converted)
	if err != nil {
		return fail(withDetails(cniv1.CodeInternal, "weir: encoding the result", err))
	}
	return &cniv1.CniCmdResponse{CniResult: data}, nil
}

func (s *Server) mtuFor(req *request) int {
	if req.conf.MTU != 0 {
		return req.conf.MTU
	}
	return s.cfg.MTU
}

// CmdDel removes a pod interface. It succeeds when the attachment, the
// container or its netns is already gone. An attachment of another network
// is left alone (and the DEL succeeds): e.g. a runtime DELs network B's net1
// after its ADD failed because network A's net1 was there.
func (s *Server) CmdDel(ctx context.Context, in *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	req, cerr := parseRequest("DEL", in.GetCniArgs(), true, false)
	if cerr != nil {
		return fail(cerr)
	}
	unlock := s.locks.lock(req.containerID)
	defer unlock()
	if att, ok := s.store.Get(req.key()); ok && !ofNetwork(&att, req.conf.Name) {
		s.log.Info("CNI DEL for another network's attachment: left alone", "container", req.containerID, "ifname", req.ifName,
			"network", req.conf.Name, "attachmentNetwork", att.Network)
		return &cniv1.CniCmdResponse{}, nil
	}
	if err := s.del(ctx, req.containerID, req.ifName, req.netns); err != nil {
		s.log.Error(err, "CNI DEL failed", "container", req.containerID, "ifname", req.ifName)
		return fail(withDetails(cniv1.CodeInternal, "weir: removing the pod's networking failed (the runtime will retry)", err))
	}
	s.log.Info("CNI DEL done", "container", req.containerID, "ifname", req.ifName)
	return &cniv1.CniCmdResponse{}, nil
}

// del removes everything of one attachment; every step tolerates "already
// gone", so a repeated or partial DEL completes.
func (s *Server) del(ctx context.Context, containerID, ifName, netns string) error {
	key := interfacestore.Key(containerID, ifName)
	att, found := s.store.Get(key)
	hostIf := podnet.HostIfName(containerID, ifName)
	if found {
		hostIf = att.PortName
		if netns == "" {
			netns = att.NetNS
		}
	}
	// The flows and the port go first (in that order, so no flow points at
	// a missing port); the veth is deleted at the same time, since the
	// kernel takes ~17 ms to remove a device.
	t0 := time.Now()
	var flowsDur, portDur time.Duration
	ovsErr := make(chan error, 1)
	go func() {
		var errs []error
		if err := s.flows.DeletePod(ctx, key); err != nil {
			errs = append(errs, err)
		}
		flowsDur = time.Since(t0)
		if err := s.ports.DeletePort(ctx, s.cfg.Bridge, hostIf); err != nil {
			errs = append(errs, err)
		}
		portDur = time.Since(t0) - flowsDur
		ovsErr <- errors.Join(errs...)
	}()
	errs := []error{podnet.TeardownVeth(ctx, s.cfg.HostNetNSPath, hostIf, netns, ifName)}
	vethDur := time.Since(t0)
	errs = append(errs, <-ovsErr)
	s.log.V(2).Info("DEL steps", "container", containerID, "ifname", ifName, "flows", flowsDur, "port", portDur, "veth", vethDur)
	if err := errors.Join(errs...); err != nil {
		return err // keep the IP and the record: the runtime retries DEL
	}
	for _, alloc := range s.allocators() {
		if err := alloc.Release(key); err != nil {
			return err
		}
	}
	s.ofports.Release(hostIf)
	s.store.Delete(key)
	return nil
}

// CmdCheck verifies a pod interface (CNI spec, CHECK). It consults
// prevResult, which the runtime must pass: what it claims about Weir's
// interfaces and address must be what Weir set up (the sandbox interface
// with its MAC and netns, the host interface, the IP), and then everything
// Weir owns must be in place: the veth pair with its address, MAC and
// routes, the OVS port and its OpenFlow port number, the pod's flows and
// the IPAM record. What later plugins of the chain may change is not
// checked: the pod side's MTU, other addresses, routes and sysctls. The MAC
// is Weir's: the pod's flows match and rewrite it.
func (s *Server) CmdCheck(ctx context.Context, in *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	req, cerr := parseRequest("CHECK", in.GetCniArgs(), true, true)
	if cerr != nil {
		return fail(cerr)
	}
	prev, cerr := req.prevResult()
	if cerr != nil {
		return fail(cerr)
	}
	if prev == nil {
		return fail(errorf(cniv1.CodeInvalidNetworkConfig,
			"weir: CHECK without prevResult: the runtime must pass the result of the ADD as prevResult (CNI spec %s, CHECK)", req.conf.CNIVersion))
	}
	routes, cerr := req.conf.extraRoutes(req.ifName, s.gateways()...)
	if cerr != nil {
		return fail(cerr)
	}
	unlock := s.locks.lock(req.containerID)
	defer unlock()
	found, ok := s.store.Get(req.key())
	att := &found
	if !ok || !ofNetwork(att, req.conf.Name) {
		return fail(errorf(cniv1.CodeUnknownContainer, "weir: CHECK: network %q has no attachment for container %s interface %s",
			req.conf.Name, req.containerID, req.ifName))
	}
	var want []podAddress
	for _, alloc := range s.allocators() {
		if ip := sameFamily(alloc.Gateway(), ipsOf(att)); ip != nil {
			want = append(want, podAddress{ipNet: net.IPNet{IP: ip, Mask: alloc.CIDR().Mask}, gateway: alloc.Gateway(), alloc: alloc})
		} else {
			want = append(want, podAddress{gateway: alloc.Gateway(), alloc: alloc})
		}
	}
	problems := checkPrevResult(prev, att, want)
	if !sameNetNS(req.netns, att.NetNS) {
		problems = append(problems, fmt.Sprintf("CNI_NETNS %s is not the netns %s of the ADD", req.netns, att.NetNS))
	}
	vcfg := podnet.VethConfig{NetNSPath: req.netns, IfName: req.ifName, HostIfName: att.PortName,
		HostNetNSPath: s.cfg.HostNetNSPath, MAC: att.MAC, MTU: s.mtuFor(req), TxChecksumOff: s.cfg.TxChecksumOff,
		IPNet: &want[0].ipNet, Gateway: want[0].gateway, NoDefaultRoute: !req.conf.wantsDefaultRoute(req.ifName),
		Routes: ofFamily(routes, want[0].gateway)}
	if len(want) > 1 {
		vcfg.Second = &podnet.Address{IPNet: &want[1].ipNet, Gateway: want[1].gateway, Routes: ofFamily(routes, want[1].gateway)}
	}
	if err := podnet.CheckVeth(ctx, vcfg); err != nil {
		problems = append(problems, err.Error())
	}
	if p := checkBandwidth(req, vcfg); p != "" {
		problems = append(problems, p)
	}
	if p, err := s.ports.GetPort(ctx, s.cfg.Bridge, att.PortName); err != nil {
		problems = append(problems, fmt.Sprintf("OVS port %s: %v", att.PortName, err))
	} else if p.OFPort != int(att.OFPort) {
		problems = append(problems, fmt.Sprintf("OVS port %s has ofport %d, want %d", att.PortName, p.OFPort, att.OFPort))
	}
	if err := s.flows.CheckPod(ctx, att.Key()); err != nil {
		problems = append(problems, err.Error())
	}
	for _, w := range want {
		if w.ipNet.IP == nil {
			problems = append(problems, fmt.Sprintf("the attachment has no address of pod CIDR %s", w.alloc.CIDR()))
		} else if ip, ok := w.alloc.Lookup(att.Key()); !ok || !ip.Equal(w.ipNet.IP) {
			problems = append(problems, fmt.Sprintf("IPAM has no record of %s for this attachment", w.ipNet.IP))
		}
	}
	if len(problems) > 0 {
		return fail(&cniError{code: cniv1.CodeInternal, msg: "weir: CHECK failed: " + strings.Join(problems, "; ")})
	}
	return &cniv1.CniCmdResponse{}, nil
}

// podAddress is one address Weir gave an attachment (ipNet.IP nil if the
// attachment lacks one of that family), with its family's gateway and IPAM.
type podAddress struct {
	ipNet   net.IPNet
	gateway net.IP
	alloc   *ipam.Allocator
}

// checkPrevResult lists where prevResult contradicts Weir's attachment:
// it must list the host interface (no sandbox) and the container interface
// in att's netns with att's MAC, and each pod address on that interface;
// another address of a pod CIDR on it is a wrong claim. Interfaces,
// addresses and routes of other plugins are allowed.
func checkPrevResult(prev *current.Result, att *interfacestore.Interface, want []podAddress) []string {
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, "prevResult: "+fmt.Sprintf(format, a...)) }
	hostIdx, podIdx := -1, -1
	for i, ifc := range prev.Interfaces {
		switch {
		case ifc.Name == att.PortName && ifc.Sandbox == "":
			hostIdx = i
		case ifc.Name == att.IfName && ifc.Sandbox != "":
			if podIdx >= 0 {
				add("lists interface %s twice", att.IfName)
			}
			podIdx = i
			if !sameNetNS(ifc.Sandbox, att.NetNS) {
				add("interface %s is in sandbox %s, Weir attached it in %s", att.IfName, ifc.Sandbox, att.NetNS)
			}
			if ifc.Mac != "" {
				if mac, err := net.ParseMAC(ifc.Mac); err != nil || mac.String() != att.MAC.String() {
					add("interface %s has MAC %s, Weir gave it %s", att.IfName, ifc.Mac, att.MAC)
				}
			}
		}
	}
	if hostIdx < 0 {
		add("does not list Weir's host interface %s", att.PortName)
	}
	if podIdx < 0 {
		add("does not list interface %s in a sandbox", att.IfName)
	}
	for _, w := range want {
		if w.ipNet.IP == nil {
			continue
		}
		podIP := w.ipNet
		found := false
		for _, ipc := range prev.IPs {
			onPod := ipc.Interface != nil && *ipc.Interface == podIdx && podIdx >= 0
			switch {
			case ipc.Address.IP.Equal(podIP.IP):
				found = true
				if ones, _ := ipc.Address.Mask.Size(); ones != prefixLen(podIP) {
					add("address %s has the wrong prefix length, Weir assigned %s", ipc.Address.String(), podIP.String())
				}
				if ipc.Interface != nil && !onPod {
					add("address %s is not on interface %s", ipc.Address.IP, att.IfName)
				}
				if ipc.Gateway != nil && !ipc.Gateway.Equal(w.gateway) {
					add("address %s has gateway %s, Weir's is %s", ipc.Address.IP, ipc.Gateway, w.gateway)
				}
			case onPod && podIP.Contains(ipc.Address.IP):
				add("claims address %s on interface %s, Weir assigned %s", ipc.Address.String(), att.IfName, podIP.String())
			}
		}
		if !found {
			add("does not list Weir's address %s", podIP.String())
		}
	}
	return problems
}

func prefixLen(n net.IPNet) int {
	ones, _ := n.Mask.Size()
	return ones
}

// sameNetNS reports whether two netns paths name the same namespace:
// runtimes may pass /var/run/netns/X, /run/netns/X (one directory on
// systemd hosts) or /proc/PID/ns/net. A path that cannot be resolved only
// equals itself.
func sameNetNS(a, b string) bool {
	if a == b {
		return true
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}

// CmdStatus reports whether the agent can serve ADD.
func (s *Server) CmdStatus(_ context.Context, in *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	if _, cerr := parseRequest("STATUS", in.GetCniArgs(), false, false); cerr != nil {
		return fail(cerr)
	}
	if s.cfg.Dataplane != nil {
		if err := s.cfg.Dataplane(); err != nil {
			return fail(withDetails(cniv1.CodeLimitedConnectivity, "weir: the node's dataplane is impaired; existing pods may have limited connectivity", err))
		}
	}
	if !s.ready.Load() {
		return fail(errorf(cniv1.CodePluginNotAvailable, "weir: the agent is not ready (bridge, pipeline or state restore still in progress)"))
	}
	// An exhausted pool: no ADD can succeed until a pod goes. The existing
	// pods are not affected, hence 50 rather than 51.
	for _, alloc := range s.allocators() {
		if used, size := len(alloc.List()), alloc.Size(); uint64(used) >= size {
			return fail(errorf(cniv1.CodePluginNotAvailable, "weir: no IP address left for new pods in pod CIDR %s (%d of %d in use)",
				alloc.CIDR(), used, size))
		}
	}
	return &cniv1.CniCmdResponse{}, nil
}

// CmdGC removes the attachments of the request's network that are not in
// the runtime's valid list (CNI spec: GC concerns "attachments to this
// network"); other networks' attachments are not touched. Records without
// a network name count as Config.DefaultNetwork's.
func (s *Server) CmdGC(ctx context.Context, in *cniv1.CniCmdRequest) (*cniv1.CniCmdResponse, error) {
	req, cerr := parseRequest("GC", in.GetCniArgs(), false, false)
	if cerr != nil {
		return fail(cerr)
	}
	valid := map[string]bool{}
	for _, a := range req.conf.ValidAttachments {
		valid[a.ContainerID+"/"+a.IfName] = true
	}
	var errs []error
	for _, att := range s.store.List() {
		if valid[att.Key()] || s.gcNetwork(&att) != req.conf.Name {
			continue
		}
		unlock := s.locks.lock(att.ContainerID)
		now, ok := s.store.Get(att.Key())
		same := ok && sameAttachment(&now, &att) // not DELed (and re-added) meanwhile
		var err error
		if same {
			err = s.del(ctx, att.ContainerID, att.IfName, att.NetNS)
		}
		unlock()
		if !same {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", att.Key(), err))
			continue
		}
		s.log.Info("GC removed a stale attachment", "container", att.ContainerID, "ifname", att.IfName, "network", req.conf.Name)
	}
	if err := errors.Join(errs...); err != nil {
		return fail(withDetails(cniv1.CodeInternal, "weir: GC could not remove every stale attachment", err))
	}
	return &cniv1.CniCmdResponse{}, nil
}

// allocators returns the IPAM of each family the node serves, the primary
// one (New's alloc) first: IPv4 then IPv6 on a dual-stack node, IPv4 or
// IPv6 alone on a single-family node.
func (s *Server) allocators() []*ipam.Allocator {
	if s.cfg.IPv6 != nil {
		return []*ipam.Allocator{s.ipam, s.cfg.IPv6}
	}
	return []*ipam.Allocator{s.ipam}
}

// gateways returns the gateway of each family the node serves.
func (s *Server) gateways() []net.IP {
	var out []net.IP
	for _, a := range s.allocators() {
		out = append(out, a.Gateway())
	}
	return out
}

// defaultRoute is the default route of gw's family.
func defaultRoute(gw net.IP) *net.IPNet {
	if gw.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// ipsOf returns i's addresses as net.IPs.
func ipsOf(i *interfacestore.Interface) []net.IP {
	out := make([]net.IP, len(i.IPs))
	for n, a := range i.IPs {
		out[n] = net.IP(a.AsSlice())
	}
	return out
}

// sameAttachment reports whether a and b are one ADD's attachment: a DEL
// and a new ADD of the same key give another port number, or netns, or
// address.
func sameAttachment(a, b *interfacestore.Interface) bool {
	return a.Key() == b.Key() && a.NetNS == b.NetNS && a.PortName == b.PortName && a.OFPort == b.OFPort &&
		slices.Equal(a.IPs, b.IPs) && a.MAC.String() == b.MAC.String()
}

// keyedMutex serializes work per container ID.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
