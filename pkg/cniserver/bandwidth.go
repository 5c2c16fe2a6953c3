package cniserver

import (
	"context"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/podnet"
)

// runtimeConfig is the network configuration's "runtimeConfig": what the
// runtime passes for the capabilities the plugin declares in the conflist.
type runtimeConfig struct {
	// Bandwidth is the "bandwidth" capability: containerd's CRI turns the
	// pod annotations kubernetes.io/ingress-bandwidth and egress-bandwidth
	// into {ingressRate, ingressBurst, egressRate, egressBurst} (bits/s and
	// bits; containerd 1.6 always passes math.MaxUint32 as the burst).
	// Ingress is traffic to the pod, egress traffic from it.
	Bandwidth *podnet.Bandwidth `json:"bandwidth,omitempty"`
}

// setupBandwidth shapes the pod's veth pair as the request's bandwidth
// capability asks (see podnet.SetBandwidth for how and why). The veth must
// exist; its removal (DEL, rollback) removes the shaping with it. Invalid
// limits are a configuration error (code 7) and change nothing.
func (s *Server) setupBandwidth(ctx context.Context, req *request, vcfg podnet.VethConfig) *cniError {
	bw := req.conf.RuntimeConfig.Bandwidth
	if bw == nil || bw.IsZero() {
		return nil
	}
	if err := bw.Validate(); err != nil {
		return withDetails(cniv1.CodeInvalidNetworkConfig,
			"weir: bad runtimeConfig.bandwidth (from the pod's kubernetes.io/ingress-bandwidth and egress-bandwidth annotations)", err)
	}
	if err := podnet.SetBandwidth(ctx, bandwidthConfig(vcfg, *bw)); err != nil {
		return withDetails(cniv1.CodeInterfaceSetupFailure, "weir: shaping the pod's bandwidth failed", err)
	}
	return nil
}

// checkBandwidth reports a difference between the pod's shaping and the
// request's bandwidth capability ("" if none): for CHECK.
//
// Without limits in the request nothing is checked: the shaping is then not
// Weir's, and a chained plugin (the reference bandwidth plugin) may own a
// qdisc on the same devices.
func checkBandwidth(req *request, vcfg podnet.VethConfig) string {
	bw := req.conf.RuntimeConfig.Bandwidth
	if bw == nil || bw.IsZero() {
		return ""
	}
	if err := podnet.CheckBandwidth(bandwidthConfig(vcfg, *bw)); err != nil {
		return err.Error()
	}
	return ""
}

func bandwidthConfig(vcfg podnet.VethConfig, bw podnet.Bandwidth) podnet.BandwidthConfig {
	return podnet.BandwidthConfig{HostNetNSPath: vcfg.HostNetNSPath, HostIfName: vcfg.HostIfName,
		NetNSPath: vcfg.NetNSPath, IfName: vcfg.IfName, MTU: vcfg.MTU, Limits: bw}
}

// shapesBandwidth reports whether the request asks for bandwidth limits:
// then the pod's OVS port gets a no-op QoS (ovsdb.PortOptions.KeepQdiscs),
// without which ovs-vswitchd would delete the tbf on the host veth.
func shapesBandwidth(req *request) bool {
	bw := req.conf.RuntimeConfig.Bandwidth
	return bw != nil && !bw.IsZero()
}
