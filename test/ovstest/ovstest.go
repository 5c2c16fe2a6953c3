package ovstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/testroot"
)

const (
	// schemaPath is the OVSDB schema shipped by Debian's openvswitch-common.
	schemaPath = "/usr/share/openvswitch/vswitch.ovsschema"

	// defaultCommandTimeout bounds every external command the harness runs.
	defaultCommandTimeout = 30 * time.Second
	// readyTimeout bounds waiting for a daemon, socket or ofport to appear.
	readyTimeout = 20 * time.Second
	// pollInterval is the delay between readiness checks.
	pollInterval = 20 * time.Millisecond

	// maxSocketPath is the longest unix socket path: sun_path holds 108
	// bytes including the terminating NUL.
	maxSocketPath = 107
	// maxIfName is the longest Linux interface name (IFNAMSIZ-1); bridge
	// names are interface names too.
	maxIfName = 15
	// logTailLines is how many lines of each OVS log are shown after a
	// failure.
	logTailLines = 40

	netnsPrefix   = "weir-t-"
	hostIfPrefix  = "v-"
	vswitchdComm  = "ovs-vswitchd"
	ovsdbComm     = "ovsdb-server"
	nftHostDropTb = "weir_hostdrop"
)

// validName matches bridge and pod names: they become interface and netns
// names, and sysctl keys, so they are kept to a safe alphabet.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// requiredTools lists the commands the harness runs. Install them with
// hack/install-deps.sh.
func requiredTools() []string {
	return []string{
		"ip", "nft", "ethtool", "ping", "sysctl",
		"ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl",
	}
}

// Option configures an Instance at Start.
type Option func(*config)

type config struct {
	commandTimeout time.Duration
	otherConfig    [][2]string
	podIPv6        bool
}

// WithCommandTimeout sets how long any single external command (ovs-vsctl,
// ovs-ofctl, ip, ...) may run before it is killed. The default is 30s; a
// non-positive d keeps it.
func WithCommandTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.commandTimeout = d
		}
	}
}

// WithOtherConfig sets Open_vSwitch other_config:key=value before
// ovs-vswitchd first starts, e.g. ("userspace-tso-enable", "true").
func WithOtherConfig(key, value string) Option {
	return func(c *config) { c.otherConfig = append(c.otherConfig, [2]string{key, value}) }
}

// WithPodIPv6 keeps IPv6 enabled in pods made by AddPod. By default it is
// disabled there (and on the host-side veth) so that router and neighbour
// solicitations do not add stray packets to flow counters.
func WithPodIPv6() Option {
	return func(c *config) { c.podIPv6 = true }
}

// Instance is a private OVS: one ovsdb-server and one ovs-vswitchd running in
// network namespace NetNS, with their database, sockets, pidfiles and logs in
// Dir. Its methods are safe for concurrent use.
type Instance struct {
	// Dir holds conf.db, db.sock, ovs-vswitchd.ctl, <bridge>.mgmt, the
	// pidfiles and the logs. It is removed at cleanup.
	Dir string
	// NetNS is the name of the network namespace the daemons run in (the
	// simulated node). Bridge internal ports and pod host-side veths live
	// there.
	NetNS string

	cfg config

	mu         sync.Mutex
	namespaces []string // created by the Instance, deleted at cleanup
}

// Start starts a private OVS instance and registers its teardown with
// t.Cleanup. It skips the test when not running as root and fails it when a
// required tool is missing or the daemons do not come up; on any failure the
// tail of the OVS logs is logged.
func Start(t testing.TB, opts ...Option) *Instance {
	t.Helper()
	testroot.Require(t, "ovstest creates network namespaces and runs ovsdb-server and ovs-vswitchd")
	began := time.Now()
	in, err := launch(opts, func(in *Instance) {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("ovstest: OVS logs of %s (dir %s):\n%s", in.NetNS, in.Dir, in.logTail())
			}
			if err := in.Close(); err != nil {
				t.Errorf("ovstest: %v", err)
			}
		})
	})
	if err != nil {
		t.Fatalf("ovstest: %v", err)
	}
	t.Logf("ovstest: OVS up in %s (netns %s, dir %s)",
		time.Since(began).Round(time.Millisecond), in.NetNS, in.Dir)
	return in
}

// Launch starts a private OVS instance outside of a test (for the demo
// command). The caller must call Close, which also runs if Launch fails
// half-way.
func Launch(opts ...Option) (*Instance, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("ovstest: needs root to create network namespaces and run OVS")
	}
	var created *Instance
	in, err := launch(opts, func(in *Instance) { created = in })
	if err != nil {
		if created != nil {
			if cerr := created.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
		return nil, err
	}
	return in, nil
}

// launch creates the instance; registered is called as soon as there is
// something to clean up.
func launch(opts []Option, registered func(*Instance)) (*Instance, error) {
	cfg := config{commandTimeout: defaultCommandTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if missing := missingTools(); len(missing) > 0 {
		return nil, fmt.Errorf("missing tools %s: install them with hack/install-deps.sh (make deps)",
			strings.Join(missing, ", "))
	}
	dir, err := makeDir()
	if err != nil {
		return nil, err
	}
	suffix, err := randomHex(4)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	in := &Instance{Dir: dir, NetNS: netnsPrefix + suffix, cfg: cfg}
	registered(in)
	if err := in.start(); err != nil {
		return nil, fmt.Errorf("start OVS in netns %s: %w", in.NetNS, err)
	}
	return in, nil
}

// start creates the namespace and database and starts both daemons.
func (in *Instance) start() error {
	if err := in.addNetNS(in.NetNS); err != nil {
		return err
	}
	if _, err := in.run("ovsdb-tool", "create", in.path("conf.db"), schemaPath); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	if err := in.startDaemon(ovsdbComm, in.path("conf.db"),
		"--remote=punix:"+in.path("db.sock"),
		"--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
	); err != nil {
		return err
	}
	if _, err := in.Vsctl("--no-wait", "init"); err != nil {
		return fmt.Errorf("initialize database: %w", err)
	}
	for _, kv := range in.cfg.otherConfig {
		if _, err := in.Vsctl("--no-wait", "set", "Open_vSwitch", ".",
			fmt.Sprintf("other_config:%s=%q", kv[0], kv[1])); err != nil {
			return fmt.Errorf("set other_config: %w", err)
		}
	}
	return in.startVswitchd()
}

// startDaemon runs an OVS daemon detached inside the instance's namespace,
// with its pidfile, unixctl socket and log file in Dir. OVS's --detach makes
// the command return only once the daemon has initialized.
func (in *Instance) startDaemon(comm string, args ...string) error {
	full := append([]string{"netns", "exec", in.NetNS, comm}, args...)
	full = append(full,
		"--pidfile="+in.path(comm+".pid"),
		"--unixctl="+in.path(comm+".ctl"),
		"--log-file="+in.path(comm+".log"),
		"--detach", "--no-chdir", "-vconsole:err",
	)
	if _, err := in.runEnv(in.ovsEnv(), "ip", full...); err != nil {
		return fmt.Errorf("start %s: %w", comm, err)
	}
	return nil
}

// startVswitchd starts ovs-vswitchd and waits until it answers on its
// unixctl socket and serves the OpenFlow socket of every bridge.
func (in *Instance) startVswitchd() error {
	if err := in.startDaemon(vswitchdComm, "unix:"+in.path("db.sock")); err != nil {
		return err
	}
	err := poll(readyTimeout, pollInterval, "ovs-vswitchd to answer", func() (bool, error) {
		_, err := in.Appctl("version")
		return err == nil, err
	})
	if err != nil {
		return err
	}
	out, err := in.Vsctl("list-br")
	if err != nil {
		return fmt.Errorf("list bridges: %w", err)
	}
	for _, br := range strings.Fields(out) {
		if err := in.waitMgmtSocket(br); err != nil {
			return err
		}
	}
	return nil
}

// waitMgmtSocket waits until the OpenFlow management socket of bridge
// exists. ovs-vswitchd creates it while applying the configuration and
// removes it on exit; StopVswitchd removes it after a SIGKILL too, so an
// existing socket is a live one. (Probing by connecting would make
// ovs-vswitchd log a dropped connection.)
func (in *Instance) waitMgmtSocket(bridge string) error {
	path := in.MgmtSocket(bridge)
	return poll(readyTimeout, pollInterval, "OpenFlow socket "+path, func() (bool, error) {
		fi, err := os.Stat(path)
		if err != nil {
			return false, err
		}
		return fi.Mode().Type() == os.ModeSocket, nil
	})
}

// stopVswitchd stops ovs-vswitchd and removes the sockets it leaves behind
// when it cannot exit cleanly.
func (in *Instance) stopVswitchd() error {
	if err := stopDaemon(in.path(vswitchdComm+".pid"), vswitchdComm); err != nil {
		return err
	}
	stale := []string{in.path(vswitchdComm + ".ctl")}
	for _, pattern := range []string{"*.mgmt", "*.snoop"} {
		m, err := filepath.Glob(in.path(pattern))
		if err != nil {
			return fmt.Errorf("remove stale sockets: %w", err)
		}
		stale = append(stale, m...)
	}
	for _, f := range stale {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale socket: %w", err)
		}
	}
	return nil
}

// Close stops the daemons, deletes the namespaces and removes Dir,
// reporting every teardown error. It is safe to call more than once.
func (in *Instance) Close() error {
	var errs []error
	errs = append(errs,
		in.stopVswitchd(),
		stopDaemon(in.path(ovsdbComm+".pid"), ovsdbComm),
	)
	in.mu.Lock()
	namespaces := in.namespaces
	in.namespaces = nil
	in.mu.Unlock()
	// Pods first, the node namespace (created first) last.
	for i := len(namespaces) - 1; i >= 0; i-- {
		errs = append(errs, in.deleteNetNS(namespaces[i]))
	}
	if err := os.RemoveAll(in.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", in.Dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup of %s: %w", in.NetNS, err)
	}
	return nil
}

// addNetNS creates network namespace name, records it for cleanup and brings
// its loopback up.
func (in *Instance) addNetNS(name string) error {
	if err := netnstest.Create(name); err != nil {
		return fmt.Errorf("create netns: %w", err)
	}
	in.mu.Lock()
	in.namespaces = append(in.namespaces, name)
	in.mu.Unlock()
	return nil
}

// deleteNetNS kills any process left in namespace name (which would keep it
// and its interfaces alive) and deletes it. A missing namespace is not an
// error.
func (in *Instance) deleteNetNS(name string) error { return netnstest.Delete(name) }

// DBSocket returns the OVSDB endpoint, "unix:<Dir>/db.sock".
func (in *Instance) DBSocket() string { return "unix:" + in.path("db.sock") }

// MgmtSocket returns the path (without "unix:") of bridge's OpenFlow
// management socket, <Dir>/<bridge>.mgmt.
func (in *Instance) MgmtSocket(bridge string) string { return in.path(bridge + ".mgmt") }

// AddBridge creates bridge name with the userspace datapath, fail_mode=secure
// and OpenFlow 1.0 and 1.3-1.5 enabled, and waits until its OpenFlow socket
// accepts connections.
func (in *Instance) AddBridge(t testing.TB, name string) {
	t.Helper()
	if err := checkName(name, maxIfName); err != nil {
		t.Fatalf("ovstest: add bridge: %v", err)
	}
	if _, err := in.Vsctl("add-br", name, "--", "set", "Bridge", name,
		"datapath_type=netdev", "fail_mode=secure",
		"protocols=OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15",
	); err != nil {
		t.Fatalf("ovstest: add bridge %s: %v", name, err)
	}
	if err := in.waitMgmtSocket(name); err != nil {
		t.Fatalf("ovstest: add bridge %s: %v", name, err)
	}
}

// Vsctl runs ovs-vsctl against the instance's database and returns its
// combined output. Modifying commands wait for ovs-vswitchd to apply them;
// pass "--no-wait" first while ovs-vswitchd is stopped.
func (in *Instance) Vsctl(args ...string) (string, error) {
	secs := int(in.cfg.commandTimeout.Seconds())
	if secs < 1 {
		secs = 1
	}
	full := append([]string{"--db=" + in.DBSocket(), "--timeout=" + strconv.Itoa(secs)}, args...)
	// Let ovs-vsctl's own timeout ("timeout expired") fire before the kill.
	return run(command{name: "ovs-vsctl", args: full, env: in.ovsEnv(), timeout: time.Duration(secs)*time.Second + 2*time.Second})
}

// Ofctl runs ovs-ofctl with OVS_RUNDIR=Dir, so a bridge name as target
// resolves to its management socket, and returns its combined output.
func (in *Instance) Ofctl(args ...string) (string, error) {
	return in.runEnv(in.ovsEnv(), "ovs-ofctl", args...)
}

// Appctl runs ovs-appctl against the instance's ovs-vswitchd and returns its
// combined output.
func (in *Instance) Appctl(args ...string) (string, error) {
	full := append([]string{"-t", in.path(vswitchdComm + ".ctl")}, args...)
	return in.runEnv(in.ovsEnv(), "ovs-appctl", full...)
}

// MustVsctl is Vsctl that fails the test on error.
func (in *Instance) MustVsctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := in.Vsctl(args...)
	if err != nil {
		t.Fatalf("ovstest: %v", err)
	}
	return out
}

// MustOfctl is Ofctl that fails the test on error.
func (in *Instance) MustOfctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := in.Ofctl(args...)
	if err != nil {
		t.Fatalf("ovstest: %v", err)
	}
	return out
}

// MustAppctl is Appctl that fails the test on error.
func (in *Instance) MustAppctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := in.Appctl(args...)
	if err != nil {
		t.Fatalf("ovstest: %v", err)
	}
	return out
}

// Exec runs name with args inside network namespace ns ("ip netns exec") and
// returns the combined output. An empty ns means the instance's NetNS.
func (in *Instance) Exec(ns string, name string, args ...string) (string, error) {
	if ns == "" {
		ns = in.NetNS
	}
	return in.run("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// VswitchdPID returns the PID of the running ovs-vswitchd, or 0 if it is not
// running.
func (in *Instance) VswitchdPID() int {
	pid, err := readPIDFile(in.path(vswitchdComm + ".pid"))
	if err != nil || pid == 0 || !processRunning(pid, vswitchdComm) {
		return 0
	}
	return pid
}

// StopVswitchd stops ovs-vswitchd (SIGTERM, SIGKILL after 5s), waits for it
// to exit and removes its pidfile and any socket it left. ovsdb-server keeps running. Installed
// flows are lost, as with a real restart.
func (in *Instance) StopVswitchd(t testing.TB) {
	t.Helper()
	if err := in.stopVswitchd(); err != nil {
		t.Fatalf("ovstest: %v", err)
	}
}

// StartVswitchd starts ovs-vswitchd after StopVswitchd and waits until it
// answers and serves the OpenFlow socket of every bridge in the database.
func (in *Instance) StartVswitchd(t testing.TB) {
	t.Helper()
	if pid := in.VswitchdPID(); pid != 0 {
		t.Fatalf("ovstest: start ovs-vswitchd: already running as pid %d", pid)
	}
	if err := in.startVswitchd(); err != nil {
		t.Fatalf("ovstest: restart ovs-vswitchd: %v", err)
	}
}

// path returns name inside Dir.
func (in *Instance) path(name string) string { return filepath.Join(in.Dir, name) }

// ovsEnv points OVS programs at Dir for every file they look up by default.
func (in *Instance) ovsEnv() []string {
	return []string{
		"OVS_RUNDIR=" + in.Dir,
		"OVS_DBDIR=" + in.Dir,
		"OVS_LOGDIR=" + in.Dir,
		"OVS_SYSCONFDIR=" + in.Dir,
	}
}

// run runs a command with the instance's timeout.
func (in *Instance) run(name string, args ...string) (string, error) {
	return in.runEnv(nil, name, args...)
}

// runEnv runs a command with extra environment and the instance's timeout.
func (in *Instance) runEnv(env []string, name string, args ...string) (string, error) {
	return run(command{name: name, args: args, env: env, timeout: in.cfg.commandTimeout})
}

// logTail returns the last lines of the OVS daemons' logs.
func (in *Instance) logTail() string {
	var b strings.Builder
	for _, comm := range []string{ovsdbComm, vswitchdComm} {
		path := in.path(comm + ".log")
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(&b, "--- %s: %v\n", path, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > logTailLines {
			lines = lines[len(lines)-logTailLines:]
		}
		fmt.Fprintf(&b, "--- last %d lines of %s:\n%s\n", len(lines), path, strings.Join(lines, "\n"))
	}
	return b.String()
}

// missingTools returns the required tools that are not in PATH.
func missingTools() []string {
	var missing []string
	for _, tool := range requiredTools() {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	return missing
}

// makeDir creates the instance directory. It stays under the system temp
// directory unless that is too long for the unix sockets placed in it (the
// longest being <bridge>.mgmt with a 15-character bridge name), in which case
// it uses /tmp.
func makeDir() (string, error) {
	const pattern = "weir-ovs-"
	// MkdirTemp appends up to 10 random digits.
	longest := func(base string) int {
		return len(base) + 1 + len(pattern) + 10 + 1 + maxIfName + len(".mgmt")
	}
	base := os.TempDir()
	if longest(base) > maxSocketPath {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, pattern)
	if err != nil {
		return "", fmt.Errorf("create instance directory: %w", err)
	}
	return dir, nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random name: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// checkName validates a bridge or pod name against validName and maxLen.
func checkName(name string, maxLen int) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("invalid name %q: want letters, digits, '_' and '-', not starting with '_' or '-'", name)
	}
	if len(name) > maxLen {
		return fmt.Errorf("name %q is longer than %d characters", name, maxLen)
	}
	return nil
}

// DumpFlows returns the flows of bridge as `ovs-ofctl -O OpenFlow15
// --no-stats --no-names dump-flows` prints them, one per element, sorted;
// args are extra dump-flows arguments such as "table=3".
func (in *Instance) DumpFlows(t testing.TB, bridge string, args ...string) []string {
	t.Helper()
	out := in.MustOfctl(t, append([]string{"-O", "OpenFlow15", "--no-stats", "--no-names", "dump-flows", bridge}, args...)...)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return lines
}
