package podnet

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Bandwidth limits a pod interface in both directions, in the units of the
// CNI "bandwidth" capability (what containerd's CRI makes of the
// kubernetes.io/ingress-bandwidth and egress-bandwidth pod annotations):
// rates in bits per second, bursts in bits. A zero rate (with a zero burst)
// leaves that direction unlimited.
//
// Both directions are shaped with a token bucket filter (tbf) qdisc on the
// transmit side of the veth, where every datapath must pass:
//   - ingress (traffic to the pod): the root qdisc of the host-side veth.
//     Whatever sends to the pod transmits on that device: the kernel
//     datapath's output action (dev_queue_xmit) and the userspace datapath's
//     AF_PACKET socket alike (OVS does not set PACKET_QDISC_BYPASS).
//   - egress (traffic from the pod): the root qdisc of the pod-side
//     interface, in the pod's namespace, so the excess never reaches the
//     veth, whichever datapath reads the other end.
//
// Receive-side policing does not work on the userspace datapath: OVS reads a
// port through an AF_PACKET socket, which the kernel serves before the tc
// ingress hook. Measured here (OVS 3.1 netdev, 10 Mbit/s limits): OVS's
// Interface ingress_policing_rate left pod egress at 246 Mbit/s (unshaped:
// 325), the reference bandwidth plugin's ifb redirect ~170 Mbit/s, while a tbf
// on the pod's eth0 gave 9.5 Mbit/s and a tbf on the host veth 9.2 Mbit/s
// into the pod. A shaper also suits TCP better than a policer: an OpenFlow
// meter (drop band, 10 Mbit/s, 1000 kbit burst) gave TCP 4.7 Mbit/s.
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate"`
	IngressBurst uint64 `json:"ingressBurst"`
	EgressRate   uint64 `json:"egressRate"`
	EgressBurst  uint64 `json:"egressBurst"`
}

// Limits on the values Bandwidth accepts. The rate range is the one the
// kubelet accepts for the pod annotations (1k to 1P); the burst limit is the
// reference bandwidth plugin's (a burst of 4 GiB or more is refused).
const (
	MinBandwidthRate  = 1000
	MaxBandwidthRate  = 1_000_000_000_000_000
	MaxBandwidthBurst = 8 * math.MaxUint32
)

// Shaping parameters derived from a rate and a requested burst (see
// TBFParams).
const (
	// maxBurstTime bounds the burst to what the rate sends in 100 ms.
	// Runtimes pass a burst they do not choose: containerd 1.6's CRI always
	// passes math.MaxUint32 bits (512 MiB), which would let a pod send
	// hundreds of megabytes at line rate before any limit applies, and (as
	// tbf's queue limit grows with the burst) queue as much.
	maxBurstTime = 100 * time.Millisecond
	// minBurstTime: a burst below what the rate sends in one timer tick
	// (4 ms at HZ=250) keeps tbf under the rate.
	minBurstTime = 4 * time.Millisecond
	// tbfLatency bounds how long a packet may wait in the queue, as in
	// `tc qdisc add ... tbf latency 25ms` (and the reference plugin).
	tbfLatency = 25 * time.Millisecond
	// ethHeader is added to the MTU for the smallest burst: tbf drops a
	// frame larger than its burst.
	ethHeader = 14
)

// IsZero reports whether b limits nothing.
func (b Bandwidth) IsZero() bool {
	return b.IngressRate == 0 && b.IngressBurst == 0 && b.EgressRate == 0 && b.EgressBurst == 0
}

// Validate reports every invalid value: a rate without a burst or a burst
// without a rate, a rate outside [MinBandwidthRate, MaxBandwidthRate], a
// burst of MaxBandwidthBurst bits or more.
func (b Bandwidth) Validate() error {
	var problems []string
	check := func(dir string, rate, burst uint64) {
		switch {
		case rate == 0 && burst == 0:
		case rate == 0:
			problems = append(problems, fmt.Sprintf("%sBurst %d is set without %sRate", dir, burst, dir))
		case burst == 0:
			problems = append(problems, fmt.Sprintf("%sRate %d is set without %sBurst", dir, rate, dir))
		case rate < MinBandwidthRate || rate > MaxBandwidthRate:
			problems = append(problems, fmt.Sprintf("%sRate %d bit/s is out of range %d-%d", dir, rate, uint64(MinBandwidthRate), uint64(MaxBandwidthRate)))
		}
		if burst >= MaxBandwidthBurst {
			problems = append(problems, fmt.Sprintf("%sBurst %d bits is 4 GiB or more", dir, burst))
		}
	}
	check("ingress", b.IngressRate, b.IngressBurst)
	check("egress", b.EgressRate, b.EgressBurst)
	if len(problems) > 0 {
		return fmt.Errorf("invalid bandwidth limits: %s", strings.Join(problems, "; "))
	}
	return nil
}

// TBF is the shaping of one direction: rate and burst in bytes, and the
// queue limit in bytes.
type TBF struct {
	RateBytes  uint64
	BurstBytes uint64
	LimitBytes uint64
}

// TBFParams returns the tbf shaping rateBits (bit/s) with a requested burst
// of burstBits (bits) on an interface of the given MTU. The burst is clamped
// to [max(MTU frame, rate x 4 ms), rate x 100 ms]: see minBurstTime and
// maxBurstTime. The queue holds what the rate sends in 25 ms plus the burst.
func TBFParams(rateBits, burstBits uint64, mtu int) TBF {
	rate := rateBits / 8
	if mtu <= 0 {
		mtu = 1500
	}
	lo := max(uint64(mtu+ethHeader), bytesIn(rate, minBurstTime))
	hi := max(lo, bytesIn(rate, maxBurstTime))
	burst := min(max(burstBits/8, lo), hi)
	return TBF{RateBytes: rate, BurstBytes: burst, LimitBytes: bytesIn(rate, tbfLatency) + burst}
}

// bytesIn returns what rate (bytes/s) sends in d, without overflowing.
func bytesIn(rate uint64, d time.Duration) uint64 {
	return uint64(float64(rate) * d.Seconds())
}

// BandwidthConfig names the veth pair SetBandwidth shapes.
type BandwidthConfig struct {
	// HostNetNSPath is the namespace of the host side ("" = the calling
	// thread's), HostIfName its name.
	HostNetNSPath string
	HostIfName    string
	// NetNSPath and IfName name the pod side.
	NetNSPath string
	IfName    string
	// MTU of the pair (0: 1500), for the smallest burst.
	MTU int
	// Limits to apply.
	Limits Bandwidth
}

// tbfHandle is the handle of the qdiscs SetBandwidth installs (1:).
var tbfHandle = netlink.MakeHandle(1, 0)

// SetBandwidth applies cfg.Limits to the veth pair: a tbf root qdisc on the
// host side for ingress, on the pod side for egress; a direction without a
// limit gets its root qdisc back to the default. It replaces what is there,
// so a repeated call (an ADD retry) converges. Invalid limits are refused
// before anything changes.
func SetBandwidth(ctx context.Context, cfg BandwidthConfig) error {
	if err := cfg.Limits.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l := cfg.Limits
	if err := shapeRoot(cfg.HostNetNSPath, cfg.HostIfName, l.IngressRate, l.IngressBurst, cfg.MTU); err != nil {
		return fmt.Errorf("podnet: shaping traffic to the pod on %s: %w", cfg.HostIfName, err)
	}
	if err := shapeRoot(cfg.NetNSPath, cfg.IfName, l.EgressRate, l.EgressBurst, cfg.MTU); err != nil {
		return fmt.Errorf("podnet: shaping traffic from the pod on %s in %s: %w", cfg.IfName, cfg.NetNSPath, err)
	}
	return nil
}

// GetBandwidth returns the shaping SetBandwidth left on the pair: the tbf
// of each direction, nil where there is none.
func GetBandwidth(cfg BandwidthConfig) (ingress, egress *TBF, err error) {
	if ingress, err = readRoot(cfg.HostNetNSPath, cfg.HostIfName); err != nil {
		return nil, nil, fmt.Errorf("podnet: reading the qdisc of %s: %w", cfg.HostIfName, err)
	}
	if egress, err = readRoot(cfg.NetNSPath, cfg.IfName); err != nil {
		return nil, nil, fmt.Errorf("podnet: reading the qdisc of %s in %s: %w", cfg.IfName, cfg.NetNSPath, err)
	}
	return ingress, egress, nil
}

// CheckBandwidth reports whether the pair is shaped as cfg.Limits says.
func CheckBandwidth(cfg BandwidthConfig) error {
	in, eg, err := GetBandwidth(cfg)
	if err != nil {
		return err
	}
	var problems []string
	want := func(dir string, got *TBF, rate, burst uint64) {
		switch {
		case rate == 0 && got != nil:
			problems = append(problems, fmt.Sprintf("%s is shaped to %d bytes/s, want no limit", dir, got.RateBytes))
		case rate == 0:
		case got == nil:
			problems = append(problems, fmt.Sprintf("%s has no tbf, want %d bit/s", dir, rate))
		case got.RateBytes != TBFParams(rate, burst, cfg.MTU).RateBytes:
			problems = append(problems, fmt.Sprintf("%s is shaped to %d bytes/s, want %d", dir, got.RateBytes, TBFParams(rate, burst, cfg.MTU).RateBytes))
		}
	}
	want("ingress (host side "+cfg.HostIfName+")", in, cfg.Limits.IngressRate, cfg.Limits.IngressBurst)
	want("egress (pod side "+cfg.IfName+")", eg, cfg.Limits.EgressRate, cfg.Limits.EgressBurst)
	if len(problems) > 0 {
		return fmt.Errorf("podnet: bandwidth: %s", strings.Join(problems, "; "))
	}
	return nil
}

// shapeRoot installs (rate > 0) or removes (rate == 0) the tbf root qdisc of
// dev in the namespace at nsPath.
func shapeRoot(nsPath, dev string, rateBits, burstBits uint64, mtu int) error {
	netNS, err := openNetNS(nsPath)
	if err != nil {
		return err
	}
	defer netNS.Close()
	return netNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("looking up %s: %w", dev, err)
		}
		if rateBits == 0 {
			return removeTBF(link)
		}
		p := TBFParams(rateBits, burstBits, mtu)
		q := &netlink.Tbf{
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: tbfHandle, Parent: netlink.HANDLE_ROOT},
			Rate:       p.RateBytes,
			Limit:      uint32(min(p.LimitBytes, math.MaxUint32)),
			Buffer:     burstTicks(p),
		}
		if err := netlink.QdiscReplace(q); err != nil {
			return fmt.Errorf("installing tbf (rate %d bytes/s, burst %d bytes) on %s: %w", p.RateBytes, p.BurstBytes, dev, err)
		}
		return nil
	})
}

// burstTicks is tbf's "buffer": the time the rate takes to send the burst,
// in the kernel's packet scheduler ticks. The burst is at most 100 ms of the
// rate, far below the largest buffer tbf takes (2^32 ns).
func burstTicks(p TBF) uint32 {
	usec := float64(p.BurstBytes) * 1e6 / float64(p.RateBytes)
	return uint32(min(usec*netlink.TickInUsec(), math.MaxUint32))
}

// removeTBF deletes a tbf root qdisc SetBandwidth installed on link; other
// root qdiscs are left alone.
func removeTBF(link netlink.Link) error {
	qs, err := netlink.QdiscList(link)
	if err != nil {
		return fmt.Errorf("listing qdiscs of %s: %w", link.Attrs().Name, err)
	}
	for _, q := range qs {
		if _, ok := q.(*netlink.Tbf); ok && q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().Handle == tbfHandle {
			if err := netlink.QdiscDel(q); err != nil {
				return fmt.Errorf("removing tbf from %s: %w", link.Attrs().Name, err)
			}
		}
	}
	return nil
}

func readRoot(nsPath, dev string) (*TBF, error) {
	netNS, err := openNetNS(nsPath)
	if err != nil {
		return nil, err
	}
	defer netNS.Close()
	var out *TBF
	err = netNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("looking up %s: %w", dev, err)
		}
		qs, err := netlink.QdiscList(link)
		if err != nil {
			return fmt.Errorf("listing qdiscs of %s: %w", dev, err)
		}
		for _, q := range qs {
			if t, ok := q.(*netlink.Tbf); ok && q.Attrs().Parent == netlink.HANDLE_ROOT {
				burst := uint64(float64(t.Buffer) / netlink.TickInUsec() * float64(t.Rate) / 1e6)
				out = &TBF{RateBytes: t.Rate, BurstBytes: burst, LimitBytes: uint64(t.Limit)}
			}
		}
		return nil
	})
	return out, err
}
