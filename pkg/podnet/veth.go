package podnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetupVeth creates and configures the veth pair of a pod interface, or
// returns the existing one if it is already configured exactly as cfg says.
// See the package documentation for the steps. On failure nothing created by
// this call is left behind and the error is a *SetupError naming the step.
func SetupVeth(ctx context.Context, cfg VethConfig) (_ *VethResult, err error) {
	hostIfName := cfg.HostIfName
	fail := func(step string, err error) error {
		return &SetupError{HostIfName: hostIfName, Step: step, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, fail("start", err)
	}
	cfg, err = cfg.validate()
	if err != nil {
		return nil, fail("validate configuration", err)
	}
	hostNS, err := openNetNS(cfg.HostNetNSPath)
	if err != nil {
		return nil, fail("open host netns", err)
	}
	defer hostNS.Close()
	podNS, err := openNetNS(cfg.NetNSPath)
	if err != nil {
		return nil, fail("open pod netns", err)
	}
	defer podNS.Close()

	// An ADD retry finds the pair it created before.
	hv, err := observeHost(hostNS, podNS, cfg.HostIfName)
	if err != nil {
		return nil, fail("inspect host interface", err)
	}
	pv, err := observePod(podNS, cfg.IfName, cfg.TxChecksumOff)
	if err != nil {
		return nil, fail("inspect pod interface", err)
	}
	if hv.link != nil {
		if problems := compare(cfg, hv, pv, true); len(problems) == 0 {
			return result(hv, pv), nil
		}
		// Stale or differently configured: replace it. Deleting the host
		// side deletes its peer too, wherever it is.
		if err := ctx.Err(); err != nil {
			return nil, fail("remove stale host interface", err)
		}
		if hv.link.Type() != "veth" {
			return nil, fail("remove stale host interface",
				fmt.Errorf("%s exists and is a %s device, not a veth; refusing to delete it", cfg.HostIfName, hv.link.Type()))
		}
		if err := deleteLink(hostNS, cfg.HostIfName, hv.link.Attrs().Index); err != nil {
			return nil, fail("remove stale host interface", err)
		}
		if pv, err = observePod(podNS, cfg.IfName, false); err != nil {
			return nil, fail("inspect pod interface", err)
		}
	}
	if pv.link != nil {
		return nil, fail("create veth pair", fmt.Errorf("%w: interface %s already exists in netns %s and is not the peer of %s",
			ErrIfNameInUse, cfg.IfName, cfg.NetNSPath, cfg.HostIfName))
	}

	if err := ctx.Err(); err != nil {
		return nil, fail("create veth pair", err)
	}
	var (
		res     VethResult
		created bool
	)
	err = hostNS.Do(func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name = cfg.HostIfName
		la.MTU = cfg.MTU
		veth := netlink.NewVeth(la)
		veth.PeerName = cfg.IfName
		veth.PeerHardwareAddr = cfg.MAC
		veth.PeerNamespace = netlink.NsFd(int(podNS.Fd()))
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("creating veth %s with peer %s in netns %s: %w", cfg.HostIfName, cfg.IfName, cfg.NetNSPath, err)
		}
		created = true
		link, err := netlink.LinkByName(cfg.HostIfName)
		if err != nil {
			return fmt.Errorf("looking up the new veth %s: %w", cfg.HostIfName, err)
		}
		res.HostIfName = cfg.HostIfName
		res.HostIfIndex = link.Attrs().Index
		return nil
	})
	if err != nil {
		se := &SetupError{HostIfName: hostIfName, Step: "create veth pair", Err: err}
		if created { // but not found again: remove it by name
			se.RollbackErr = deleteLink(hostNS, cfg.HostIfName, 0)
		}
		return nil, se
	}
	defer func() {
		if err == nil {
			return
		}
		if se := (*SetupError)(nil); errors.As(err, &se) {
			se.RollbackErr = deleteLink(hostNS, cfg.HostIfName, res.HostIfIndex)
		}
	}()

	if err := ctx.Err(); err != nil {
		return nil, fail("configure host interface", err)
	}
	err = hostNS.Do(func(ns.NetNS) error {
		// Before the link goes up, so the kernel never assigns it a
		// link-local address nor sends router solicitations or DAD probes
		// into the bridge.
		if err := disableIPv6(cfg.HostIfName); err != nil {
			return err
		}
		link, err := netlink.LinkByIndex(res.HostIfIndex)
		if err != nil {
			return fmt.Errorf("looking up %s: %w", cfg.HostIfName, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting %s up: %w", cfg.HostIfName, err)
		}
		res.HostMAC = link.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		return nil, fail("configure host interface", err)
	}

	if err := ctx.Err(); err != nil {
		return nil, fail("configure pod interface", err)
	}
	err = podNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(cfg.IfName)
		if err != nil {
			return fmt.Errorf("looking up %s: %w", cfg.IfName, err)
		}
		if cfg.TxChecksumOff {
			if err := setTxChecksum(cfg.IfName, false); err != nil {
				return fmt.Errorf("turning off tx checksum offload: %w", err)
			}
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting %s up: %w", cfg.IfName, err)
		}
		for _, a := range cfg.addresses() {
			addr := &netlink.Addr{IPNet: a.IPNet}
			if a.IPNet.IP.To4() == nil {
				addr.Flags = unix.IFA_F_NODAD // the address is ours alone
			}
			if err := netlink.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("adding address %s to %s: %w", a.IPNet, cfg.IfName, err)
			}
			for _, dst := range cfg.routes(a) {
				route := &netlink.Route{
					LinkIndex: link.Attrs().Index,
					Dst:       dst,
					Gw:        a.Gateway,
					Flags:     int(netlink.FLAG_ONLINK),
				}
				if err := netlink.RouteAdd(route); err != nil {
					what := "route " + dst.String()
					if isDefault(dst) {
						what = "default route"
					}
					return fmt.Errorf("adding %s via %s dev %s: %w", what, a.Gateway, cfg.IfName, err)
				}
			}
		}
		res.ContainerIfName = cfg.IfName
		res.ContainerIfIndex = link.Attrs().Index
		res.ContainerMAC = link.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		return nil, fail("configure pod interface", err)
	}
	return &res, nil
}

// TeardownVeth removes a pod's veth pair. It is idempotent: a namespace or
// interface that no longer exists is not an error. The host side (a veth
// named hostIfName in hostNetNSPath, or in the calling thread's namespace if
// that is empty) is deleted, which deletes its peer; then a veth named ifName
// left in the pod namespace netNSPath, if any, is deleted too. An empty
// hostIfName, or an empty netNSPath or ifName, skips that side. A host
// interface of that name that is not a veth is left alone and reported.
func TeardownVeth(ctx context.Context, hostNetNSPath, hostIfName, netNSPath, ifName string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("podnet: tearing down veth %s: %w", hostIfName, err)
	}
	if hostIfName != "" {
		if err := teardownSide(hostNetNSPath, hostIfName, true); err != nil {
			return fmt.Errorf("podnet: tearing down host interface %s: %w", hostIfName, err)
		}
	}
	if netNSPath != "" && ifName != "" {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("podnet: tearing down veth %s: %w", hostIfName, err)
		}
		if err := teardownSide(netNSPath, ifName, false); err != nil {
			return fmt.Errorf("podnet: tearing down pod interface %s in netns %s: %w", ifName, netNSPath, err)
		}
	}
	return nil
}

func teardownSide(nsPath, name string, strict bool) error {
	netNS, err := openNetNS(nsPath)
	if errors.Is(err, ErrNetNSNotFound) {
		return nil // the namespace and everything in it are gone
	}
	if err != nil {
		return err
	}
	defer netNS.Close()
	return netNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(name)
		if isLinkNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("looking up %s: %w", name, err)
		}
		if link.Type() != "veth" {
			if strict {
				return fmt.Errorf("%s is a %s device, not a veth; refusing to delete it", name, link.Type())
			}
			return nil
		}
		if err := netlink.LinkDel(link); err != nil && !isLinkGone(err) {
			return fmt.Errorf("deleting %s: %w", name, err)
		}
		return nil
	})
}

// CheckVeth verifies that the pod interface and its host side are configured
// as cfg says: the pod interface exists in cfg.NetNSPath, is a veth and up,
// has cfg.MAC (if set), the address cfg.IPNet, the default route via
// cfg.Gateway (unless cfg.NoDefaultRoute), every route of cfg.Routes via
// cfg.Gateway and, if cfg.TxChecksumOff, tx checksum offload off; the host
// side exists, is a veth, is up, has cfg.MTU (if set) and is the peer of the
// pod interface. The pod side's MTU is not checked: a later plugin of the
// chain (tuning) may lower it, and the CNI spec requires CHECK to allow for
// such changes; the host side is Weir's alone. Routes and addresses other
// plugins added are ignored. It returns nil, a *CheckError listing every
// problem, or an error saying why it could not look.
func CheckVeth(ctx context.Context, cfg VethConfig) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("podnet: checking veth %s: %w", cfg.HostIfName, err)
	}
	mac := cfg.MAC
	cfg, err := cfg.validate()
	if err != nil {
		return fmt.Errorf("podnet: checking veth %s: %w", cfg.HostIfName, err)
	}
	cfg.MAC = mac // only checked if given
	hostNS, err := openNetNS(cfg.HostNetNSPath)
	if err != nil {
		return fmt.Errorf("podnet: checking veth %s: host netns: %w", cfg.HostIfName, err)
	}
	defer hostNS.Close()
	podNS, err := openNetNS(cfg.NetNSPath)
	if err != nil {
		return fmt.Errorf("podnet: checking veth %s: pod netns: %w", cfg.HostIfName, err)
	}
	defer podNS.Close()
	hv, err := observeHost(hostNS, podNS, cfg.HostIfName)
	if err != nil {
		return fmt.Errorf("podnet: checking veth %s: %w", cfg.HostIfName, err)
	}
	pv, err := observePod(podNS, cfg.IfName, cfg.TxChecksumOff)
	if err != nil {
		return fmt.Errorf("podnet: checking veth %s: %w", cfg.HostIfName, err)
	}
	if problems := compare(cfg, hv, pv, false); len(problems) > 0 {
		return &CheckError{HostIfName: cfg.HostIfName, Problems: problems}
	}
	return nil
}

// hostView is what observeHost saw in the host namespace.
type hostView struct {
	nsPath  string
	link    netlink.Link // nil if absent
	podNsID int          // id of the pod namespace in the host namespace, -1 if none
}

// podView is what observePod saw in the pod namespace.
type podView struct {
	nsPath string
	link   netlink.Link // nil if absent
	addrs  []netlink.Addr
	routes []netlink.Route // routes of the main table through link
	txCsum bool            // only if asked for
}

func observeHost(hostNS, podNS ns.NetNS, name string) (hostView, error) {
	v := hostView{nsPath: hostNS.Path(), podNsID: -1}
	err := hostNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(name)
		if isLinkNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("looking up host interface %s: %w", name, err)
		}
		v.link = link
		// After the link dump, which makes the kernel assign the peer
		// namespace an id if it had none.
		if id, err := netlink.GetNetNsIdByFd(int(podNS.Fd())); err == nil {
			v.podNsID = id
		}
		return nil
	})
	return v, err
}

func observePod(podNS ns.NetNS, name string, wantTx bool) (podView, error) {
	v := podView{nsPath: podNS.Path()}
	err := podNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(name)
		if isLinkNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("looking up pod interface %s: %w", name, err)
		}
		v.link = link
		if err := retryDump(func() (err error) {
			v.addrs, err = netlink.AddrList(link, netlink.FAMILY_ALL)
			return err
		}); err != nil {
			return fmt.Errorf("listing addresses of %s: %w", name, err)
		}
		var routes []netlink.Route
		if err := retryDump(func() (err error) {
			routes, err = netlink.RouteListFiltered(netlink.FAMILY_ALL,
				&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
				netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
			return err
		}); err != nil {
			return fmt.Errorf("listing routes of %s: %w", name, err)
		}
		v.routes = routes
		if wantTx {
			if v.txCsum, err = txChecksum(name); err != nil {
				return err
			}
		}
		return nil
	})
	return v, err
}

// compare lists every difference between cfg and what was observed. exact
// (a retried SetupVeth deciding whether to keep a pair) also compares the
// pod side's MTU, which CheckVeth leaves to chained plugins.
func compare(cfg VethConfig, hv hostView, pv podView, exact bool) []string {
	var p []string
	add := func(format string, a ...any) { p = append(p, fmt.Sprintf(format, a...)) }
	hostWhere := "in the host netns"
	if cfg.HostNetNSPath != "" {
		hostWhere = "in netns " + cfg.HostNetNSPath
	}
	if hv.link == nil {
		add("host interface %s not found %s", cfg.HostIfName, hostWhere)
	} else {
		a := hv.link.Attrs()
		if hv.link.Type() != "veth" {
			add("host interface %s is a %s device, not a veth", cfg.HostIfName, hv.link.Type())
		}
		if a.Flags&net.FlagUp == 0 {
			add("host interface %s is down", cfg.HostIfName)
		}
		if cfg.MTU != 0 && a.MTU != cfg.MTU {
			add("host interface %s has MTU %d, want %d", cfg.HostIfName, a.MTU, cfg.MTU)
		}
	}
	if pv.link == nil {
		add("interface %s not found in netns %s", cfg.IfName, cfg.NetNSPath)
		return p
	}
	a := pv.link.Attrs()
	if pv.link.Type() != "veth" {
		add("interface %s in netns %s is a %s device, not a veth", cfg.IfName, cfg.NetNSPath, pv.link.Type())
	}
	if a.Flags&net.FlagUp == 0 {
		add("interface %s in netns %s is down", cfg.IfName, cfg.NetNSPath)
	}
	if cfg.MAC != nil && !slices.Equal(a.HardwareAddr, cfg.MAC) {
		add("interface %s in netns %s has MAC %s, want %s", cfg.IfName, cfg.NetNSPath, a.HardwareAddr, cfg.MAC)
	}
	if exact && cfg.MTU != 0 && a.MTU != cfg.MTU {
		add("interface %s in netns %s has MTU %d, want %d", cfg.IfName, cfg.NetNSPath, a.MTU, cfg.MTU)
	}
	for _, want := range cfg.addresses() {
		p = append(p, compareAddress(cfg, want, pv)...)
	}
	if cfg.TxChecksumOff && pv.txCsum {
		add("interface %s in netns %s has tx checksum offload on, want off", cfg.IfName, cfg.NetNSPath)
	}
	if hv.link != nil {
		h := hv.link.Attrs()
		if h.ParentIndex != a.Index || a.ParentIndex != h.Index || h.NetNsID != hv.podNsID {
			add("host interface %s is not the peer of %s in netns %s", cfg.HostIfName, cfg.IfName, cfg.NetNSPath)
		}
	}
	return p
}

// compareAddress lists what the pod side lacks of one address: the address
// and its routes via its gateway.
func compareAddress(cfg VethConfig, want Address, pv podView) []string {
	var p []string
	add := func(format string, a ...any) { p = append(p, fmt.Sprintf(format, a...)) }
	if !slices.ContainsFunc(pv.addrs, func(ad netlink.Addr) bool { return sameIPNet(ad.IPNet, want.IPNet) }) {
		var have []string
		for _, ad := range pv.addrs {
			if ad.IP.IsGlobalUnicast() {
				have = append(have, ad.IPNet.String())
			}
		}
		add("interface %s in netns %s lacks address %s (has %s)", cfg.IfName, cfg.NetNSPath, want.IPNet, listOrNone(have))
	}
	for _, dst := range cfg.routes(want) {
		if slices.ContainsFunc(pv.routes, func(r netlink.Route) bool { return sameDst(r.Dst, dst) && r.Gw.Equal(want.Gateway) }) {
			continue
		}
		var have []string
		for _, r := range pv.routes {
			if sameDst(r.Dst, dst) && (r.Gw == nil || (r.Gw.To4() == nil) == (want.Gateway.To4() == nil)) {
				have = append(have, "via "+r.Gw.String())
			}
		}
		what := "route " + dst.String()
		if isDefault(dst) {
			what = "default route"
		}
		add("interface %s in netns %s has no %s via %s (has %s)", cfg.IfName, cfg.NetNSPath, what, want.Gateway, listOrNone(have))
	}
	return p
}

func result(hv hostView, pv podView) *VethResult {
	h, c := hv.link.Attrs(), pv.link.Attrs()
	return &VethResult{
		HostIfName:       h.Name,
		HostIfIndex:      h.Index,
		HostMAC:          h.HardwareAddr,
		ContainerIfName:  c.Name,
		ContainerIfIndex: c.Index,
		ContainerMAC:     c.HardwareAddr,
	}
}

// deleteLink deletes the veth name in netNS; a non-zero index must match.
// A link already gone is not an error.
func deleteLink(netNS ns.NetNS, name string, index int) error {
	return netNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(name)
		if isLinkNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("looking up %s: %w", name, err)
		}
		if index != 0 && link.Attrs().Index != index {
			return nil // not the link we created
		}
		if err := netlink.LinkDel(link); err != nil && !isLinkGone(err) {
			return fmt.Errorf("deleting %s: %w", name, err)
		}
		return nil
	})
}

// disableIPv6 turns IPv6 off on name in the calling thread's namespace. A
// kernel without IPv6 has nothing to turn off.
func disableIPv6(name string) error {
	path := "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6"
	err := os.WriteFile(path, []byte("1"), 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		if _, statErr := os.Stat("/proc/sys/net/ipv6"); errors.Is(statErr, fs.ErrNotExist) {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("disabling IPv6 on %s: %w", name, err)
	}
	return nil
}

// openNetNS opens the network namespace at path, or the calling thread's if
// path is empty. A missing namespace is ErrNetNSNotFound.
func openNetNS(path string) (ns.NetNS, error) {
	if path == "" {
		n, err := ns.GetCurrentNS()
		if err != nil {
			return nil, fmt.Errorf("opening the current network namespace: %w", err)
		}
		return n, nil
	}
	n, err := ns.GetNS(path)
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	switch {
	case errors.As(err, &notExist):
		return nil, fmt.Errorf("%w: %s does not exist", ErrNetNSNotFound, path)
	case errors.As(err, &notNS):
		return nil, fmt.Errorf("%w: %s is not a network namespace", ErrNetNSNotFound, path)
	case err != nil:
		return nil, fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	return n, nil
}

func defaultDst(gw net.IP) *net.IPNet {
	if gw.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// routes returns the destinations SetupVeth routes via a's gateway: the
// default route of its family unless NoDefaultRoute, then its Routes.
func (cfg VethConfig) routes(a Address) []*net.IPNet {
	var out []*net.IPNet
	if !cfg.NoDefaultRoute {
		out = append(out, defaultDst(a.Gateway))
	}
	return append(out, a.Routes...)
}

// sameDst compares route destinations; nil (as netlink reports a default
// route) is the default route.
func sameDst(a, b *net.IPNet) bool {
	if isDefault(a) || isDefault(b) {
		return isDefault(a) && isDefault(b)
	}
	return sameIPNet(a, b)
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

func sameIPNet(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return false
	}
	ao, ab := a.Mask.Size()
	bo, bb := b.Mask.Size()
	return a.IP.Equal(b.IP) && ao == bo && (ab == bb || ab-bb == 96 || bb-ab == 96)
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// isLinkGone reports whether a delete failed because the link had already
// disappeared.
func isLinkGone(err error) bool {
	return errors.Is(err, unix.ENODEV) || isLinkNotFound(err)
}

// retryDump runs a netlink dump again when the kernel reports that it was
// interrupted by a concurrent change.
func retryDump(dump func() error) error {
	var err error
	for range 5 {
		if err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
