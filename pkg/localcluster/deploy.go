package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// AgentConfig is the ovs-agent configuration the local cluster deploys
// instead of the manifest's production default: the userspace datapath with
// the node NIC on br-phy (no kernel OVS module here), and the API server
// reached directly (the agent must not depend on kube-proxy), and the
// proxyMode of the cluster's Proxy (quoted: a bare off is YAML's false).
func (c Config) AgentConfig() string {
	return fmt.Sprintf(`bridge: br-int
datapathType: netdev
underlayInterface: eth0
mtu: 0
serviceCIDR: %s
kubeAPIServerOverride: %s
proxyMode: %q
`, c.ServiceCIDRs(), c.APIServerURL(), c.agentProxyMode())
}

// RenderManifest returns cfg.Manifest with the weir-config ConfigMap's agent
// configuration replaced by AgentConfig.
func RenderManifest(cfg Config) ([]byte, error) {
	f, err := os.Open(cfg.Manifest)
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var out bytes.Buffer
	found := false
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", cfg.Manifest, err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", cfg.Manifest, err)
		}
		if obj == nil {
			continue
		}
		if obj["kind"] == "ConfigMap" {
			if md, _ := obj["metadata"].(map[string]any); md["name"] == "weir-config" {
				data, _ := obj["data"].(map[string]any)
				if data == nil {
					return nil, fmt.Errorf("%s: ConfigMap weir-config has no data", cfg.Manifest)
				}
				data["ovs-agent.conf"] = cfg.AgentConfig()
				found = true
			}
		}
		y, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(y)
	}
	if !found {
		return nil, fmt.Errorf("%s: no ConfigMap kube-system/weir-config to configure", cfg.Manifest)
	}
	return out.Bytes(), nil
}

// Deploy applies the rendered manifest with kubectl (server-side validation
// included).
func Deploy(ctx context.Context, cfg Config) error {
	m, err := RenderManifest(cfg)
	if err != nil {
		return err
	}
	cmd := cfg.Kubectl(ctx, "apply", "-f", "-")
	cmd.Stdin = bytes.NewReader(m)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply of %s: %w: %s", cfg.Manifest, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NodeExec returns a command running in node's network and mount namespaces.
func NodeExec(ctx context.Context, cfg Config, node string, args ...string) (*exec.Cmd, error) {
	if len(args) == 0 {
		return nil, errors.New("no command given")
	}
	pid, err := NodePID(cfg, node)
	if err != nil {
		return nil, err
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("working directory: %w", err)
	}
	return exec.CommandContext(ctx, "nsenter", nsenterArgs(pid, wd, args)...), nil
}

// nsenterArgs enters the network and mount namespaces of pid to run args.
// Entering a mount namespace moves the working directory to its root, so
// `bin/test-server` would be looked up from /: keep the caller's directory
// wd (the node's mount namespace is a copy of the host's, so the same path
// exists there) and make a relative program path absolute.
func nsenterArgs(pid int, wd string, args []string) []string {
	args = slices.Clone(args)
	if strings.Contains(args[0], "/") && !filepath.IsAbs(args[0]) {
		args[0] = filepath.Join(wd, args[0])
	}
	return append([]string{"-t", fmt.Sprint(pid), "-m", "-n", "--wd=" + wd, "--"}, args...)
}

// findNetNSScript prints the path (in the node's mount namespace) of the
// network namespace holding $1, an address of either family (an IPv6-only
// pod's status.podIP is IPv6).
const findNetNSScript = `for f in /run/netns/*; do
  [ -e "$f" ] || continue
  if ip -n "${f##*/}" -o addr show 2>/dev/null | grep -q " $1/"; then echo "$f"; exit 0; fi
done
exit 1`

// PodExec returns a command running a host binary inside the network
// namespace of pod ns/name (a hostNetwork pod: the node's).
func PodExec(ctx context.Context, cfg Config, nsName string, args ...string) (*exec.Cmd, error) {
	ns, name, ok := strings.Cut(nsName, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("pod %q: want NAMESPACE/NAME", nsName)
	}
	client, err := cfg.Client()
	if err != nil {
		return nil, err
	}
	pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", nsName, err)
	}
	if pod.Spec.NodeName == "" || pod.Status.PodIP == "" {
		return nil, fmt.Errorf("pod %s has no node or IP yet (phase %s)", nsName, pod.Status.Phase)
	}
	if pod.Spec.HostNetwork {
		return NodeExec(ctx, cfg, pod.Spec.NodeName, args...)
	}
	find, err := NodeExec(ctx, cfg, pod.Spec.NodeName, "sh", "-c", findNetNSScript, "find-netns", pod.Status.PodIP)
	if err != nil {
		return nil, err
	}
	out, err := find.Output()
	if err != nil {
		return nil, fmt.Errorf("no network namespace on node %s holds pod %s's IP %s", pod.Spec.NodeName, nsName, pod.Status.PodIP)
	}
	netns := strings.TrimSpace(string(out))
	return NodeExec(ctx, cfg, pod.Spec.NodeName, append([]string{"nsenter", "--net=" + netns, "--"}, args...)...)
}
