package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/ovsdb"
)

// cleanupTimeout bounds each step of Cleanup that talks to OVSDB.
const cleanupTimeout = 30 * time.Second

// Cleanup undoes on this node what Run set up, for uninstalling Weir
// (`ovs-agent --cleanup`): it removes the SNAT table and the pod guard,
// gives the underlay NIC its addresses and routes back and deletes br-phy
// (netdev datapath with an underlay interface), deletes the integration
// bridge with the gateway, tunnel and pod ports, and removes the state
// directory (IPAM allocations). net.ipv4.ip_forward is left as it is: other
// software on the node may rely on it. Pods still running lose their
// network; uninstall after draining. Every step runs even if an earlier one
// failed; the errors are joined.
func Cleanup(ctx context.Context, cfg Config, log klog.Logger) error {
	var errs []error
	step := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			log.Error(err, "Cleanup step failed", "step", what)
			return
		}
		log.Info("Cleaned up", "step", what)
	}
	step("removing the SNAT table ip "+nodenet.SNATTable, nodenet.RemoveSNAT(ctx))
	step("removing the pod guard", nodenet.RemovePodGuard(ctx))

	cctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	db, err := ovsdb.Connect(cctx, cfg.OVSDBEndpoint, log.WithName("ovsdb"))
	if err != nil {
		step("connecting to OVSDB at "+cfg.OVSDBEndpoint, err)
		return errors.Join(errs...)
	}
	defer db.Close()
	if cfg.DatapathType == ovsdb.DatapathNetdev && cfg.UnderlayInterface != "" {
		step("moving the underlay back to "+cfg.UnderlayInterface,
			nodenet.TeardownUnderlay(cctx, nodenet.UnderlayConfig{OVSDB: db, NIC: cfg.UnderlayInterface}))
	}
	step("deleting bridge "+cfg.Bridge, db.DeleteBridge(cctx, cfg.Bridge))
	step("removing "+cfg.StateDir, os.RemoveAll(cfg.StateDir))
	return errors.Join(errs...)
}
