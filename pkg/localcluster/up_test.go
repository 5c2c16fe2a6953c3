package localcluster

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMkdirAllRecorded(t *testing.T) {
	base := t.TempDir()
	tests := []struct {
		name, dir string
		want      []string
	}{
		{"new chain", "a/b/c", []string{"a", "a/b", "a/b/c"}},
		{"parent exists", "a/b/d", []string{"a/b/d"}},
		{"exists", "a/b", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mkdirAllRecorded(filepath.Join(base, tt.dir))
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, w := range tt.want {
				want = append(want, filepath.Join(base, w))
			}
			if !slices.Equal(got, want) {
				t.Errorf("created %v, want %v", got, want)
			}
			if _, err := os.Stat(filepath.Join(base, tt.dir)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestRenderManifestReplacesAgentConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Manifest = filepath.Join("..", "..", "build", "yamls", "weir.yml")
	out, err := RenderManifest(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"datapathType: netdev", "underlayInterface: eth0", "kubeAPIServerOverride: " + cfg.APIServerURL(), "kind: DaemonSet"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rendered manifest lacks %q", want)
		}
	}
	cfg.Manifest = filepath.Join(t.TempDir(), "none.yml")
	if err := os.WriteFile(cfg.Manifest, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RenderManifest(cfg); err == nil {
		t.Error("a manifest without the weir-config ConfigMap was accepted")
	}
}
