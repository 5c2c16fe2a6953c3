package localcluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/agent"
)

// TestProxyModes: each --proxy value either gives the agent the proxyMode
// it stands for — checked by the agent's own strict loader and validation,
// so a field or value the agent does not know fails here (an unquoted
// `proxyMode: off` did: YAML reads it as the boolean false) — or is refused
// before anything is created.
func TestProxyModes(t *testing.T) {
	tests := []struct {
		proxy     string
		wantAgent string // agent proxyMode; empty: Validate refuses
		wantErr   string
	}{
		{proxy: ProxyKubeProxy, wantAgent: agent.ProxyOff},
		{proxy: ProxyCoexist, wantAgent: agent.ProxyCoexist},
		{proxy: ProxyWeir, wantErr: "not supported yet"},
		{proxy: "ipvs", wantErr: `proxy "ipvs": want kube-proxy or coexist`},
		{proxy: "", wantErr: `proxy "": want`},
	}
	for _, tt := range tests {
		t.Run(tt.proxy, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Proxy = tt.proxy
			err := cfg.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Validate: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			path := filepath.Join(t.TempDir(), "ovs-agent.conf")
			if err := os.WriteFile(path, []byte(cfg.AgentConfig()), 0o600); err != nil {
				t.Fatal(err)
			}
			ac, err := agent.LoadConfig(path)
			if err != nil {
				t.Fatalf("agent.LoadConfig: %v\n%s", err, cfg.AgentConfig())
			}
			if ac.ProxyMode != tt.wantAgent {
				t.Errorf("agent proxyMode %q, want %q", ac.ProxyMode, tt.wantAgent)
			}
			// The DaemonSet sets the node name; the proxy needs it.
			ac.NodeName = "n1"
			if err := ac.Validate(); err != nil {
				t.Errorf("agent.Validate of the rendered config: %v\n%s", err, cfg.AgentConfig())
			}
			cfg.Manifest = filepath.Join("..", "..", "build", "yamls", "weir.yml")
			m, err := RenderManifest(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if want := `proxyMode: "` + tt.wantAgent + `"`; !strings.Contains(string(m), want) {
				t.Errorf("rendered manifest lacks %q", want)
			}
		})
	}
}

// TestResolveProxy: the proxy an Up recorded is what later commands (and
// the e2e suite) see; a state without one is an earlier version's cluster,
// which ran kube-proxy alone.
func TestResolveProxy(t *testing.T) {
	tests := []struct {
		name, state, want string
	}{
		{"recorded coexist", `{"prefix":"p","subnet":"172.31.3","portBase":3000,"ipFamily":"dual","proxy":"coexist","nodes":[1]}`, ProxyCoexist},
		{"recorded kube-proxy", `{"prefix":"p","subnet":"172.31.3","portBase":3000,"ipFamily":"dual","proxy":"kube-proxy","nodes":[1]}`, ProxyKubeProxy},
		{"earlier version", `{"prefix":"p","subnet":"172.31.3","portBase":3000,"ipFamily":"dual","nodes":[1]}`, ProxyKubeProxy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Dir = t.TempDir()
			cfg.Proxy = "something else"
			if err := os.WriteFile(cfg.statePath(), []byte(tt.state), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := cfg.Resolve()
			if err != nil {
				t.Fatal(err)
			}
			if got.Proxy != tt.want {
				t.Errorf("resolved proxy %q, want %q", got.Proxy, tt.want)
			}
		})
	}
	t.Run("round trip", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Dir = t.TempDir()
		if err := cfg.saveState(state{Prefix: "p", Subnet: "172.31.3", PortBase: 3000, IPFamily: IPFamilyDual, Proxy: ProxyCoexist}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(cfg.statePath())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), `"proxy": "coexist"`) {
			t.Errorf("state.json lacks the proxy: %s", data)
		}
		got, err := DefaultConfig().withDir(cfg.Dir).Resolve()
		if err != nil {
			t.Fatal(err)
		}
		if got.Proxy != ProxyCoexist {
			t.Errorf("resolved proxy %q, want coexist", got.Proxy)
		}
	})
}

func (c Config) withDir(dir string) Config { c.Dir = dir; return c }
