package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/transport"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"
)

// userAgent identifies the agent in the API server's logs and audit records.
const userAgent = "weir-ovs-agent"

// waitLogInterval is how often WaitForPodCIDR says it is still waiting.
const waitLogInterval = 10 * time.Second

// serviceAccountDir is where Kubernetes mounts a pod's service-account
// token and the cluster CA (the files rest.InClusterConfig reads).
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// NewKubeClient returns a clientset for the API server named by the
// kubeconfig file at path; if path is empty, for the cluster the agent runs
// in, with the pod's service-account credentials. The API server is then
// apiServerOverride when set (e.g. "https://172.31.250.1:6443", so the agent
// does not depend on kube-proxy and the kubernetes Service's ClusterIP,
// which may not work before the pod network does), else
// KUBERNETES_SERVICE_HOST/PORT. wrap, when not nil, wraps the client's
// transport (the agent counts the bytes it receives:
// metrics.Metrics.WrapKubeTransport).
func NewKubeClient(kubeconfig, apiServerOverride string, wrap transport.WrapperFunc) (kubernetes.Interface, error) {
	var (
		cfg *rest.Config
		err error
	)
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
		}
	case apiServerOverride != "":
		if cfg, err = serviceAccountConfig(serviceAccountDir, apiServerOverride); err != nil {
			return nil, err
		}
	default:
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("loading in-cluster API server config (set kubeconfig when not running in a pod): %w", err)
		}
	}
	return newKubeClient(cfg, wrap)
}

// Content types of the agent's clientset. Built-in types (all the agent
// reads) come as protobuf, which the API server encodes and the agent
// decodes several times faster than JSON, in fewer bytes (the figures are
// in TestListPodsProtobufVsJSON's log). JSON stays acceptable for what has
// no protobuf encoding; CRD clients must use JSON and get a rest.Config of
// their own.
const (
	kubeContentType        = runtime.ContentTypeProtobuf
	kubeAcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
)

// newKubeClient is NewKubeClient's clientset for cfg, which it modifies.
func newKubeClient(cfg *rest.Config, wrap transport.WrapperFunc) (kubernetes.Interface, error) {
	cfg.UserAgent = userAgent
	cfg.ContentType = kubeContentType
	cfg.AcceptContentTypes = kubeAcceptContentTypes
	if wrap != nil {
		cfg.Wrap(wrap)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating Kubernetes client for %s: %w", cfg.Host, err)
	}
	return client, nil
}

// serviceAccountConfig is rest.InClusterConfig with the service-account
// directory (holding "token" and "ca.crt") and the API server URL as
// parameters. Like InClusterConfig it names the token file, so client-go
// re-reads the token when the kubelet rotates it.
func serviceAccountConfig(dir, host string) (*rest.Config, error) {
	if err := validateAPIServerURL(host); err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(dir, corev1.ServiceAccountTokenKey)
	caFile := filepath.Join(dir, corev1.ServiceAccountRootCAKey)
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading the service-account token for %s: %w", host, err)
	}
	if len(bytes.TrimSpace(token)) == 0 {
		return nil, fmt.Errorf("service-account token %s is empty", tokenFile)
	}
	if _, err := certutil.NewPool(caFile); err != nil {
		return nil, fmt.Errorf("reading the service-account CA for %s: %w", host, err)
	}
	return &rest.Config{
		Host:            host,
		TLSClientConfig: rest.TLSClientConfig{CAFile: caFile},
		BearerToken:     string(bytes.TrimSpace(token)),
		BearerTokenFile: tokenFile,
	}, nil
}

// validateAPIServerURL checks an API server URL given in the config: http
// or https, with a host, and nothing after the port.
func validateAPIServerURL(s string) error {
	const want = "must be an https:// or http:// URL with a host, e.g. https://172.31.250.1:6443"
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("kubeAPIServerOverride %q: %s: %w", s, want, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("kubeAPIServerOverride %q: %s", s, want)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("kubeAPIServerOverride %q: must be scheme://host[:port] only", s)
	}
	return nil
}

// WaitForPodCIDR watches the Node named nodeName and returns its pod CIDR as
// soon as the Node has one: the first entry of each family of
// spec.podCIDRs, or
// spec.podCIDR when podCIDRs is empty. The CIDR must be usable as a pod
// subnet (see Config.ParsePodCIDR); a malformed one is an error, not a
// reason to keep waiting. It logs while it waits (the Node may not exist yet,
// or the controller-manager may not have allocated a CIDR) and returns an
// error naming what it last saw when ctx ends first.
//
// It uses a shared informer restricted to that one Node (field selector
// metadata.name), so it costs the API server one list and one watch. That
// informer has a factory of its own, not the agent's shared one: it runs
// before the agent has set up OVS or created its controllers, and ends as
// soon as the CIDR is known, while the shared factory's Node informer lists
// every Node for the rest of the run (a factory holds one informer per type,
// so the one-Node selector cannot share it).
func WaitForPodCIDR(ctx context.Context, client kubernetes.Interface, nodeName string, log klog.Logger) (PodCIDRs, error) {
	if nodeName == "" {
		return PodCIDRs{}, errors.New("waiting for the pod CIDR: no node name given")
	}
	log = log.WithValues("node", nodeName)
	start := time.Now()

	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", nodeName).String()
		}))
	// Stop the informer's goroutines before returning: cancel first, then
	// wait for them.
	defer func() {
		cancel()
		factory.Shutdown()
	}()
	informer := factory.Core().V1().Nodes().Informer()

	var (
		mu      sync.Mutex
		lastErr error // the last list/watch error, reported if ctx ends
	)
	if err := informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		mu.Lock()
		lastErr = err
		mu.Unlock()
		log.Info("Listing or watching the Node failed; retrying", "err", err)
	}); err != nil {
		return PodCIDRs{}, fmt.Errorf("waiting for the pod CIDR of Node %q: %w", nodeName, err)
	}

	type result struct {
		cidrs PodCIDRs
		err   error
	}
	found := make(chan result, 1)
	check := func(obj any) {
		node, ok := obj.(*corev1.Node)
		if !ok || node.Name != nodeName {
			return
		}
		cidrs, err := NodePodCIDRs(node)
		if cidrs.Empty() && err == nil {
			log.V(2).Info("Node has no pod CIDR yet", "resourceVersion", node.ResourceVersion)
			return
		}
		select {
		case found <- result{cidrs, err}:
		default: // a result is already pending
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    check,
		UpdateFunc: func(_, obj any) { check(obj) },
	}); err != nil {
		return PodCIDRs{}, fmt.Errorf("waiting for the pod CIDR of Node %q: %w", nodeName, err)
	}
	factory.Start(ctx.Done())
	log.Info("Waiting for the Node's pod CIDR")

	// state describes what was last seen, for the progress log and the
	// error when ctx ends.
	state := func() string {
		mu.Lock()
		err := lastErr
		mu.Unlock()
		switch _, exists, _ := informer.GetStore().GetByKey(nodeName); {
		case !informer.HasSynced() && err != nil:
			return fmt.Sprintf("cannot list Nodes: %v", err)
		case !informer.HasSynced():
			return "the Node list has not completed"
		case !exists:
			return "the Node does not exist"
		default:
			return "the Node has no spec.podCIDR (is the controller-manager running with --allocate-node-cidrs?)"
		}
	}
	tick := time.NewTicker(waitLogInterval)
	defer tick.Stop()
	for {
		select {
		case r := <-found:
			if r.err != nil {
				return PodCIDRs{}, fmt.Errorf("Node %q: %w", nodeName, r.err)
			}
			log.Info("Got the Node's pod CIDR", "podCIDRs", r.cidrs.String(),
				"waited", time.Since(start).Round(time.Millisecond))
			return r.cidrs, nil
		case <-tick.C:
			log.Info("Still waiting for the Node's pod CIDR", "state", state(),
				"waited", time.Since(start).Round(100*time.Millisecond))
		case <-ctx.Done():
			return PodCIDRs{}, fmt.Errorf("gave up waiting for the pod CIDR of Node %q after %s; %s: %w",
				nodeName, time.Since(start).Round(time.Millisecond), state(), context.Cause(ctx))
		}
	}
}

// PodCIDRs are a node's pod subnets, one per family: IPv4 on an IPv4-only
// node, IPv6 on an IPv6-only node, both on a dual-stack node.
type PodCIDRs struct {
	IPv4, IPv6 *net.IPNet
}

// Empty reports whether there is no CIDR of either family.
func (c PodCIDRs) Empty() bool { return c.IPv4 == nil && c.IPv6 == nil }

// IPv6Only reports whether the node has IPv6 pods only.
func (c PodCIDRs) IPv6Only() bool { return c.IPv4 == nil && c.IPv6 != nil }

// families are the IP families the node has pods of, IPv4 first.
func (c PodCIDRs) families() []corev1.IPFamily {
	var out []corev1.IPFamily
	if c.IPv4 != nil {
		out = append(out, corev1.IPv4Protocol)
	}
	if c.IPv6 != nil {
		out = append(out, corev1.IPv6Protocol)
	}
	return out
}

// Primary is the CIDR of the node's primary family: IPv4 if it has one
// (IPv4-only and dual-stack nodes), else IPv6. The primary family's IPAM,
// gateway address and MAC are the node's first (cniserver.New's
// allocator, the gateway's MAC, the tooling API's node view).
func (c PodCIDRs) Primary() *net.IPNet {
	if c.IPv4 != nil {
		return c.IPv4
	}
	return c.IPv6
}

func (c PodCIDRs) String() string {
	var out []string
	for _, n := range []*net.IPNet{c.IPv4, c.IPv6} {
		if n != nil {
			out = append(out, n.String())
		}
	}
	return strings.Join(out, ",")
}

// NodePodCIDR returns the IPv4 pod CIDR node was allocated (see
// NodePodCIDRs); (nil, nil) when none is set yet.
func NodePodCIDR(node *corev1.Node) (*net.IPNet, error) {
	cidrs, err := NodePodCIDRs(node)
	return cidrs.IPv4, err
}

// NodePodCIDRs returns the pod CIDRs node was allocated: the first entry of
// each family of spec.podCIDRs, or spec.podCIDR when podCIDRs is empty. It
// returns zero PodCIDRs (and no error) when none is set yet, and an error
// when a CIDR is malformed or too small.
func NodePodCIDRs(node *corev1.Node) (PodCIDRs, error) {
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	var out PodCIDRs
	if len(cidrs) == 0 {
		return out, nil
	}
	for _, s := range cidrs {
		ip, _, err := net.ParseCIDR(s)
		if err != nil {
			return PodCIDRs{}, fmt.Errorf("malformed pod CIDR %q in spec.podCIDRs %q: %w", s, cidrs, err)
		}
		switch {
		case ip.To4() != nil && out.IPv4 == nil:
			if out.IPv4, err = parseIPv4PodCIDR(s); err != nil {
				return PodCIDRs{}, fmt.Errorf("unusable pod CIDR in the Node spec: %w", err)
			}
		case ip.To4() == nil && out.IPv6 == nil:
			if out.IPv6, err = parseIPv6PodCIDR(s); err != nil {
				return PodCIDRs{}, fmt.Errorf("unusable pod CIDR in the Node spec: %w", err)
			}
		}
	}
	return out, nil
}
