package ovsdb

import (
	"context"
	"fmt"
	"time"

	"github.com/ovn-org/libovsdb/model"
	libovsdb "github.com/ovn-org/libovsdb/ovsdb"

	"github.com/weirnet/weir/pkg/ovsdb/vswitchd"
)

// FlowRestoreWaitKey is the Open_vSwitch other_config key that makes a
// starting ovs-vswitchd leave the datapath alone (no flows added or
// removed, so nothing is forwarded by an empty OpenFlow table) until it is
// set to false or removed. Weir's OVS container sets it to true before it
// starts ovs-vswitchd; the agent removes it once its flows are back
// (ClearFlowRestoreWait).
const FlowRestoreWaitKey = "flow-restore-wait"

// ClearFlowRestoreWait removes other_config:flow-restore-wait from the
// Open_vSwitch row, telling ovs-vswitchd that the OpenFlow tables are
// complete and it may start forwarding with them. It is one transaction (a
// mutation deleting the key, whatever its value), so it is idempotent and
// a no-op when the key is absent; it does not read the column, which the
// Client does not monitor.
func (c *Client) ClearFlowRestoreWait(ctx context.Context) error {
	began := time.Now()
	err := c.retry(ctx, "clear "+FlowRestoreWaitKey, func() error {
		root, err := c.rootUUID(ctx)
		if err != nil {
			return err
		}
		row := &vswitchd.OpenvSwitch{UUID: root}
		ops, err := c.db.Where(row).Mutate(row, model.Mutation{
			Field: &row.OtherConfig, Mutator: libovsdb.MutateOperationDelete, Value: []string{FlowRestoreWaitKey},
		})
		if err != nil {
			return fmt.Errorf("ovsdb: clear %s: %w", FlowRestoreWaitKey, err)
		}
		_, err = c.transact(ctx, "clear other_config:"+FlowRestoreWaitKey, ops)
		return err
	})
	if err != nil {
		return err
	}
	c.log.V(2).Info("Cleared other_config:"+FlowRestoreWaitKey, "duration", time.Since(began))
	return nil
}
