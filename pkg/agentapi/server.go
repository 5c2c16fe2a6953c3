package agentapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
)

// Switch is the OpenFlow connection to the bridge (*openflow.Switch).
type Switch interface {
	DumpFlows(ctx context.Context, filter openflow.FlowFilter) ([]openflow.FlowStats, error)
	State() openflow.State
	Generation() uint64
}

// Pipeline is the switching pipeline (*pipeline.Pipeline): the flows it
// renders (for the actions of read-back flows) and the realized policy.
type Pipeline interface {
	BaseFlows() ([]*openflow.Flow, error)
	PodFlows(pod pipeline.PodInterface, cookie openflow.Cookie) ([]*openflow.Flow, error)
	PeerFlows(peer pipeline.PeerNode, cookie openflow.Cookie) ([]*openflow.Flow, error)
	PolicyFlows() ([]*openflow.Flow, error)
	PolicyRules() []uint32
	PolicyRule(id uint32) (pipeline.PolicyRule, bool)
	PolicyRuleStats(ctx context.Context) (map[uint32]pipeline.Counters, error)
	PolicyRuleCookie(id uint32) openflow.Cookie
	IsolationDrops(ctx context.Context) ([]pipeline.IsolationDrop, error)
	PolicyGeneration() uint32
}

// Pods lists the node's pod interfaces (*interfacestore.Store).
type Pods interface {
	List() []interfacestore.Interface
}

// OVSDB is the agent's OVSDB client (*ovsdb.Client).
type OVSDB interface {
	Connected() bool
	OVSVersion(ctx context.Context) (string, error)
	ListPorts(ctx context.Context, bridge string) ([]ovsdb.PortInfo, error)
}

// Peers lists the remote nodes with installed tunnel flows (the Node
// controller); nil in standalone mode.
type Peers interface {
	PeerNodes() []pipeline.PeerNode
}

// Isolation names the policies isolating a local pod (the NetworkPolicy
// controller, *policy.Controller); nil in standalone mode.
type Isolation interface {
	IsolatingPolicies(ofport uint32, dir pipeline.Direction) []string
}

// Unixctl calls ovs-vswitchd's unixctl commands (*unixctl.Client).
type Unixctl interface {
	Call(ctx context.Context, command string, args ...string) (string, error)
}

// Config is what the server reports about the node and needs to build
// trace packets.
type Config struct {
	NodeName     string
	Bridge       string
	DatapathType string
	// PodCIDR and GatewayIP are the node's pod subnet and its gateway's
	// address in it, of the node's first family: IPv4, or IPv6 on an
	// IPv6-only node.
	PodCIDR     *net.IPNet
	GatewayName string
	GatewayIP   net.IP
	// PodCIDRv6 and GatewayIPv6 are the IPv6 pod subnet and gateway
	// address of a dual-stack node. An IPv6-only node may give its IPv6
	// ones here or in PodCIDR and GatewayIP (or both): each address is
	// taken by its family, wherever it is given.
	PodCIDRv6     *net.IPNet
	GatewayIPv6   net.IP
	GatewayMAC    net.HardwareAddr
	GatewayOFPort uint32
	TunnelOFPort  uint32 // 0 without a tunnel
	// OVSDBEndpoint and MgmtSocket are only reported.
	OVSDBEndpoint string
	MgmtSocket    string
	// Ready reports whether the agent serves CNI ADD, with the reason when
	// it does not. Nil means ready.
	Ready  func() (bool, string)
	Logger klog.Logger
}

// Deps are the server's dependencies. Peers and Isolation may be nil.
type Deps struct {
	Switch    Switch
	Pipeline  Pipeline
	Pods      Pods
	OVSDB     OVSDB
	Peers     Peers
	Isolation Isolation
	Unixctl   Unixctl
	Audit     AuditSources // what only Audit reads (audit.go)
	// The Service proxy's sources (services.go): the controller
	// (*proxy.Controller), the pipeline's group IDs (*pipeline.Pipeline)
	// and the switch's group counters (*openflow.Switch). All nil when the
	// proxy is off: ListServices answers FailedPrecondition and traces do
	// not look for Services. All three are needed (one nil = off).
	Services      Services
	ServiceGroups ServiceGroups
	Groups        GroupDumper
}

// Server implements agentv1.AgentServiceServer.
type Server struct {
	agentv1.UnimplementedAgentServiceServer
	cfg  Config
	deps Deps
	log  klog.Logger
	// The node's pod CIDRs and gateway addresses by family (Config's,
	// sorted by family: see familyOf).
	cidrs [2]*net.IPNet
	gws   [2]net.IP
}

// Address families, as indices of per-family arrays.
const (
	v4 = 0
	v6 = 1
)

// familyOf returns ip's family (v4 for IPv4 and IPv4-mapped addresses).
func familyOf(ip net.IP) int {
	if ip.To4() != nil {
		return v4
	}
	return v6
}

func familyName(f int) string {
	if f == v6 {
		return "IPv6"
	}
	return "IPv4"
}

// New returns a server answering from deps.
func New(cfg Config, deps Deps) *Server {
	s := &Server{cfg: cfg, deps: deps, log: cfg.Logger.WithName("agentapi")}
	for _, c := range []*net.IPNet{cfg.PodCIDRv6, cfg.PodCIDR} { // PodCIDR wins
		if c != nil {
			s.cidrs[familyOf(c.IP)] = c
		}
	}
	for _, ip := range []net.IP{cfg.GatewayIPv6, cfg.GatewayIP} {
		if ip != nil {
			s.gws[familyOf(ip)] = normIP(ip)
		}
	}
	return s
}

// normIP returns an IPv4 address in its 4-byte form, others as they are.
func normIP(ip net.IP) net.IP {
	if v := ip.To4(); v != nil {
		return v
	}
	return ip
}

// ServeConfig says where to listen.
type ServeConfig struct {
	// UnixSocket is created mode 0600 (its directory 0700 if missing); a
	// stale socket file is replaced.
	UnixSocket string
	// TCPAddress, when set, is also served, with TLS from TLSCertFile and
	// TLSKeyFile (both required).
	TCPAddress  string
	TLSCertFile string
	TLSKeyFile  string
}

// Serve serves the API until ctx ends.
func (s *Server) Serve(ctx context.Context, sc ServeConfig) error {
	if sc.UnixSocket == "" {
		return errors.New("agentapi: a unix socket path is required")
	}
	ln, err := ListenUnix(sc.UnixSocket)
	if err != nil {
		return err
	}
	var tcpLn net.Listener
	var creds credentials.TransportCredentials
	if sc.TCPAddress != "" {
		if sc.TLSCertFile == "" || sc.TLSKeyFile == "" {
			ln.Close()
			return fmt.Errorf("agentapi: TCP address %s needs a TLS certificate and key", sc.TCPAddress)
		}
		cert, err := tls.LoadX509KeyPair(sc.TLSCertFile, sc.TLSKeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("agentapi: loading TLS key pair: %w", err)
		}
		creds = credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if tcpLn, err = net.Listen("tcp", sc.TCPAddress); err != nil {
			ln.Close()
			return fmt.Errorf("agentapi: listening on %s: %w", sc.TCPAddress, err)
		}
	}
	unixSrv := s.grpcServer()
	errc := make(chan error, 2)
	go func() { errc <- unixSrv.Serve(ln) }()
	var tcpSrv *grpc.Server
	if tcpLn != nil {
		tcpSrv = s.grpcServer(grpc.Creds(creds))
		go func() { errc <- tcpSrv.Serve(tcpLn) }()
	}
	s.log.Info("Serving the agent API", "socket", sc.UnixSocket, "tcp", sc.TCPAddress)
	var serr error
	select {
	case <-ctx.Done():
	case serr = <-errc:
	}
	unixSrv.Stop()
	if tcpSrv != nil {
		tcpSrv.Stop()
	}
	os.Remove(sc.UnixSocket)
	if serr != nil && !errors.Is(serr, grpc.ErrServerStopped) {
		return fmt.Errorf("agentapi: serving: %w", serr)
	}
	return nil
}

func (s *Server) grpcServer(opts ...grpc.ServerOption) *grpc.Server {
	g := grpc.NewServer(opts...)
	agentv1.RegisterAgentServiceServer(g, s)
	reflection.Register(g)
	return g
}

// ListenUnix listens on a unix socket at path with mode 0600, creating its
// directory (0700) if needed and replacing a stale socket.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("agentapi: creating socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("agentapi: removing stale socket %s: %w", path, err)
	}
	// bind creates the socket with the umask's mode; until the chmod below
	// a non-root client could connect if the directory let it in (the
	// directory this function creates is 0700).
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agentapi: listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("agentapi: setting mode of %s: %w", path, err)
	}
	return ln, nil
}

// buildVersion returns the module version, VCS revision and Go version of
// the running binary.
func buildVersion() (version, revision, goVersion string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", "", ""
	}
	version = bi.Main.Version
	for _, st := range bi.Settings {
		switch st.Key {
		case "vcs.revision":
			revision = st.Value
		case "vcs.modified":
			if st.Value == "true" {
				revision += "-dirty"
			}
		}
	}
	return version, revision, bi.GoVersion
}

// AgentInfo implements agentv1.AgentServiceServer.
func (s *Server) AgentInfo(ctx context.Context, _ *agentv1.AgentInfoRequest) (*agentv1.AgentInfoResponse, error) {
	v, rev, gov := buildVersion()
	resp := &agentv1.AgentInfoResponse{
		Version: v, VcsRevision: rev, GoVersion: gov, NodeName: s.cfg.NodeName, DatapathType: s.cfg.DatapathType,
		Bridge: s.cfg.Bridge, GatewayMac: macString(s.cfg.GatewayMAC),
		Openflow: &agentv1.ConnectionState{Connected: s.deps.Switch.State() == openflow.StateReady,
			Generation: s.deps.Switch.Generation(), Endpoint: s.cfg.MgmtSocket},
		Ovsdb:           &agentv1.ConnectionState{Connected: s.deps.OVSDB.Connected(), Endpoint: s.cfg.OVSDBEndpoint},
		LocalPodCount:   uint32(len(s.deps.Pods.List())),
		PolicyRuleCount: uint32(len(s.deps.Pipeline.PolicyRules())),
		Ready:           true,
	}
	for f := range s.cidrs {
		if c := s.cidrs[f]; c != nil {
			resp.PodCidrs = append(resp.PodCidrs, c.String())
		}
		if gw := s.gws[f]; gw != nil {
			resp.GatewayIps = append(resp.GatewayIps, gw.String())
		}
	}
	if len(resp.PodCidrs) > 0 {
		resp.PodCidr = resp.PodCidrs[0]
	}
	if len(resp.GatewayIps) > 0 {
		resp.GatewayIp = resp.GatewayIps[0]
	}
	if s.cfg.Ready != nil {
		resp.Ready, resp.NotReadyReason = s.cfg.Ready()
	}
	if s.deps.Peers != nil {
		for _, p := range s.deps.Peers.PeerNodes() {
			resp.PeerNodes = append(resp.PeerNodes, p.Name)
		}
	}
	resp.OvsVersion = s.ovsVersion(ctx)
	stats, err := s.deps.Switch.DumpFlows(ctx, openflow.FlowFilter{})
	if err != nil {
		s.log.V(2).Info("Cannot count flows", "err", err)
	} else {
		counts := map[uint8]uint32{}
		for _, st := range stats {
			counts[st.Flow.Table]++
		}
		for _, t := range pipeline.Tables() {
			resp.FlowCounts = append(resp.FlowCounts, &agentv1.TableFlowCount{TableId: uint32(t.ID), TableName: t.Name,
				FlowCount: counts[t.ID]})
			delete(counts, t.ID)
		}
		for id, n := range counts { // tables outside the pipeline
			resp.FlowCounts = append(resp.FlowCounts, &agentv1.TableFlowCount{TableId: uint32(id), FlowCount: n})
		}
	}
	return resp, nil
}

// ovsVersion returns Open_vSwitch.ovs_version, else ovs-vswitchd's
// unixctl "version" (first line, "ovs-vswitchd (Open vSwitch) 3.1.0").
func (s *Server) ovsVersion(ctx context.Context) string {
	if v, err := s.deps.OVSDB.OVSVersion(ctx); err == nil && v != "" {
		return v
	}
	if s.deps.Unixctl == nil {
		return ""
	}
	out, err := s.deps.Unixctl.Call(ctx, "version")
	if err != nil {
		s.log.V(2).Info("Cannot read the OVS version", "err", err)
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if i := strings.LastIndexByte(line, ' '); i >= 0 {
		return line[i+1:]
	}
	return line
}

func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

func macString(m net.HardwareAddr) string {
	if m == nil {
		return ""
	}
	return m.String()
}

// internalError wraps err as codes.Internal (or Canceled/DeadlineExceeded
// when the request's context ended).
func internalError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Errorf(codes.Unavailable, "%s: %v", what, err)
}
