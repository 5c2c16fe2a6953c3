// Package ovstest runs private Open vSwitch instances for integration tests.
//
// Each Instance is one ovsdb-server plus one ovs-vswitchd using the userspace
// datapath (datapath_type=netdev), both running inside a network namespace of
// their own, with every socket, database, pid and log file under a private
// directory. Instances never touch the system OVS (if any), so tests in
// different packages can run in parallel.
//
// Typical use:
//
//	ovs := ovstest.Start(t)
//	ovs.AddBridge(t, "br-int")
//	a := ovs.AddPod(t, "br-int", "a", "10.0.0.2/24", "02:00:0a:00:00:02", 3)
//	b := ovs.AddPod(t, "br-int", "b", "10.0.0.3/24", "02:00:0a:00:00:03", 4)
//	ovs.MustOfctl(t, "add-flow", "br-int", "actions=NORMAL")
//	if err := a.Ping(b.IP, 3); err != nil {
//		t.Fatal(err)
//	}
//
// Everything an Instance creates (daemons, namespaces, veths, files) is removed
// by a t.Cleanup registered in Start, also when the test fails. Start skips the
// test when not running as root; missing tools are a test failure that names
// hack/install-deps.sh.
//
// OpenFlow clients reach a bridge through the unix socket MgmtSocket(bridge);
// OVSDB clients through DBSocket().
package ovstest
