package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/cniserver"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
)

// gatewayOFPort is the OpenFlow port the gateway asks for.
const gatewayOFPort = 2

// Run starts the agent and serves until ctx ends. Start-up order: pod CIDR
// (from the config, or else from the Node object once it has one), OVSDB,
// bridge (with table names), gateway port and address, OpenFlow
// connection, base pipeline, IPAM, restore of existing pods, removal of the
// previous run's stale flows, and only then CNI readiness.
func Run(ctx context.Context, cfg Config, log klog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid agent config: %w", err)
	}
	cidr, err := podCIDR(ctx, cfg, log)
	if err != nil {
		return err
	}
	start := time.Now() // the pod CIDR wait is logged on its own

	db, err := ovsdb.Connect(ctx, cfg.OVSDBEndpoint, log.WithName("ovsdb"))
	if err != nil {
		return fmt.Errorf("connecting to OVSDB at %s: %w", cfg.OVSDBEndpoint, err)
	}
	defer db.Close()
	if _, err := db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: cfg.Bridge, DatapathType: cfg.DatapathType}); err != nil {
		return fmt.Errorf("ensuring bridge %s: %w", cfg.Bridge, err)
	}
	if err := db.SetFlowTableNames(ctx, cfg.Bridge, pipeline.TableNames()); err != nil {
		return fmt.Errorf("naming the pipeline's tables: %w", err)
	}

	alloc, err := ipam.New(cidr, ipam.NewFileStore(filepath.Join(cfg.StateDir, "ipam.json")))
	if err != nil {
		return fmt.Errorf("opening IPAM state: %w", err)
	}
	gwIP := alloc.Gateway()
	gwMAC := podnet.MACFromIP(gwIP)
	gwPort, err := db.EnsureInternalPort(ctx, cfg.Bridge, cfg.GatewayName, ovsdb.PortOptions{
		OFPortRequest: gatewayOFPort, MAC: gwMAC.String(), MTU: cfg.MTU,
		ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway},
	})
	if err != nil {
		return fmt.Errorf("ensuring gateway port %s: %w", cfg.GatewayName, err)
	}
	if err := configureGateway(ctx, cfg.GatewayName, &net.IPNet{IP: gwIP, Mask: cidr.Mask}, cfg.MTU); err != nil {
		return err
	}

	sw, err := openflow.Open(openflow.Config{MgmtSocket: cfg.MgmtSocket(), Logger: log.WithName("openflow")})
	if err != nil {
		return err
	}
	defer sw.Close()
	if err := sw.WaitReady(ctx); err != nil {
		return err
	}
	prevRound, err := previousRound(ctx, sw)
	if err != nil {
		return err
	}
	round := prevRound + 1
	if round == 0 {
		round = 1
	}
	pipe, err := pipeline.New(sw, pipeline.Config{GatewayOFPort: uint32(gwPort), GatewayMAC: gwMAC, GatewayIP: gwIP,
		PodCIDR: cidr, CTZone: cfg.CTZone, Round: round})
	if err != nil {
		return err
	}
	if err := pipe.InstallBase(ctx); err != nil {
		return err
	}

	srv := cniserver.New(cniserver.Config{Bridge: cfg.Bridge, MTU: cfg.MTU, TxChecksumOff: cfg.DatapathType == "netdev",
		Logger: log}, db, pipe, alloc)
	st, err := srv.Restore(ctx)
	if err != nil {
		// A pod that cannot be restored must not keep the node from
		// serving the others; it is logged and CHECK reports it.
		log.Error(err, "Restoring some pods failed")
	}
	if prevRound != 0 {
		// Flows of the previous run that were not re-installed (pods
		// deleted while the agent was down) still carry its round.
		if err := sw.Apply(ctx, []openflow.FlowOp{openflow.DeleteByCookie(uint64(prevRound)<<56, openflow.CookieRoundMask)}); err != nil {
			return fmt.Errorf("removing stale flows of round %d: %w", prevRound, err)
		}
	}
	srv.SetReady(true)
	log.Info("Agent ready", "bridge", cfg.Bridge, "datapath", cfg.DatapathType, "podCIDR", cidr.String(),
		"gateway", gwIP.String(), "round", round, "restoredPods", st.Restored, "removedPods", st.Removed,
		"releasedIPs", st.Released, "startup", time.Since(start).Round(time.Millisecond))

	go watchReconnects(ctx, sw, log)
	return srv.Serve(ctx, cfg.CNISocket)
}

// podCIDR returns the configured pod CIDR or, when none is configured,
// waits until the API server's Node object cfg.NodeName has one.
func podCIDR(ctx context.Context, cfg Config, log klog.Logger) (*net.IPNet, error) {
	if cfg.PodCIDR != "" {
		return cfg.ParsePodCIDR()
	}
	client, err := NewKubeClient(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cidr, err := WaitForPodCIDR(ctx, client, cfg.NodeName, log.WithName("podcidr"))
	if err != nil {
		return nil, fmt.Errorf("reading the pod CIDR from the API server: %w", err)
	}
	return cidr, nil
}

// previousRound finds the cookie round of flows a previous agent run left
// on the bridge (0 if none), so this run uses the next one.
func previousRound(ctx context.Context, sw *openflow.Switch) (uint8, error) {
	flows, err := sw.DumpFlows(ctx, openflow.FlowFilter{Table: ptr(pipeline.Classifier)})
	if err != nil {
		return 0, fmt.Errorf("reading existing flows: %w", err)
	}
	for _, f := range flows {
		c := openflow.Cookie(f.Flow.Cookie)
		if c.Category() == pipeline.CategoryBase && c.Round() != 0 {
			return c.Round(), nil
		}
	}
	return 0, nil
}

func ptr[T any](v T) *T { return &v }

// watchReconnects logs reconnects; the openflow layer has replayed the
// flow cache by the time one is reported.
func watchReconnects(ctx context.Context, sw *openflow.Switch, log klog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case gen := <-sw.Reconnected():
			log.Info("OpenFlow connection re-established and flows replayed", "generation", gen)
		}
	}
}

// configureGateway puts the gateway address on the gateway interface and
// brings it up. OVS creates the interface asynchronously, so wait for it.
func configureGateway(ctx context.Context, name string, addr *net.IPNet, mtu int) error {
	var link netlink.Link
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if link, err = netlink.LinkByName(name); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("gateway interface %s did not appear: %w", name, errors.Join(err, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("setting MTU %d on gateway %s: %w", mtu, name, err)
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: addr}); err != nil {
		return fmt.Errorf("adding %s to gateway %s: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing gateway %s up: %w", name, err)
	}
	return nil
}
