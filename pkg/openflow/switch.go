package openflow

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"antrea.io/libOpenflow/openflow15"
	"antrea.io/ofnet/ofctrl"
	"k8s.io/klog/v2"
)

// Config configures a Switch connection.
type Config struct {
	// MgmtSocket is the path of the bridge's OpenFlow management socket,
	// <ovs rundir>/<bridge>.mgmt.
	MgmtSocket string
	// RetryInterval is the pause between reconnect attempts (default 200ms).
	RetryInterval time.Duration
	// RequestTimeout bounds one request/reply exchange when the caller's
	// context has no earlier deadline (default 60s).
	RequestTimeout time.Duration
	// Logger receives the connection's log lines (default klog's).
	Logger klog.Logger
	// Observer, if set, is told about every request and reconnect (for
	// metrics, see pkg/metrics).
	Observer Observer
}

// Observer receives what a Switch does. Its methods are called on the
// request's goroutine, so they must be cheap and safe for concurrent use.
type Observer interface {
	// OpenFlowRequest reports one request: op is "bundle" (Apply and the
	// flow cache), "flow_mods" (ApplyUnbundled), "flow_stats" (DumpFlows),
	// "group_stats" (DumpGroups) or "barrier"; messages is the number of
	// flow_mods and group_mods it carried; err is what the caller got.
	OpenFlowRequest(op string, messages int, d time.Duration, err error)
	// OpenFlowReconnect reports a handshake after a lost connection.
	OpenFlowReconnect()
}

// observe reports a request that started at start to the Observer.
func (s *Switch) observe(op string, messages int, start time.Time, err error) {
	if s.cfg.Observer != nil {
		s.cfg.Observer.OpenFlowRequest(op, messages, time.Since(start), err)
	}
}

// State is the connection state of a Switch.
type State int32

// Connection states.
const (
	StateConnecting State = iota
	StateReady
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateReady:
		return "ready"
	}
	return "closed"
}

// Switch is one OpenFlow connection to one bridge. ofnet's controller owns
// the session (dial, hello, features, echo, reconnect); it dials an
// in-process relay that passes its traffic through to the bridge's
// management socket. The relay is where this package sends its own
// requests and reads their replies in order, matched by xid — which is what
// gives callers a real barrier and OVS's errors, both of which ofnet keeps
// to itself. Switch is safe for concurrent use.
type Switch struct {
	cfg   Config
	log   klog.Logger
	ctrl  *ofctrl.Controller
	relay *relay

	state      atomic.Int32
	generation atomic.Uint64 // completed handshakes
	nextXid    atomic.Uint32

	mu    sync.Mutex
	ready chan struct{} // closed while StateReady
	// connected is true between ofnet's connect and disconnect callbacks;
	// disconnected receives a value at each disconnect.
	connected    bool
	disconnected chan struct{}
	pending      map[*request]struct{}

	cache       *FlowCache
	reconnected chan uint64 // generation after each replayed reconnect
	// mutate orders the flow cache's changes with replays: Install, Sync
	// and SyncOwners hold it shared (they run concurrently among
	// themselves), a replay and Verify hold it exclusively, so the cache a
	// replay sends cannot change under it (cache.go).
	mutate sync.RWMutex
	// replayDone is closed once the current generation's flows have been
	// replayed (at once for the first connection); guarded by mu.
	replayDone chan struct{}
	hooks      testHooks

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// Open starts connecting to the bridge and returns at once; use WaitReady
// to wait for the first handshake. The Switch reconnects forever (until
// Close), replaying the flow cache after each reconnect.
func Open(cfg Config) (*Switch, error) {
	if cfg.MgmtSocket == "" {
		return nil, errors.New("openflow: Config.MgmtSocket is required")
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 200 * time.Millisecond
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 60 * time.Second
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = klog.Background()
	}
	s := &Switch{
		cfg:          cfg,
		log:          cfg.Logger.WithValues("bridgeSocket", cfg.MgmtSocket),
		ready:        make(chan struct{}),
		pending:      make(map[*request]struct{}),
		cache:        NewFlowCache(),
		reconnected:  make(chan uint64, 1),
		disconnected: make(chan struct{}, 1),
		replayDone:   make(chan struct{}),
		done:         make(chan struct{}),
	}
	close(s.replayDone) // nothing to replay before the first connection
	// Our xids live in the upper half so they never meet libOpenflow's
	// process-wide counter, which ofnet's own messages use.
	var seed [4]byte
	_, _ = rand.Read(seed[:])
	s.nextXid.Store(binary.BigEndian.Uint32(seed[:]) & 0x3fffffff)

	r, err := newRelay(s)
	if err != nil {
		return nil, err
	}
	s.relay = r
	s.ctrl = ofctrl.NewController(&ofnetApp{s})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Connect returns only when the controller is deleted: with
		// MaxRetry 0 ofnet retries forever instead of giving up after 10.
		if err := s.ctrl.Connect(r.addr); err != nil && !s.isClosed() {
			s.log.Error(err, "ofnet controller stopped")
		}
	}()
	return s, nil
}

func (s *Switch) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// State returns the current connection state.
func (s *Switch) State() State { return State(s.state.Load()) }

// Generation counts completed handshakes (1 after the first connect).
func (s *Switch) Generation() uint64 { return s.generation.Load() }

// WaitReady blocks until the switch is connected (or ctx ends).
func (s *Switch) WaitReady(ctx context.Context) error {
	for {
		s.mu.Lock()
		ready := s.ready
		s.mu.Unlock()
		if s.State() == StateReady {
			return nil
		}
		select {
		case <-ready:
		case <-s.done:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("waiting for OpenFlow connection to %s: %w", s.cfg.MgmtSocket, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Reconnected delivers the connection generation each time the switch came
// back after a disconnect and the flow cache was replayed successfully (a
// failed replay is retried; a generation whose replay a newer reconnect
// overtook is never delivered). The layer above uses it to re-check state
// it keeps outside the cache. Only the latest generation is kept if nobody
// reads.
func (s *Switch) Reconnected() <-chan uint64 { return s.reconnected }

// Cache returns the switch's flow cache.
func (s *Switch) Cache() *FlowCache { return s.cache }

// Close stops the connection and the reconnect loop.
//
// Close returns only after ofnet has dropped the session: ofnet keeps
// switches in a process-wide table keyed by datapath ID, and a new Switch
// for the same bridge must not find this one's entry there.
func (s *Switch) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.done)
		s.state.Store(int32(StateClosed))
		wasConnected := s.connected
		s.mu.Unlock()
		s.relay.close()
		if wasConnected {
			select {
			case <-s.disconnected:
			case <-time.After(5 * time.Second):
				s.log.Info("ofnet did not report the disconnect within 5s")
			}
		}
		s.failPending(ErrClosed)
		s.ctrl.Delete()
		s.wg.Wait()
	})
}

// ofnetApp adapts ofnet's callbacks to the Switch.
type ofnetApp struct{ s *Switch }

func (a *ofnetApp) SwitchConnected(sw *ofctrl.OFSwitch) {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosed() {
		return // a handshake that raced with Close
	}
	select { // forget a disconnect reported before this connection
	case <-s.disconnected:
	default:
	}
	s.connected = true
	gen := s.generation.Add(1)
	s.log.Info("OpenFlow connection ready", "dpid", sw.DPID().String(), "generation", gen)
	if s.State() != StateReady {
		s.state.Store(int32(StateReady))
		close(s.ready)
	}
	if gen > 1 {
		if s.cfg.Observer != nil {
			s.cfg.Observer.OpenFlowReconnect()
		}
		done := make(chan struct{})
		s.replayDone = done
		s.wg.Add(1) // under mu, so never after Close started waiting
		go func() {
			defer s.wg.Done()
			s.replay(gen, done)
		}()
	}
}

func (a *ofnetApp) SwitchDisconnected(sw *ofctrl.OFSwitch) {
	s := a.s
	s.mu.Lock()
	s.connected = false
	if s.State() == StateReady {
		s.state.Store(int32(StateConnecting))
		s.ready = make(chan struct{})
	}
	s.mu.Unlock()
	select {
	case s.disconnected <- struct{}{}:
	default:
	}
	s.failPending(ErrNotConnected)
	if !s.isClosed() {
		s.log.Info("OpenFlow connection lost, reconnecting", "dpid", sw.DPID().String())
	}
}

func (a *ofnetApp) PacketRcvd(*ofctrl.OFSwitch, *ofctrl.PacketIn)               {}
func (a *ofnetApp) MultipartReply(*ofctrl.OFSwitch, *openflow15.MultipartReply) {}
func (a *ofnetApp) FlowGraphEnabledOnSwitch() bool                              { return false }
func (a *ofnetApp) TLVMapEnabledOnSwitch() bool                                 { return false }
func (a *ofnetApp) PortStatusRcvd(*openflow15.PortStatus)                       {}

// MaxRetry 0 tells ofnet never to give up dialing.
func (a *ofnetApp) MaxRetry() int { return 0 }

// RetryInterval is ofnet's pause before each dial.
func (a *ofnetApp) RetryInterval() time.Duration { return a.s.cfg.RetryInterval }

// Replay retry pauses: a failed replay is tried again after
// replayRetryMin, doubling up to replayRetryMax, until it succeeds, the
// Switch is closed or a newer connection's replay takes over.
const (
	replayRetryMin = 100 * time.Millisecond
	replayRetryMax = 5 * time.Second
)

// replay reinstalls every cached flow after the reconnect that started
// generation gen, retrying until it succeeds; then it closes done and
// delivers gen on Reconnected. It gives up silently when a newer
// generation exists (that generation's replay does the work) or the Switch
// is closed.
func (s *Switch) replay(gen uint64, done chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	wait := replayRetryMin
	for attempt := 1; ; attempt++ {
		res, err := s.replayOnce(ctx, gen, attempt, done)
		switch {
		case err == nil && res.superseded:
			s.log.V(2).Info("Replay superseded by a newer connection", "generation", gen, "attempt", attempt)
			return
		case err == nil:
			s.log.Info("Replayed flows after reconnect", "groups", res.groups, "flows", res.added,
				"removedInDoubt", res.removed, "groupsRemovedInDoubt", res.removedGroups,
				"generation", gen, "attempts", attempt, "duration", time.Since(start))
			return
		}
		if s.isClosed() {
			return
		}
		s.log.Error(err, "Replaying flows after reconnect failed, will retry", "generation", gen,
			"attempt", attempt, "retryIn", wait)
		select {
		case <-s.done:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, replayRetryMax)
	}
}

// replayResult is what one replay attempt did.
type replayResult struct {
	replayCounts
	superseded bool // a newer generation exists; nothing was delivered
}

// replayOnce is one replay attempt, exclusive with every cache change.
// On success it closes done and delivers gen on Reconnected, still under
// the lock, so a newer generation's signal always comes after this one.
func (s *Switch) replayOnce(ctx context.Context, gen uint64, attempt int, done chan struct{}) (replayResult, error) {
	s.mutate.Lock()
	defer s.mutate.Unlock()
	if s.generation.Load() != gen {
		return replayResult{superseded: true}, nil
	}
	if h := s.hooks.replayAttempt.Load(); h != nil {
		if err := (*h)(gen, attempt); err != nil {
			return replayResult{}, err
		}
	}
	counts, err := s.replayCache(ctx)
	if err != nil {
		return replayResult{}, fmt.Errorf("replaying flow cache (generation %d, attempt %d): %w", gen, attempt, err)
	}
	if s.generation.Load() != gen {
		// Some batches may have gone to the newer connection; its replay
		// sends everything again.
		return replayResult{superseded: true}, nil
	}
	close(done)
	select {
	case <-s.reconnected:
	default:
	}
	s.reconnected <- gen
	return replayResult{replayCounts: counts}, nil
}

// testHooks let tests inject faults (export_test.go); unset in production.
type testHooks struct {
	// replayAttempt runs before each replay attempt, under the replay
	// lock; an error fails the attempt.
	replayAttempt atomic.Pointer[func(gen uint64, attempt int) error]
	// commitAnswered runs after OVS answered a bundle commit; an error is
	// returned as if the answer had been lost (outcome unknown).
	commitAnswered atomic.Pointer[func() error]
}

// --- requests and replies ---

// request collects the replies to one batch of messages. Its messages carry
// the consecutive xids firstXid..firstXid+n-1, the last being the barrier
// whose reply completes the request.
type request struct {
	firstXid uint32
	n        uint32
	flows    []*Flow  // per message, to name the culprit of an error
	ops      []string // per message, what it was
	// groups names the group of each group_mod message (by offset from
	// firstXid), for errors; nil without group_mods.
	groups   map[uint32]*Group
	errs     []*OVSError
	replies  [][]byte // raw multipart replies
	done     chan struct{}
	finalErr error
	finished bool // done is closed; guarded by Switch.mu
}

// finishLocked completes the request; s.mu must be held.
func (r *request) finishLocked(err error) {
	if r.finished {
		return
	}
	r.finished, r.finalErr = true, err
	close(r.done)
}

func (r *request) owns(xid uint32) bool { return xid-r.firstXid < r.n }

// sender buffers one request's messages and writes them to the switch,
// in chunks of flushSize for very large requests.
type sender struct {
	s   *Switch
	req *request
	buf []byte
	// sent counts messages given to add (the next one's offset from firstXid).
	sent uint32
}

// flushSize bounds the bytes buffered before a write. One large write is
// cheaper for ovs-vswitchd than a stream of small ones: measured with
// 100,000 flows, 256 KiB chunks cost it ~1,040 ms of CPU, one write ~650-800
// ms (BenchmarkFlowInstall). 64 MiB holds ~300,000 flow_mods.
const flushSize = 64 << 20

// newSender reserves n+1 consecutive xids (n messages and the barrier) and
// registers the request.
func (s *Switch) newSender(n int) (*sender, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	if s.State() != StateReady {
		return nil, ErrNotConnected
	}
	count := uint32(n + 1)
	var first uint32
	for {
		old := s.nextXid.Load()
		first = old + 1
		if first+count > 0x7fffffff { // our half is used up: start again
			first = 1
		}
		if s.nextXid.CompareAndSwap(old, first+count-1) {
			break
		}
	}
	req := &request{
		firstXid: 0x80000000 | first,
		n:        count,
		flows:    make([]*Flow, count),
		ops:      make([]string, count),
		done:     make(chan struct{}),
	}
	s.mu.Lock()
	s.pending[req] = struct{}{}
	s.mu.Unlock()
	// Room for n typical flow_mods, capped at one chunk.
	size := min(flushSize+4096, 1024+n*192)
	return &sender{s: s, req: req, buf: make([]byte, 0, size)}, nil
}

// add appends one message, encoded by appendMsg (xid left 0), wrapped in a
// bundle-add when bundleID is not 0.
func (sn *sender) add(op string, flow *Flow, bundleID uint32, appendMsg func([]byte) ([]byte, error)) error {
	if sn.sent >= sn.req.n-1 {
		return fmt.Errorf("openflow: internal error: more messages than reserved")
	}
	xid := sn.req.firstXid + sn.sent
	sn.req.flows[sn.sent], sn.req.ops[sn.sent] = flow, op
	sn.sent++
	start := len(sn.buf)
	var err error
	if bundleID != 0 {
		sn.buf = append(sn.buf, openflow15.VERSION, openflow15.Type_BundleAddMessage, 0, 0, 0, 0, 0, 0,
			0, 0, 0, 0, 0, 0, 0, 0)
		inner := len(sn.buf)
		if sn.buf, err = appendMsg(sn.buf); err != nil {
			return err
		}
		if len(sn.buf)-start > 0xffff {
			return fmt.Errorf("%s: bundled message of %d bytes exceeds OpenFlow's 64 KiB limit", op, len(sn.buf)-start)
		}
		binary.BigEndian.PutUint16(sn.buf[start+2:], uint16(len(sn.buf)-start))
		binary.BigEndian.PutUint32(sn.buf[start+8:], bundleID)
		binary.BigEndian.PutUint16(sn.buf[start+14:], bundleFlags)
		// The inner message gets the same xid: OVS reports commit-time
		// errors with the inner message's xid.
		binary.BigEndian.PutUint32(sn.buf[inner+4:], xid)
	} else if sn.buf, err = appendMsg(sn.buf); err != nil {
		return err
	}
	binary.BigEndian.PutUint32(sn.buf[start+4:], xid)
	if len(sn.buf) >= flushSize {
		return sn.flush()
	}
	return nil
}

// nameGroup makes g the culprit of the next message's errors (nil: none).
func (sn *sender) nameGroup(g *Group) {
	if g == nil {
		return
	}
	if sn.req.groups == nil {
		sn.req.groups = make(map[uint32]*Group)
	}
	sn.req.groups[sn.sent] = g
}

func (sn *sender) flush() error {
	if len(sn.buf) == 0 {
		return nil
	}
	if err := sn.s.relay.writeToSwitch(sn.buf); err != nil {
		return fmt.Errorf("sending to %s: %w", sn.s.cfg.MgmtSocket, err)
	}
	sn.buf = sn.buf[:0]
	return nil
}

// abort unregisters the request after a failure to send.
func (sn *sender) abort() { sn.s.forget(sn.req) }

// finish sends the barrier and waits for its reply; OVS handles a
// connection's messages in order, so by then every error or reply to the
// request's messages has arrived.
func (sn *sender) finish(ctx context.Context) (*request, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, sn.s.cfg.RequestTimeout)
		defer cancel()
	}
	// Shrink the reservation to what was used: the barrier follows the last
	// message sent.
	barrier := sn.req.firstXid + sn.sent
	sn.s.mu.Lock()
	sn.req.n = sn.sent + 1
	sn.s.mu.Unlock()
	sn.buf = append(sn.buf, openflow15.VERSION, openflow15.Type_BarrierRequest, 0, 8, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(sn.buf[len(sn.buf)-4:], barrier)
	if err := sn.flush(); err != nil {
		sn.abort()
		return nil, err
	}
	select {
	case <-sn.req.done:
		sn.s.mu.Lock()
		err := sn.req.finalErr
		sn.s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return sn.req, nil
	case <-ctx.Done():
		sn.abort()
		return nil, fmt.Errorf("waiting for ovs-vswitchd reply: %w", ctx.Err())
	}
}

// appendRaw returns an appendMsg function for already encoded bytes.
func appendRaw(data []byte) func([]byte) ([]byte, error) {
	return func(buf []byte) ([]byte, error) { return append(buf, data...), nil }
}

// roundTrip sends already encoded messages (not bundled) and a barrier.
func (s *Switch) roundTrip(ctx context.Context, op string, msgs ...[]byte) (*request, error) {
	sn, err := s.newSender(len(msgs))
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := sn.add(op, nil, 0, appendRaw(m)); err != nil {
			sn.abort()
			return nil, err
		}
	}
	return sn.finish(ctx)
}

func (s *Switch) forget(req *request) {
	s.mu.Lock()
	delete(s.pending, req)
	s.mu.Unlock()
}

func (s *Switch) failPending(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range s.pending {
		r.finishLocked(err)
	}
	s.pending = make(map[*request]struct{})
}

// handleReply is called by the relay, in stream order, for each message
// from the switch. It returns true if the message answered one of our
// requests (and so is not passed on to ofnet).
func (s *Switch) handleReply(msg []byte) bool {
	xid := binary.BigEndian.Uint32(msg[4:8])
	if xid < 0x80000000 {
		return false // ofnet's
	}
	s.mu.Lock()
	var req *request
	for r := range s.pending {
		if r.owns(xid) {
			req = r
			break
		}
	}
	if req == nil {
		s.mu.Unlock()
		return false
	}
	i := xid - req.firstXid
	switch msg[1] {
	case openflow15.Type_Error:
		e := parseError(msg, req.flows[i], req.ops[i])
		e.Group = req.groups[i]
		req.errs = append(req.errs, e)
	case openflow15.Type_MultiPartReply:
		req.replies = append(req.replies, append([]byte(nil), msg...))
	case openflow15.Type_BarrierReply:
		if i == req.n-1 {
			delete(s.pending, req)
			req.finishLocked(nil)
		}
	}
	s.mu.Unlock()
	return true
}

func parseError(msg []byte, flow *Flow, op string) *OVSError {
	e := &OVSError{Flow: flow, Op: op}
	if len(msg) >= 12 {
		e.Type = binary.BigEndian.Uint16(msg[8:10])
		e.Code = binary.BigEndian.Uint16(msg[10:12])
	}
	if e.Type == ErrTypeExperimenter && len(msg) >= 16 {
		e.Experimenter = binary.BigEndian.Uint32(msg[12:16])
	}
	return e
}

// firstError returns the request's first OVS error, if any.
func (r *request) firstError() error {
	if len(r.errs) == 0 {
		return nil
	}
	return r.errs[0]
}

// Barrier returns once every message sent before it has been processed.
func (s *Switch) Barrier(ctx context.Context) error {
	start := time.Now()
	_, err := s.roundTrip(ctx, "barrier")
	s.observe("barrier", 0, start, err)
	return err
}

// --- relay ---

// relay passes ofnet's session through to the bridge and taps the replies.
type relay struct {
	s        *Switch
	addr     string
	listener *net.UnixListener

	mu      sync.Mutex
	sw      net.Conn // connection to ovs-vswitchd
	ctrl    net.Conn // ofnet's side
	writeMu sync.Mutex

	dialFailures atomic.Uint64
}

func newRelay(s *Switch) (*relay, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	// An abstract socket: no file to clean up; peers are checked by PID.
	addr := "@weir-openflow-" + hex.EncodeToString(id[:])
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("openflow relay listen: %w", err)
	}
	r := &relay{s: s, addr: addr, listener: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.acceptLoop()
	}()
	return r, nil
}

func (r *relay) acceptLoop() {
	for {
		c, err := r.listener.AcceptUnix()
		if err != nil {
			return // closed
		}
		if !samePID(c) {
			r.s.log.Info("Rejected OpenFlow relay connection from another process")
			c.Close()
			continue
		}
		sw, err := net.DialTimeout("unix", r.s.cfg.MgmtSocket, 5*time.Second)
		if err != nil {
			n := r.dialFailures.Add(1)
			r.s.log.V(2).Info("Dialing bridge management socket failed, will retry", "attempt", n, "err", err)
			c.Close() // ofnet sees the session fail and dials again
			continue
		}
		r.mu.Lock()
		if r.s.isClosed() {
			r.mu.Unlock()
			sw.Close()
			c.Close()
			return
		}
		r.sw, r.ctrl = sw, c
		r.mu.Unlock()
		r.s.wg.Add(2)
		go func() { defer r.s.wg.Done(); r.pumpToSwitch(c, sw) }()
		go func() { defer r.s.wg.Done(); r.pumpFromSwitch(sw, c) }()
	}
}

// samePID reports whether the peer of c is this process.
func samePID(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *syscall.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	return err == nil && cred != nil && int(cred.Pid) == os.Getpid()
}

// readMessage reads one OpenFlow message (header length framing).
func readMessage(r io.Reader, hdr []byte) ([]byte, error) {
	if _, err := io.ReadFull(r, hdr[:8]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	if n < 8 {
		return nil, fmt.Errorf("bad OpenFlow message length %d", n)
	}
	msg := make([]byte, n)
	copy(msg, hdr[:8])
	if _, err := io.ReadFull(r, msg[8:]); err != nil {
		return nil, err
	}
	return msg, nil
}

// pumpToSwitch forwards ofnet's messages whole, so they interleave with
// ours only at message boundaries.
func (r *relay) pumpToSwitch(ctrl, sw net.Conn) {
	defer r.drop(ctrl, sw)
	hdr := make([]byte, 8)
	for {
		msg, err := readMessage(ctrl, hdr)
		if err != nil {
			return
		}
		r.writeMu.Lock()
		_, err = sw.Write(msg)
		r.writeMu.Unlock()
		if err != nil {
			return
		}
	}
}

func (r *relay) pumpFromSwitch(sw, ctrl net.Conn) {
	defer r.drop(ctrl, sw)
	br := bufio.NewReaderSize(sw, 64<<10)
	hdr := make([]byte, 8)
	for {
		msg, err := readMessage(br, hdr)
		if err != nil {
			return
		}
		if r.s.handleReply(msg) {
			continue
		}
		if _, err := ctrl.Write(msg); err != nil {
			return
		}
	}
}

// drop tears down one relayed session; ofnet notices and reconnects.
func (r *relay) drop(ctrl, sw net.Conn) {
	ctrl.Close()
	sw.Close()
	r.mu.Lock()
	if r.sw == sw {
		r.sw, r.ctrl = nil, nil
	}
	r.mu.Unlock()
}

func (r *relay) writeToSwitch(b []byte) error {
	r.mu.Lock()
	sw := r.sw
	r.mu.Unlock()
	if sw == nil {
		return ErrNotConnected
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	_, err := sw.Write(b)
	return err
}

func (r *relay) close() {
	r.listener.Close()
	r.mu.Lock()
	sw, ctrl := r.sw, r.ctrl
	r.mu.Unlock()
	if sw != nil {
		sw.Close()
		ctrl.Close()
	}
}

// DialFailures counts failed dials of the management socket (the Switch
// keeps dialing while ovs-vswitchd is down).
func (s *Switch) DialFailures() uint64 { return s.relay.dialFailures.Load() }
