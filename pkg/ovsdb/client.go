package ovsdb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/ovn-org/libovsdb/client"
	"github.com/ovn-org/libovsdb/model"
	libovsdb "github.com/ovn-org/libovsdb/ovsdb"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/ovsdb/vswitchd"
)

// databaseName is the name of the database ovs-vswitchd is configured from.
const databaseName = "Open_vSwitch"

// closedEndpoint is an endpoint that can never be connected to (a path below
// a regular file). Close points libovsdb at it so a reconnect loop that is
// running when Close is called ends instead of connecting again.
const closedEndpoint = "unix:/dev/null/weir-ovsdb-client-closed"

// Defaults of the Options.
const (
	defaultOFPortTimeout   = 10 * time.Second
	defaultConnectTimeout  = 5 * time.Second
	defaultBackoffInitial  = 50 * time.Millisecond
	defaultBackoffMax      = 2 * time.Second
	defaultRollbackTimeout = 10 * time.Second
	// maxAttempts bounds how often one logical change is rebuilt and
	// retried after a retriable failure (see isRetriable).
	maxAttempts = 4
	// retryDelay is the pause before the first retry; it grows linearly.
	retryDelay = 2 * time.Millisecond
	// recheckInterval is how often waits re-read the replica even without
	// a change notification (libovsdb drops events when its queue is full).
	recheckInterval = 100 * time.Millisecond
	// connectionWatchInterval is how often the connection state is
	// sampled for logging.
	connectionWatchInterval = 250 * time.Millisecond
)

// Option configures a Client at Connect.
type Option func(*config)

type config struct {
	ofportTimeout  time.Duration
	connectTimeout time.Duration
	backoffInitial time.Duration
	backoffMax     time.Duration
	observer       Observer
}

// Observer receives the Client's transactions (for metrics, see
// pkg/metrics). It is called on the caller's goroutine, so it must be cheap
// and safe for concurrent use.
type Observer interface {
	// OVSDBTransaction reports one transaction: how long it took and the
	// error the caller got (nil when it committed).
	OVSDBTransaction(d time.Duration, err error)
}

// WithObserver makes the Client report every transaction to o.
func WithObserver(o Observer) Option {
	return func(c *config) { c.observer = o }
}

// WithOFPortTimeout bounds how long port and bridge calls wait for
// ovs-vswitchd to assign an OpenFlow port (default 10s), in addition to the
// call's context. A non-positive d keeps the default.
func WithOFPortTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.ofportTimeout = d
		}
	}
}

// WithReconnectBackoff sets the delay before the first reconnection attempt
// (default 50ms) and the cap it grows to (default 2s). Reconnection never
// gives up. Non-positive values keep the defaults.
func WithReconnectBackoff(initial, max time.Duration) Option {
	return func(c *config) {
		if initial > 0 {
			c.backoffInitial = initial
		}
		if max > 0 {
			c.backoffMax = max
		}
	}
}

// Client is a connection to ovsdb-server with a replica of the tables Weir
// uses. Its methods are safe for concurrent use.
type Client struct {
	log      klog.Logger
	endpoint string
	cfg      config
	db       client.Client
	backoff  *reconnectBackOff
	changes  *broadcaster

	closeOnce sync.Once
	// closeCtx is canceled by Close; closed is its Done channel.
	closeCtx  context.Context
	closeFn   context.CancelFunc
	closed    <-chan struct{}
	watchDone chan struct{} // closed when watchConnection returns
}

// Connect connects to the ovsdb-server at endpoint ("unix:/path/db.sock" or
// "tcp:host:port"), starts a monitor on the tables the Client uses and
// returns once the replica is populated. While ovsdb-server refuses
// connections (for example because it is still starting) Connect keeps
// trying until ctx ends. logger receives the Client's logs (changes at V(2),
// waits at V(3), transactions at V(4)) and libovsdb's, whose levels are
// raised by 2 (its errors are always logged).
//
// After Connect the Client reconnects by itself, forever, whenever the
// connection drops; Close stops it.
func Connect(ctx context.Context, endpoint string, logger klog.Logger, opts ...Option) (*Client, error) {
	cfg := config{
		ofportTimeout:  defaultOFPortTimeout,
		connectTimeout: defaultConnectTimeout,
		backoffInitial: defaultBackoffInitial,
		backoffMax:     defaultBackoffMax,
	}
	for _, o := range opts {
		o(&cfg)
	}
	endpoint, err := normalizeEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	dbModel, err := model.NewClientDBModel(databaseName, map[string]model.Model{
		vswitchd.OpenvSwitchTable: &vswitchd.OpenvSwitch{},
		vswitchd.BridgeTable:      &vswitchd.Bridge{},
		vswitchd.PortTable:        &vswitchd.Port{},
		vswitchd.InterfaceTable:   &vswitchd.Interface{},
		vswitchd.FlowTableTable:   &vswitchd.FlowTable{},
		vswitchd.QoSTable:         &vswitchd.QoS{},
	})
	if err != nil {
		return nil, fmt.Errorf("ovsdb: build database model: %w", err)
	}

	logger = logger.WithValues("endpoint", endpoint)
	// Without WithLogger, libovsdb sets the process-wide stdr verbosity to
	// 5 and logs every update to stderr. Its levels are shifted by 2: it
	// logs routine events at V(2) (e.g. "removing immutable field" on every
	// update of a Bridge, Port or Interface row). Its errors are logged at
	// any verbosity.
	libLogger := logger.WithName("libovsdb").V(2)
	bo := newReconnectBackOff(cfg.backoffInitial, cfg.backoffMax)
	db, err := client.NewOVSDBClient(dbModel,
		client.WithEndpoint(endpoint),
		client.WithLogger(&libLogger),
		client.WithReconnect(cfg.connectTimeout, bo),
	)
	if err != nil {
		return nil, fmt.Errorf("ovsdb: create client for %s: %w", endpoint, err)
	}
	closeCtx, closeFn := context.WithCancel(context.Background())
	c := &Client{
		log:       logger.WithName("ovsdb"),
		endpoint:  endpoint,
		cfg:       cfg,
		db:        db,
		backoff:   bo,
		changes:   newBroadcaster(),
		closeCtx:  closeCtx,
		closeFn:   closeFn,
		closed:    closeCtx.Done(),
		watchDone: make(chan struct{}),
	}
	if err := c.connect(ctx); err != nil {
		close(c.watchDone)
		c.Close()
		return nil, err
	}
	go c.watchConnection()
	return c, nil
}

// connect makes the initial connection, retrying while the server is not
// listening, and starts the monitor.
func (c *Client) connect(ctx context.Context) error {
	began := time.Now()
	retry := newReconnectBackOff(c.cfg.backoffInitial, c.cfg.backoffMax)
	for attempt := 1; ; attempt++ {
		attemptCtx, cancel := context.WithTimeout(ctx, c.cfg.connectTimeout)
		err := c.db.Connect(attemptCtx)
		cancel()
		if err == nil {
			break
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			// Not a dial failure (wrong database, schema mismatch, ...):
			// retrying will not help.
			return fmt.Errorf("ovsdb: connect to %s: %w", c.endpoint, err)
		}
		c.log.V(2).Info("ovsdb-server not reachable yet, retrying", "attempt", attempt, "err", err)
		t := time.NewTimer(retry.next())
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("ovsdb: connect to %s: %w (last error: %w)", c.endpoint, ctx.Err(), err)
		case <-t.C:
		}
	}

	// Wake waiters on every change of the replica. The cache outlives
	// reconnections, so this is registered once.
	c.db.Cache().AddEventHandler(&changeHandler{b: c.changes})

	ovs := &vswitchd.OpenvSwitch{}
	br := &vswitchd.Bridge{}
	port := &vswitchd.Port{}
	iface := &vswitchd.Interface{}
	ft := &vswitchd.FlowTable{}
	qos := &vswitchd.QoS{}
	// Only the columns the Client reads: in particular not
	// Interface.statistics, which ovs-vswitchd rewrites every few seconds
	// for every interface.
	monitor := c.db.NewMonitor(
		client.WithTable(ovs, &ovs.Bridges, &ovs.OVSVersion, &ovs.DbVersion, &ovs.NextCfg, &ovs.CurCfg),
		client.WithTable(br, &br.Name, &br.Ports, &br.DatapathType, &br.FailMode, &br.Protocols,
			&br.OtherConfig, &br.ExternalIDs, &br.FlowTables),
		client.WithTable(port, &port.Name, &port.Interfaces, &port.ExternalIDs, &port.QOS),
		client.WithTable(iface, &iface.Name, &iface.Type, &iface.Ofport, &iface.OfportRequest,
			&iface.Error, &iface.MAC, &iface.MACInUse, &iface.MTURequest, &iface.Options),
		client.WithTable(ft, &ft.Name),
		client.WithTable(qos, &qos.Type, &qos.ExternalIDs),
	)
	if _, err := c.db.Monitor(ctx, monitor); err != nil {
		return fmt.Errorf("ovsdb: monitor %s: %w", c.endpoint, err)
	}
	c.log.V(2).Info("Connected to ovsdb-server", "duration", time.Since(began))
	return nil
}

// Close disconnects from ovsdb-server and stops reconnecting. Calls in
// progress and later calls return ErrClosed (or an error wrapping it). Close
// is idempotent.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.closeFn()
		// Order matters. libovsdb v0.7.0's Close only takes effect while
		// a connection exists; during an outage its reconnect loop keeps
		// running and would connect again later. So: make the loop exit
		// at its next backoff, close (effective if connected, including
		// an attempt that succeeds concurrently), then point libovsdb at
		// an endpoint that cannot be reached so a pending attempt fails
		// and reaches that backoff.
		c.backoff.stop()
		c.db.Close()
		c.db.UpdateEndpoints([]string{closedEndpoint})
		<-c.watchDone
		c.log.V(2).Info("Closed OVSDB client")
	})
}

// Connected reports whether the Client is connected to ovsdb-server with its
// replica up to date (false while it reconnects, and after Close).
func (c *Client) Connected() bool {
	return !c.isClosed() && c.connected()
}

// watchConnection logs losing and regaining the connection (libovsdb
// reconnects by itself and logs that only at high verbosity) until Close.
func (c *Client) watchConnection() {
	defer close(c.watchDone)
	t := time.NewTicker(connectionWatchInterval)
	defer t.Stop()
	up := true
	var lost time.Time
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
		}
		now := c.connected()
		switch {
		case up && !now:
			lost = time.Now()
			c.log.Info("Lost connection to ovsdb-server, reconnecting")
		case !up && now:
			c.log.Info("Reconnected to ovsdb-server", "downtime", time.Since(lost).Round(time.Millisecond))
		}
		up = now
	}
}

// Sync waits until the replica the Client reads from reflects every
// transaction ovsdb-server committed before the call, including those of
// other clients (ovs-vsctl, ovs-vswitchd). Calls read the replica, which
// trails other writers by the time their update notification takes to
// arrive; call Sync first when a change made through another channel must
// be seen. The Client's own transactions need no Sync: ovsdb-server sends
// the update notifications of a transaction before its reply.
func (c *Client) Sync(ctx context.Context) error {
	return c.retry(ctx, "sync", func() error {
		// Any reply on the session works: ovsdb-server flushes pending
		// update notifications before sending a reply, and libovsdb
		// applies them before delivering the reply.
		root, err := c.rootUUID(ctx)
		if err != nil {
			return err
		}
		op := libovsdb.Operation{
			Op:      libovsdb.OperationSelect,
			Table:   vswitchd.OpenvSwitchTable,
			Where:   []libovsdb.Condition{libovsdb.NewCondition("_uuid", libovsdb.ConditionEqual, libovsdb.UUID{GoUUID: root})},
			Columns: []string{"_uuid"},
		}
		_, err = c.transact(ctx, "sync", []libovsdb.Operation{op})
		return err
	})
}

// WaitApplied waits until ovs-vswitchd has applied every change committed
// to the database before the call (ovs-vsctl's wait: it increments
// Open_vSwitch.next_cfg and waits for ovs-vswitchd to copy it to cur_cfg).
// The port and bridge calls already wait for what they need (the ofport);
// WaitApplied is for the rest, e.g. until a deleted port is really detached.
// While ovs-vswitchd is not running it waits until ctx ends.
func (c *Client) WaitApplied(ctx context.Context) error {
	var next int
	err := c.retry(ctx, "wait for ovs-vswitchd", func() error {
		root, err := c.rootUUID(ctx)
		if err != nil {
			return err
		}
		row := &vswitchd.OpenvSwitch{UUID: root}
		ops, err := c.db.Where(row).Mutate(row, model.Mutation{
			Field: &row.NextCfg, Mutator: libovsdb.MutateOperationAdd, Value: 1,
		})
		if err != nil {
			return fmt.Errorf("ovsdb: wait for ovs-vswitchd: %w", err)
		}
		if _, err := c.transact(ctx, "increment next_cfg", ops); err != nil {
			return err
		}
		// Our update notification arrived before the reply.
		if err := c.db.Get(ctx, row); err != nil {
			return fmt.Errorf("ovsdb: wait for ovs-vswitchd: read Open_vSwitch: %w", err)
		}
		next = row.NextCfg
		return nil
	})
	if err != nil {
		return err
	}
	err = c.waitFor(ctx, func() (bool, error) {
		var rows []vswitchd.OpenvSwitch
		if err := c.db.List(ctx, &rows); err != nil {
			return false, fmt.Errorf("ovsdb: wait for ovs-vswitchd: read Open_vSwitch: %w", err)
		}
		return len(rows) == 1 && rows[0].CurCfg >= next, nil
	})
	if err != nil {
		return fmt.Errorf("ovsdb: wait for ovs-vswitchd to apply next_cfg %d: %w", next, err)
	}
	return nil
}

// SchemaVersion returns the version of the Open_vSwitch schema served by
// ovsdb-server, e.g. "8.3.1".
func (c *Client) SchemaVersion() string {
	return c.db.Schema().Version
}

// ready returns nil once the Client is connected with its replica in place,
// waiting for a reconnection if needed. It fails with ErrClosed after Close
// and with ErrNotConnected when ctx ends first.
func (c *Client) ready(ctx context.Context) error {
	if c.isClosed() {
		return ErrClosed
	}
	if c.connected() {
		return nil
	}
	c.log.V(3).Info("Waiting for ovsdb-server reconnection")
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotConnected, ctx.Err())
		case <-t.C:
			if c.connected() {
				return nil
			}
		}
	}
}

// connected reports whether libovsdb has a live RPC connection with its
// monitors re-established. libovsdb v0.7.0 leaves Connected() true while it
// reconnects after the server went away, but clears the current endpoint.
func (c *Client) connected() bool {
	return c.db.Connected() && c.db.CurrentEndpoint() != ""
}

func (c *Client) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// transact runs ops as one transaction and returns the results, or an error
// saying what the transaction was for.
func (c *Client) transact(ctx context.Context, what string, ops []libovsdb.Operation) (_ []libovsdb.OperationResult, err error) {
	if len(ops) == 0 {
		return nil, nil
	}
	began := time.Now()
	if o := c.cfg.observer; o != nil {
		defer func() { o.OVSDBTransaction(time.Since(began), err) }()
	}
	// libovsdb blocks a transaction issued during an outage until the
	// connection is back, whatever Close does; end it at Close.
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(c.closeCtx, func() { cancel(ErrClosed) })
	defer stop()
	res, err := c.db.Transact(tctx, ops...)
	if err != nil {
		switch {
		case errors.Is(context.Cause(tctx), ErrClosed):
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		case errors.Is(err, client.ErrNotConnected):
			err = ErrNotConnected
		case connectionLost(err):
			// The server went away under a transaction libovsdb had not
			// yet seen as disconnected (seen in a CI run of
			// TestReconnect: "write: broken pipe"). Retrying is safe: the
			// retry rebuilds the change from the replica, which
			// reflects it if the server committed it before going.
			err = fmt.Errorf("%w: %w", ErrNotConnected, err)
		}
		return nil, fmt.Errorf("ovsdb: %s: %w", what, err)
	}
	if err := transactionError(res, ops); err != nil {
		return nil, fmt.Errorf("ovsdb: %s: transaction failed: %w", what, err)
	}
	c.log.V(4).Info("Transaction committed", "what", what, "operations", len(ops), "duration", time.Since(began))
	return res, nil
}

// retry runs one logical change, rebuilding and retrying it when it failed
// for a reason a fresh look at the replica can fix (see isRetriable).
func (c *Client) retry(ctx context.Context, what string, fn func() error) error {
	var err error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		if err = c.ready(ctx); err != nil {
			return fmt.Errorf("ovsdb: %s: %w", what, err)
		}
		err = fn()
		if err == nil || !isRetriable(err) || ctx.Err() != nil || c.isClosed() {
			break
		}
		c.log.V(2).Info("Retrying OVSDB change", "what", what, "attempt", attempt, "err", err)
		// Let the update that caused the failure reach the replica, or
		// libovsdb notice that the connection is gone.
		delay := time.Duration(attempt) * retryDelay
		if errors.Is(err, ErrNotConnected) {
			delay = time.Duration(attempt) * c.cfg.backoffInitial
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		case <-c.closed:
			t.Stop()
		}
	}
	if err != nil && c.isClosed() && !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// rollback runs undo with a context that survives the cancellation of ctx
// (the caller's context may be what made the call fail), bounded in time.
func (c *Client) rollback(ctx context.Context, what string, undo func(context.Context) error) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultRollbackTimeout)
	defer cancel()
	if err := c.retry(rctx, "roll back "+what, func() error { return undo(rctx) }); err != nil {
		c.log.Error(err, "Rollback failed", "what", what)
		return fmt.Errorf("ovsdb: roll back %s: %w", what, err)
	}
	c.log.V(2).Info("Rolled back", "what", what)
	return nil
}

// waitFor calls check until it reports done or an error, re-checking after
// every change of the replica, until ctx ends.
func (c *Client) waitFor(ctx context.Context, check func() (bool, error)) error {
	t := time.NewTicker(recheckInterval)
	defer t.Stop()
	for {
		changed := c.changes.wait()
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-changed:
		case <-t.C:
		case <-c.closed:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// rootUUID returns the UUID of the single Open_vSwitch row.
func (c *Client) rootUUID(ctx context.Context) (string, error) {
	var rows []vswitchd.OpenvSwitch
	if err := c.db.List(ctx, &rows); err != nil {
		return "", fmt.Errorf("ovsdb: list Open_vSwitch: %w", err)
	}
	if len(rows) != 1 {
		return "", fmt.Errorf("ovsdb: database has %d Open_vSwitch rows, want 1 (was it initialized with ovs-vsctl init?)", len(rows))
	}
	return rows[0].UUID, nil
}

// OVSVersion returns Open_vSwitch.ovs_version, e.g. "3.1.0". That column is
// written by OVS's startup script (ovs-ctl), not by ovs-vswitchd, so it is
// empty where the daemons are started directly (as in Weir's tests); then
// OVSVersion returns ErrVersionUnknown. SchemaVersion is always available.
func (c *Client) OVSVersion(ctx context.Context) (string, error) {
	if err := c.ready(ctx); err != nil {
		return "", fmt.Errorf("ovsdb: get OVS version: %w", err)
	}
	var rows []vswitchd.OpenvSwitch
	if err := c.db.List(ctx, &rows); err != nil {
		return "", fmt.Errorf("ovsdb: get OVS version: %w", err)
	}
	if len(rows) != 1 || rows[0].OVSVersion == nil || *rows[0].OVSVersion == "" {
		return "", fmt.Errorf("%w (schema version %s)", ErrVersionUnknown, c.SchemaVersion())
	}
	return *rows[0].OVSVersion, nil
}

// normalizeEndpoint validates endpoint and makes a unix socket path
// absolute: libovsdb v0.7.0 silently replaces a relative unix path with the
// system's default socket.
func normalizeEndpoint(endpoint string) (string, error) {
	scheme, rest, ok := strings.Cut(endpoint, ":")
	if !ok || rest == "" {
		return "", fmt.Errorf("%w: endpoint %q: want unix:/path or tcp:host:port", ErrInvalidArgument, endpoint)
	}
	switch scheme {
	case client.UNIX:
		abs, err := filepath.Abs(rest)
		if err != nil {
			return "", fmt.Errorf("%w: endpoint %q: %w", ErrInvalidArgument, endpoint, err)
		}
		return client.UNIX + ":" + abs, nil
	case client.TCP:
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return "", fmt.Errorf("%w: endpoint %q: %w", ErrInvalidArgument, endpoint, err)
		}
		return endpoint, nil
	default:
		return "", fmt.Errorf("%w: endpoint %q: scheme %q not supported, want unix or tcp", ErrInvalidArgument, endpoint, scheme)
	}
}

// reconnectBackOff is the backoff.BackOff handed to libovsdb's reconnect
// loop: exponential, never giving up. libovsdb v0.7.0 panics when the
// backoff stops (ExponentialBackOff stops after 15 minutes by default, which
// would crash the agent after a long ovsdb-server outage), and its reconnect
// goroutine has no other exit than a successful connection; after stop, the
// next NextBackOff call ends that goroutine instead (runtime.Goexit runs its
// deferred calls; libovsdb holds no lock there).
type reconnectBackOff struct {
	mu      sync.Mutex
	exp     *backoff.ExponentialBackOff
	stopped bool
}

func newReconnectBackOff(initial, max time.Duration) *reconnectBackOff {
	exp := backoff.NewExponentialBackOff()
	exp.InitialInterval = initial
	exp.MaxInterval = max
	exp.MaxElapsedTime = 0 // never stop
	exp.Reset()
	return &reconnectBackOff{exp: exp}
}

// NextBackOff implements backoff.BackOff. It is called only from libovsdb's
// reconnect goroutine, after a failed attempt.
func (b *reconnectBackOff) NextBackOff() time.Duration {
	b.mu.Lock()
	stopped := b.stopped
	d := b.exp.NextBackOff()
	b.mu.Unlock()
	if stopped {
		runtime.Goexit()
	}
	return d
}

// Reset implements backoff.BackOff.
func (b *reconnectBackOff) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.exp.Reset()
}

// next returns the next delay without the Goexit behaviour, for loops of
// this package.
func (b *reconnectBackOff) next() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.exp.NextBackOff()
}

func (b *reconnectBackOff) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
}

// broadcaster wakes every waiter when the replica changes.
type broadcaster struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcaster() *broadcaster { return &broadcaster{ch: make(chan struct{})} }

// wait returns a channel closed at the next notify.
func (b *broadcaster) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcaster) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}

// changeHandler is a libovsdb cache event handler that notifies a
// broadcaster of every add, update and delete.
type changeHandler struct{ b *broadcaster }

func (h *changeHandler) OnAdd(string, model.Model)                 { h.b.notify() }
func (h *changeHandler) OnUpdate(string, model.Model, model.Model) { h.b.notify() }
func (h *changeHandler) OnDelete(string, model.Model)              { h.b.notify() }

// WaitInitialized waits until the database has its Open_vSwitch row. A
// freshly created database has none until `ovs-vsctl init` or ovs-vswitchd
// writes it, which an agent started alongside a new OVS container can
// easily get ahead of.
func (c *Client) WaitInitialized(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := c.rootUUID(ctx); err == nil {
			return nil
		} else if ctx.Err() != nil {
			return fmt.Errorf("waiting for the Open_vSwitch row: %w (last: %v)", ctx.Err(), err)
		}
		select {
		case <-t.C:
		case <-c.closed:
			return ErrClosed
		case <-ctx.Done():
		}
	}
}
