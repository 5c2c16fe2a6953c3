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
	NodeName      string
	Bridge        string
	DatapathType  string
	PodCIDR       *net.IPNet
	GatewayName   string
	GatewayIP     net.IP
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
}

// Server implements agentv1.AgentServiceServer.
type Server struct {
	agentv1.UnimplementedAgentServiceServer
	cfg  Config
	deps Deps
	log  klog.Logger
}

// New returns a server answering from deps.
func New(cfg Config, deps Deps) *Server {
	return &Server{cfg: cfg, deps: deps, log: cfg.Logger.WithName("agentapi")}
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
		Bridge: s.cfg.Bridge, GatewayIp: ipString(s.cfg.GatewayIP), GatewayMac: macString(s.cfg.GatewayMAC),
		Openflow: &agentv1.ConnectionState{Connected: s.deps.Switch.State() == openflow.StateReady,
			Generation: s.deps.Switch.Generation(), Endpoint: s.cfg.MgmtSocket},
		Ovsdb:           &agentv1.ConnectionState{Connected: s.deps.OVSDB.Connected(), Endpoint: s.cfg.OVSDBEndpoint},
		LocalPodCount:   uint32(len(s.deps.Pods.List())),
		PolicyRuleCount: uint32(len(s.deps.Pipeline.PolicyRules())),
		Ready:           true,
	}
	if s.cfg.PodCIDR != nil {
		resp.PodCidr = s.cfg.PodCIDR.String()
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
