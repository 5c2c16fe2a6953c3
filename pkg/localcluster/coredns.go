package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CoreDNSImage is the cluster DNS image: CoreDNS built by hack/coredns-build.sh
// (COREDNS_VERSION there) and packed by `weir-image build` (image coredns),
// imported into every node like Weir's own images. The three must agree on
// the version; TestCoreDNSVersionsAgree checks it.
const CoreDNSImage = "weir-coredns:v1.15.0"

// ClusterDomain is the kubelet's clusterDomain and CoreDNS's zone.
const ClusterDomain = "cluster.local"

// DNSServiceIP is the fixed ClusterIP of Service kube-system/kube-dns, the
// kubelet's clusterDNS: the primary service CIDR's tenth address
// (10.96.0.10; fd00:10:96::a on an IPv6-only cluster), as kubeadm chooses
// it. The Service is single-stack, of the primary family.
func (c Config) DNSServiceIP() string {
	svc, err := netip.ParsePrefix(c.PrimaryServiceCIDR())
	if err != nil || svc.Addr().Is4() != c.HasIPv4() {
		return "" // a range not of the primary family is no use
	}
	ip := svc.Masked().Addr()
	for range 10 {
		ip = ip.Next()
	}
	if !svc.Contains(ip) {
		return ""
	}
	return ip.String()
}

// corefile answers cluster names only: there is no forward plugin, the
// machine has no outside DNS. Names outside the zones are refused (no server
// block for them). "pods insecure" gives the A records of pod IPs
// (a-b-c-d.ns.pod.cluster.local) that the upstream DNS tests query.
const corefile = `%[1]s:53 in-addr.arpa:53 ip6.arpa:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes %[1]s in-addr.arpa ip6.arpa {
        pods insecure
        ttl 30
    }
    cache 30
    loop
    reload
    loadbalance
}
`

// dnsManifest is kube-system's CoreDNS: RBAC to watch Services,
// EndpointSlices, Pods and Namespaces, the Corefile, one replica (a second
// would only cost memory on one machine; the upstream DNS tests do not need
// two), and Service kube-dns at DNSServiceIP. The names and the label
// k8s-app=kube-dns are the ones the upstream e2e framework looks for.
const dnsManifest = `apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
%[1]s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      tolerations:
      - {key: CriticalAddonsOnly, operator: Exists}
      containers:
      - name: coredns
        image: %[2]s
        imagePullPolicy: IfNotPresent
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        resources:
          requests: {cpu: 10m, memory: 32Mi}
          limits: {memory: 128Mi}
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          initialDelaySeconds: 10
          periodSeconds: 10
          failureThreshold: 5
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
          readOnlyRootFilesystem: true
      volumes:
      - name: config
        configMap: {name: coredns}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: %[3]s
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`

// RenderDNSManifest returns the CoreDNS manifest for cfg.
func RenderDNSManifest(cfg Config) ([]byte, error) {
	ip := cfg.DNSServiceIP()
	if ip == "" {
		return nil, fmt.Errorf("service CIDR %q: no tenth address for the DNS Service", cfg.PrimaryServiceCIDR())
	}
	cf := fmt.Sprintf(corefile, ClusterDomain)
	var indented strings.Builder
	for _, l := range strings.Split(strings.TrimRight(cf, "\n"), "\n") {
		indented.WriteString("    " + l + "\n")
	}
	return []byte(fmt.Sprintf(dnsManifest, strings.TrimRight(indented.String(), "\n"), CoreDNSImage, ip)), nil
}

// DeployDNS applies the CoreDNS manifest.
func DeployDNS(ctx context.Context, cfg Config) error {
	m, err := RenderDNSManifest(cfg)
	if err != nil {
		return err
	}
	cmd := cfg.Kubectl(ctx, "apply", "-f", "-")
	cmd.Stdin = bytes.NewReader(m)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply of the CoreDNS manifest: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// WaitDNS waits until the CoreDNS Deployment has an available replica.
func WaitDNS(ctx context.Context, cfg Config, timeout time.Duration) error {
	client, err := cfg.Client()
	if err != nil {
		return err
	}
	return waitFor(ctx, timeout, "Deployment kube-system/coredns", func() (bool, error) {
		d, err := client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if d.Status.ObservedGeneration < d.Generation || d.Status.AvailableReplicas < 1 {
			return false, fmt.Errorf("coredns: %d of %d replicas available", d.Status.AvailableReplicas, d.Status.Replicas)
		}
		return true, nil
	})
}
