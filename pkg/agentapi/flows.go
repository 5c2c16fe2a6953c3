package agentapi

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
)

// flowKey identifies a flow by table, priority and match (not cookie):
// what OpenFlow itself uses to tell flows apart.
func flowKey(f *openflow.Flow) string {
	return strconv.Itoa(int(f.Table)) + " " + (*openflow.Renderer)(nil).Match(f)
}

// knownFlows maps flow keys to the flows the pipeline renders for the
// node's current state: read-back flows carry no actions, these do.
func (s *Server) knownFlows(n *node) map[string]*openflow.Flow {
	out := map[string]*openflow.Flow{}
	add := func(fs []*openflow.Flow, err error) {
		if err != nil {
			s.log.V(2).Info("Cannot render flows for their actions", "err", err)
			return
		}
		for _, f := range fs {
			out[flowKey(f)] = f
		}
	}
	add(s.deps.Pipeline.BaseFlows())
	add(s.deps.Pipeline.PolicyFlows())
	for _, p := range n.pods {
		if p.OFPort != 0 && p.IP != nil {
			add(s.deps.Pipeline.PodFlows(p.pipelineInterface(), 0))
		}
	}
	for _, peer := range s.peers() {
		add(s.deps.Pipeline.PeerFlows(peer, 0))
	}
	return out
}

func (s *Server) peers() []pipeline.PeerNode {
	if s.deps.Peers == nil {
		return nil
	}
	return s.deps.Peers.PeerNodes()
}

// parseTable parses a table name or number.
func parseTable(t string) (uint8, error) {
	for _, tb := range pipeline.Tables() {
		if strings.EqualFold(tb.Name, t) {
			return tb.ID, nil
		}
	}
	n, err := strconv.ParseUint(t, 10, 8)
	if err != nil || n > 253 {
		names := make([]string, 0)
		for _, tb := range pipeline.Tables() {
			names = append(names, tb.Name)
		}
		return 0, status.Errorf(codes.InvalidArgument, "unknown table %q: want a number (0-253) or one of %s", t,
			strings.Join(names, ", "))
	}
	return uint8(n), nil
}

// renderer prints table and port names like ovs-ofctl --names.
func (n *node) renderer() *openflow.Renderer {
	return &openflow.Renderer{TableName: pipeline.TableName, PortName: func(p uint32) (string, bool) {
		name, ok := n.portNames[p]
		if ok {
			name = quotePortName(name)
		}
		return name, ok
	}}
}

// quotePortName quotes a port name as ovs-ofctl does when it holds
// anything but letters, digits and underscores.
func quotePortName(name string) string {
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return strconv.Quote(name)
		}
	}
	return name
}

// renderStats renders a read-back flow like `ovs-ofctl -O OpenFlow15
// --names dump-flows` (without idle_age, which OpenFlow 1.5 flow stats do
// not carry), taking the actions from known when it holds the flow.
func renderStats(r *openflow.Renderer, st openflow.FlowStats, known map[string]*openflow.Flow) string {
	var b strings.Builder
	fmt.Fprintf(&b, " cookie=%#x, duration=%.3fs, table=", st.Flow.Cookie, st.Duration.Seconds())
	if name, ok := pipeline.TableName(st.Flow.Table); ok {
		b.WriteString(name)
	} else {
		b.WriteString(strconv.Itoa(int(st.Flow.Table)))
	}
	fmt.Fprintf(&b, ", n_packets=%d, n_bytes=%d, ", st.Packets, st.Bytes)
	if st.Flow.IdleTimeout != 0 {
		fmt.Fprintf(&b, "idle_timeout=%d, ", st.Flow.IdleTimeout)
	}
	if st.Flow.HardTimeout != 0 {
		fmt.Fprintf(&b, "hard_timeout=%d, ", st.Flow.HardTimeout)
	}
	b.WriteString(r.Match(st.Flow))
	b.WriteString(" actions=")
	if k, ok := known[flowKey(st.Flow)]; ok {
		b.WriteString(r.Actions(k))
	} else {
		b.WriteString("(unknown: not a flow of this agent's current state)")
	}
	return b.String()
}

// ListFlows implements agentv1.AgentServiceServer.
func (s *Server) ListFlows(ctx context.Context, req *agentv1.ListFlowsRequest) (*agentv1.ListFlowsResponse, error) {
	var filter openflow.FlowFilter
	if req.GetTable() != "" {
		t, err := parseTable(req.GetTable())
		if err != nil {
			return nil, err
		}
		filter.Table = &t
	}
	n, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	known := s.knownFlows(n)
	// keep selects flows by key (pod, peer) or cookie (policy); nil: all.
	var keep func(openflow.FlowStats) bool
	var ownKeys map[string]bool
	switch {
	case req.GetPod() != nil:
		p, err := n.findPod(req.GetPod(), "pod filter")
		if err != nil {
			return nil, err
		}
		fs, err := s.deps.Pipeline.PodFlows(p.pipelineInterface(), 0)
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "pod %s: %v", p.ref(), err)
		}
		ownKeys = keysOf(fs)
	case req.GetPeerNode() != "":
		var found bool
		for _, peer := range s.peers() {
			if peer.Name == req.GetPeerNode() {
				fs, err := s.deps.Pipeline.PeerFlows(peer, 0)
				if err != nil {
					return nil, status.Errorf(codes.FailedPrecondition, "peer %s: %v", peer.Name, err)
				}
				ownKeys, found = keysOf(fs), true
			}
		}
		if !found {
			return nil, status.Errorf(codes.NotFound, "no peer node %q on this node", req.GetPeerNode())
		}
	case req.GetPolicy() != nil:
		rules, err := s.selectRules(req.GetPolicy())
		if err != nil {
			return nil, err
		}
		cookies := map[uint64]bool{}
		for _, r := range rules {
			cookies[uint64(s.deps.Pipeline.PolicyRuleCookie(r.ID))] = true
		}
		keep = func(st openflow.FlowStats) bool { return cookies[st.Flow.Cookie] }
	}
	stats, err := s.deps.Switch.DumpFlows(ctx, filter)
	if err != nil {
		return nil, internalError(ctx, "dumping flows", err)
	}
	if ownKeys != nil {
		// The owner's cookie is that of its flows on the switch: select
		// every flow carrying it.
		cookies := map[uint64]bool{}
		for _, st := range stats {
			if ownKeys[flowKey(st.Flow)] && st.Flow.Cookie != 0 {
				cookies[st.Flow.Cookie] = true
			}
		}
		if filter.Table != nil { // the key match may lie in another table
			all, err := s.deps.Switch.DumpFlows(ctx, openflow.FlowFilter{})
			if err != nil {
				return nil, internalError(ctx, "dumping flows", err)
			}
			for _, st := range all {
				if ownKeys[flowKey(st.Flow)] && st.Flow.Cookie != 0 {
					cookies[st.Flow.Cookie] = true
				}
			}
		}
		keep = func(st openflow.FlowStats) bool { return cookies[st.Flow.Cookie] }
	}
	r := n.renderer()
	resp := &agentv1.ListFlowsResponse{}
	for _, st := range stats {
		if keep != nil && !keep(st) {
			continue
		}
		name, _ := pipeline.TableName(st.Flow.Table)
		resp.Flows = append(resp.Flows, &agentv1.Flow{TableId: uint32(st.Flow.Table), TableName: name, Cookie: st.Flow.Cookie,
			Priority: uint32(st.Flow.Priority), Text: renderStats(r, st, known), PacketCount: st.Packets, ByteCount: st.Bytes,
			DurationSeconds: st.Duration.Seconds()})
	}
	return resp, nil
}

func keysOf(fs []*openflow.Flow) map[string]bool {
	m := make(map[string]bool, len(fs))
	for _, f := range fs {
		m[flowKey(f)] = true
	}
	return m
}
