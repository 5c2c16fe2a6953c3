package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/openflow"
)

// Backoff and bound of restoring the node's networking after an OpenFlow
// reconnect. After nodeRestoreMax the agent gives up for this reconnect
// and clears flow-restore-wait anyway: forwarding with what could be
// restored beats not forwarding at all.
const (
	nodeRestoreRetryBase = 100 * time.Millisecond
	nodeRestoreRetryMax  = 2 * time.Second
	nodeRestoreMax       = 30 * time.Second
)

// nodeRestorer re-creates what a restarted ovs-vswitchd took with it.
type nodeRestorer func(ctx context.Context) error

// nodeNetwork is the node-side networking the agent set up at start-up
// around OVS: with the userspace datapath the underlay bridge and the
// gateway are tap devices of ovs-vswitchd, and when ovs-vswitchd deletes
// them (exit --cleanup; a node reboot that keeps the OVSDB file) their
// addresses and every route through them go too, while a restarted
// ovs-vswitchd recreates them empty. (OVS 3.1 keeps its tap devices, and
// what is on them, over a plain exit, SIGTERM or SIGKILL.) Restore puts it
// all back; every step is idempotent, so it is also run where nothing was
// lost (the kernel datapath).
type nodeNetwork struct {
	// underlay, when set, is the userspace underlay (SetupUnderlay).
	underlay *nodenet.UnderlayConfig
	// gateway, gatewayAddrs and mtu configure the gateway interface.
	gateway      string
	gatewayAddrs []*net.IPNet
	mtu          int
	// peers, when set (cluster mode), restores the peers' routes and
	// tunnel neighbours.
	peers *NodeController
	log   klog.Logger
}

// Restore re-creates, in order, the underlay (addresses and routes on the
// underlay bridge, from the OVSDB record), the gateway's address, MTU and
// up state, and the routes and tunnel neighbours of all current peers.
// Pod egress SNAT (nftables) matches the gateway by name, so it survives
// the gateway device being recreated, and is not touched.
func (n *nodeNetwork) Restore(ctx context.Context) error {
	start := time.Now()
	if n.underlay != nil {
		if _, err := nodenet.SetupUnderlay(ctx, *n.underlay); err != nil {
			return fmt.Errorf("restoring the underlay on %s: %w", n.underlay.NIC, err)
		}
	}
	if err := configureGateway(ctx, n.gateway, n.mtu, n.gatewayAddrs...); err != nil {
		return fmt.Errorf("restoring the gateway: %w", err)
	}
	if n.peers != nil {
		if err := n.peers.ResyncPeers(ctx); err != nil {
			return err
		}
	}
	n.log.Info("Node networking restored after reconnect", "underlay", n.underlay != nil, "gateway", n.gateway,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// restoreNode runs restore with backoff until it succeeds, ctx ends or
// nodeRestoreMax has passed (logged).
func restoreNode(ctx context.Context, restore nodeRestorer, log klog.Logger) {
	attempts, err := retryWithBackoff(ctx, nodeRestoreRetryBase, nodeRestoreRetryMax, time.Now().Add(nodeRestoreMax), restore,
		func(err error, attempt int, retryIn time.Duration) {
			log.Error(err, "Restoring the node's networking failed; retrying", "attempt", attempt, "retryIn", retryIn)
		})
	if err != nil && ctx.Err() == nil {
		log.Error(err, "Restoring the node's networking failed; giving up until the next reconnect", "attempts", attempts)
	}
}

// watchReconnects logs reconnects; the openflow layer has replayed the
// flow cache by the time one is reported, so it then clears
// flow-restore-wait, which a restarted ovs-vswitchd starts with.
func watchReconnects(ctx context.Context, sw *openflow.Switch, db flowRestoreClearer, log klog.Logger) {
	watchReconnectsRestoring(ctx, sw, db, nil, log)
}

// watchReconnectsRestoring is watchReconnects that, when restore is set,
// first restores the node's networking (restoreNode) after each reconnect:
// ovs-vswitchd restarted, and forwarding resumes (flow-restore-wait is
// cleared) only once the node can route again.
func watchReconnectsRestoring(ctx context.Context, sw *openflow.Switch, db flowRestoreClearer, restore nodeRestorer,
	log klog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case gen := <-sw.Reconnected():
			log.Info("OpenFlow connection re-established and flows replayed", "generation", gen)
			if restore != nil {
				restoreNode(ctx, restore, log)
			}
			clearFlowRestoreWait(ctx, db, log)
		}
	}
}

// initialSync is a controller whose first complete sync the removal of the
// previous run's flows waits for.
type initialSync struct {
	name string
	wait func(context.Context) error
}

// staleFlowsLogEvery is how often removeStaleFlows says it is still
// waiting for the Node controller.
const staleFlowsLogEvery = 30 * time.Second

// removeStaleFlows deletes the flows of every cookie round on the bridge
// other than current (rounds.go): flows of pods deleted, peers gone and
// policies removed while the agent was down, from the previous run and
// from any earlier run that was restarted before it got this far. It first
// waits for the initial sync of every controller in synced (the Node
// controller re-installs every current peer, the policy controller every
// current rule, in this run's round); until then the earlier runs' flows
// keep cross-node traffic going and isolated pods isolated. The rounds are
// read from the bridge when the wait is over, so whatever the history,
// only this run's flows (and flows of round 0, not Weir's) remain.
func removeStaleFlows(ctx context.Context, sw *openflow.Switch, current uint8, synced []initialSync, log klog.Logger) error {
	start := time.Now()
	for _, s := range synced {
		for {
			wctx, cancel := context.WithTimeout(ctx, staleFlowsLogEvery)
			err := s.wait(wctx)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Info("Still waiting for an initial sync before removing the flows of earlier runs",
				"controller", s.name, "round", current, "waited", time.Since(start).Round(time.Second))
		}
	}
	br, err := readRounds(ctx, sw)
	if err != nil {
		return err
	}
	stale := staleRounds(br, current)
	flows := 0
	for _, r := range stale {
		flows += br.present[r]
	}
	// One bundle: the stale rounds go together or not at all. (None is
	// common: this run re-added every flow an earlier run had, replacing
	// them; the log line below still marks the end of the cleanup.)
	if len(stale) > 0 {
		if err := sw.Apply(ctx, deleteRoundsOps(stale)); err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			return fmt.Errorf("removing stale flows of rounds %v: %w", roundsForLog(stale), err)
		}
	}
	log.Info("Removed the previous run's stale flows (and any earlier run's)", "rounds", roundsForLog(stale), "flows", flows, "round", current,
		"afterStart", time.Since(start).Round(time.Millisecond))
	return nil
}
