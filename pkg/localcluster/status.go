package localcluster

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Status writes the state of the cluster's processes (the control plane
// runs in the control-plane node's network namespace), nodes and the Weir
// DaemonSet to w. It returns an error when the cluster is not running.
func Status(ctx context.Context, cfg Config, w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	running := true
	fmt.Fprintln(tw, "COMPONENT\tPID\tSTATE")
	for _, n := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		pid := readPID(filepath.Join(cfg.runDir(), n+".pid"))
		fmt.Fprintf(tw, "%s\t%d\t%s\n", n, pid, aliveWord(pid))
		running = running && alive(pid)
	}
	st, err := cfg.loadState()
	if err != nil {
		return err
	}
	for _, i := range append([]int{ControlPlane}, st.Nodes...) {
		name := cfg.NodeName(i)
		for _, d := range []string{"containerd", "kubelet", "kube-proxy"} {
			pid := readPID(filepath.Join(cfg.nodeDir(name), d+".pid"))
			fmt.Fprintf(tw, "%s/%s\t%d\t%s\n", name, d, pid, aliveWord(pid))
		}
	}
	tw.Flush()
	if !running {
		return fmt.Errorf("the cluster in %s is not running", cfg.Dir)
	}
	client, err := cfg.Client()
	if err != nil {
		return err
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "NODE\tREADY\tINTERNAL-IP\tPOD-CIDR")
	for _, n := range nodes.Items {
		ready, ip := "False", ""
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = string(c.Status)
			}
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, ready, ip, n.Spec.PodCIDR)
	}
	tw.Flush()
	ds, err := client.AppsV1().DaemonSets("kube-system").Get(ctx, "weir-agent", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("DaemonSet kube-system/weir-agent: %w", err)
	}
	fmt.Fprintf(w, "\nDaemonSet kube-system/weir-agent: desired %d, ready %d, up-to-date %d, available %d\n",
		ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, ds.Status.UpdatedNumberScheduled, ds.Status.NumberAvailable)
	fmt.Fprintf(w, "kubeconfig: %s\n", cfg.KubeconfigPath())
	return nil
}

func aliveWord(pid int) string {
	if alive(pid) {
		return "running"
	}
	return strings.ToUpper("stopped")
}
