#!/usr/bin/env bash
# Runs inside a new mount namespace (unshare --mount --propagation slave),
# already in the node's network namespace. Turns the mount namespace into a
# "node": its own sysfs and cgroup mounts, the standard runtime paths
# bind-mounted from the node directory, then starts containerd, imports the
# images, and starts kubelet and kube-proxy. The processes keep the namespace
# alive after this script exits. Paths come from the environment (set by
# pkg/localcluster); every file lives under $NODE_DIR.
set -euo pipefail
: "${NODE_DIR:?}" "${NODE_NAME:?}" "${NODE_IP:?}" "${K8S_BIN:?}" "${IMAGES:?}"

# The host's / is private; shared propagation inside this namespace is what
# HostToContainer/Bidirectional volume mounts (pod netns paths) need.
mount --make-rshared /
mount -t sysfs sysfs /sys # /sys/class/net of this network namespace
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
for c in $(awk '$5 ~ "^/sys/fs/cgroup/" && $9 == "cgroup" {sub("/sys/fs/cgroup/", "", $5); print $5}' /proc/1/mountinfo); do
  mkdir -p "/sys/fs/cgroup/$c"
  o=$c
  [ "$c" = systemd ] && o=none,name=systemd
  mount -t cgroup -o "$o" cgroup "/sys/fs/cgroup/$c"
done
mkdir -p /sys/fs/cgroup/unified
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified

for p in etc-cni-net.d:/etc/cni/net.d opt-cni-bin:/opt/cni/bin kubelet:/var/lib/kubelet \
  run-containerd:/run/containerd var-lib-containerd:/var/lib/containerd netns:/run/netns \
  run-ovs:/var/run/openvswitch run-weir:/var/run/weir var-lib-weir:/var/lib/weir \
  var-log-pods:/var/log/pods var-log-weir:/var/log/weir; do
  mkdir -p "$NODE_DIR/${p%%:*}" "${p#*:}"
  mount --bind "$NODE_DIR/${p%%:*}" "${p#*:}"
done
mount --make-rshared /var/lib/kubelet
mount --make-rshared /run/netns

setsid containerd --config "$NODE_DIR/containerd.toml" >"$NODE_DIR/logs/containerd.log" 2>&1 </dev/null &
echo $! >"$NODE_DIR/containerd.pid"
for _ in $(seq 100); do
  [ -S /run/containerd/containerd.sock ] && ctr -a /run/containerd/containerd.sock version >/dev/null 2>&1 && break
  sleep 0.1
done
for img in "$IMAGES"/*.tar; do
  ctr -a /run/containerd/containerd.sock -n k8s.io images import "$img" >/dev/null
done

# The control-plane node registers with its NoSchedule taint (KUBELET_TAINTS).
setsid "$K8S_BIN/kubelet" --config="$NODE_DIR/kubelet-config.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir=/var/lib/kubelet \
  ${KUBELET_TAINTS:+--register-with-taints="$KUBELET_TAINTS"} \
  --cert-dir=/var/lib/kubelet/pki --v=1 >"$NODE_DIR/logs/kubelet.log" 2>&1 </dev/null &
echo $! >"$NODE_DIR/kubelet.pid"

# kube-proxy (iptables mode) runs as a node process like kubelet: Weir's agent
# does not depend on it (it reaches the API server directly), pods' Service
# traffic does. nf_conntrack_max is machine-wide (writable in the root netns
# only), so kube-proxy leaves it alone (--conntrack-max-per-core=0); the TCP
# timeouts are per network namespace (checked: writing one in a node's netns
# leaves the host's value), so kube-proxy sets them as on a real node (the
# upstream test "KubeProxy should set TCP CLOSE_WAIT timeout" reads them).
setsid "$K8S_BIN/kube-proxy" --kubeconfig="$NODE_DIR/kube-proxy.kubeconfig" --hostname-override="$NODE_NAME" \
  --proxy-mode=iptables --cluster-cidr="$CLUSTER_CIDR" --conntrack-max-per-core=0 \
  --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 \
  --v=1 >"$NODE_DIR/logs/kube-proxy.log" 2>&1 </dev/null &
echo $! >"$NODE_DIR/kube-proxy.pid"
