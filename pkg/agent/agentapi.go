package agent

import (
	"context"
	"github.com/weirnet/weir/pkg/policy"
	"net"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/agentapi"
	"github.com/weirnet/weir/pkg/cniserver"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
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
