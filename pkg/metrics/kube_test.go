package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestKubeResource(t *testing.T) {
	tests := []struct {
		path, want string
	}{
		{"/api/v1/pods", KubePods},
		{"/api/v1/namespaces/default/pods", KubePods},
		{"/api/v1/namespaces/default/pods/web-0", KubePods},
		{"/api/v1/namespaces/default/pods/web-0/status", KubePods},
		{"/api/v1/watch/pods", KubePods},
		{"/api/v1/watch/namespaces/default/pods", KubePods},
		{"/api/v1/nodes", KubeNodes},
		{"/api/v1/nodes/n1", KubeNodes},
		{"/api/v1/namespaces", KubeNamespaces},
		{"/api/v1/namespaces/default", KubeNamespaces},
		{"/api/v1/namespaces/default/status", KubeNamespaces},
		{"/api/v1/namespaces/default/finalize", KubeNamespaces},
		{"/apis/networking.k8s.io/v1/networkpolicies", KubeNetworkPolicies},
		{"/apis/networking.k8s.io/v1/namespaces/a/networkpolicies/deny", KubeNetworkPolicies},
		{"/api/v1/namespaces/default/events", KubeOther},
		{"/apis/events.k8s.io/v1/namespaces/default/events", KubeOther},
		{"/api", KubeOther},
		{"/apis/networking.k8s.io/v1", KubeOther},
		{"/version", KubeOther},
		{"/healthz", KubeOther},
		{"", KubeOther},
	}
	for _, tt := range tests {
		if got := KubeResource(tt.path); got != tt.want {
			t.Errorf("KubeResource(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestWrapKubeTransportCountsBodies(t *testing.T) {
	bodies := map[string]string{
		"/api/v1/pods":                strings.Repeat("p", 1000),
		"/api/v1/watch/nodes":         strings.Repeat("n", 300),
		"/api/v1/namespaces/a/events": "e",
		"/empty":                      "",
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, bodies[r.URL.Path])
	}))
	defer srv.Close()
	m := New()
	client := &http.Client{Transport: m.WrapKubeTransport(http.DefaultTransport)}
	get := func(path string, times int) {
		for range times {
			resp, err := client.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	get("/api/v1/pods", 2)
	get("/api/v1/watch/nodes", 1)
	get("/api/v1/namespaces/a/events", 3)
	get("/empty", 1)
	for res, want := range map[string]float64{KubePods: 2000, KubeNodes: 300, KubeNamespaces: 0,
		KubeNetworkPolicies: 0, KubeOther: 3} {
		got, ok := value(t, m, "weir_kube_received_bytes_total", map[string]string{"resource": res})
		if !ok || got != want {
			t.Errorf("received bytes for %s = %v (exported %v), want %v", res, got, ok, want)
		}
	}
}

func TestSetInitialSyncOnce(t *testing.T) {
	m := New()
	if _, ok := value(t, m, "weir_agent_initial_sync_seconds", nil); ok {
		t.Fatal("initial sync exported before the agent synced")
	}
	m.SetInitialSync(1500 * time.Millisecond)
	m.SetInitialSync(9 * time.Second) // a later sync does not count
	if got, ok := value(t, m, "weir_agent_initial_sync_seconds", nil); !ok || got != 1.5 {
		t.Errorf("initial sync = %v (exported %v), want 1.5", got, ok)
	}
}
