package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

// auditAgent answers Audit with rep or err.
type auditAgent struct {
	agentv1.UnimplementedAgentServiceServer
	rep *agentv1.AuditReport
	err error
}

func (a *auditAgent) Audit(context.Context, *agentv1.AuditRequest) (*agentv1.AuditReport, error) {
	return a.rep, a.err
}

func startAuditAgent(t *testing.T, a *auditAgent) string {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	agentv1.RegisterAgentServiceServer(srv, a)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

func TestAuditCommand(t *testing.T) {
	counts := &agentv1.AuditCounts{Ports: 2, Attachments: 2, Ips: 2, Veths: 2, Routes: 1, Peers: 1, Flows: 40, Pods: 5}
	inconsistent := &agentv1.AuditReport{NodeName: "node-a", Round: 3, Checked: counts, Inconsistencies: []*agentv1.Inconsistency{
		{Kind: "leaked-ip", Subject: "ip 10.244.0.9", Detail: "allocated in IPAM to gone/eth0"},
		{Kind: "orphan-veth", Subject: "veth weir0123456789a", Detail: "remove it: ip link del weir0123456789a"},
	}}
	tests := []struct {
		name   string
		agent  *auditAgent
		args   []string
		code   int
		stdout []string // substrings, in order
		stderr string
	}{
		{name: "clean", agent: &auditAgent{rep: &agentv1.AuditReport{NodeName: "node-a", Round: 3, Checked: counts}},
			code: auditClean, stdout: []string{"Node:", "node-a (cookie round 3)", "Checked:", "2 pod ports", "40 flows", "5 pods",
				"No inconsistencies."}},
		{name: "inconsistent", agent: &auditAgent{rep: inconsistent}, code: auditInconsistent,
			stdout: []string{"KIND", "SUBJECT", "DETAIL", "leaked-ip", "ip 10.244.0.9", "allocated in IPAM to gone/eth0",
				"orphan-veth", "veth weir0123456789a"},
			stderr: "weirctl: audit: 2 inconsistencies"},
		{name: "notes", agent: &auditAgent{rep: &agentv1.AuditReport{Checked: counts, Notes: []string{"peer routes not checked"}}},
			code: auditClean, stdout: []string{"(standalone)", "Note:", "peer routes not checked", "No inconsistencies."}},
		{name: "agent error", agent: &auditAgent{err: status.Error(codes.Unavailable, "audit: verifying flows: closed")},
			code: auditFailed, stderr: "weirctl: Unavailable: audit: verifying flows: closed"},
		{name: "usage", agent: &auditAgent{}, args: []string{"extra"}, code: auditFailed, stderr: "takes no arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := startAuditAgent(t, tc.agent)
			r := runCLI(context.Background(), nil, append([]string{"--socket", sock, "audit"}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.code, r.stdout, r.stderr)
			}
			rest := r.stdout
			for _, want := range tc.stdout {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("stdout lacks %q (in order):\n%s", want, r.stdout)
				}
				rest = rest[i+len(want):]
			}
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tc.stderr)
			}
		})
	}
}

func TestAuditCommandJSON(t *testing.T) {
	rep := &agentv1.AuditReport{NodeName: "node-a", Checked: &agentv1.AuditCounts{Flows: 4},
		Inconsistencies: []*agentv1.Inconsistency{{Kind: "orphan-flow", Subject: "flow table=Classifier priority=1 cookie=0x0 match=-"}}}
	sock := startAuditAgent(t, &auditAgent{rep: rep})
	r := runCLI(context.Background(), nil, "--socket", sock, "-o", "json", "audit")
	if r.code != auditInconsistent {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got agentv1.AuditReport
	if err := protojson.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout is not an AuditReport: %v\n%s", err, r.stdout)
	}
	if got.GetInconsistencies()[0].GetKind() != "orphan-flow" || got.GetChecked().GetFlows() != 4 {
		t.Errorf("got %v", &got)
	}
}

// An agent that cannot be reached is an audit that could not be done: 2,
// not the 3 other commands exit with.
func TestAuditCommandUnreachable(t *testing.T) {
	r := runCLI(context.Background(), nil, "--socket", filepath.Join(shortTempDir(t), "none.sock"), "audit")
	if r.code != auditFailed || !strings.Contains(r.stderr, "none.sock") {
		t.Errorf("exit %d, stderr %q; want 2 naming the socket", r.code, r.stderr)
	}
}
