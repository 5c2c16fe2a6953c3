package interfacestore

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/weirnet/weir/pkg/ovsdb"
)

// Keys of the external_ids record Weir writes on each pod port (besides
// ovsdb.KeyWeirType = ovsdb.WeirTypePod). The record is the durable copy of
// an Interface: a restarted agent rebuilds its Store from OVSDB alone.
const (
	// KeyRecordVersion holds the record's version (RecordVersion). Records
	// without it are version 1.
	KeyRecordVersion = "weir-record"
	// KeyContainerID is the CNI container (sandbox) ID.
	KeyContainerID = "container-id"
	// KeyIfName is the interface name inside the pod (CNI_IFNAME).
	KeyIfName = "ifname"
	// KeyNetNS is the path of the pod's network namespace.
	KeyNetNS = "netns"
	// KeyPodNamespace and KeyPodName identify the Kubernetes pod.
	KeyPodNamespace = "pod-namespace"
	KeyPodName      = "pod-name"
	// KeyPodUID holds the pod's UID (CNI_ARGS K8S_POD_UID, which containerd
	// and CRI-O pass); absent for runtimes that do not pass it.
	KeyPodUID = "pod-uid"
	// KeyNetwork holds the "name" of the network configuration the
	// interface was added for; absent in records of Weir before it
	// served several networks (Interface.Legacy).
	KeyNetwork = "cni-network"
	// KeyIP holds the pod's addresses, comma separated, IPv4 first.
	KeyIP = "ip"
	// KeyMAC is the MAC address of the pod-side interface.
	KeyMAC = "mac"
)

// RecordVersion is the version of the records ExternalIDs writes.
//
//   - 1 (no KeyRecordVersion): KeyIP holds one IPv4 address; KeyPodUID
//     and KeyNetwork may be missing.
//   - 2: KeyIP lists up to one address per family, IPv4 first.
//
// FromPort reads both. A record of a later version is refused rather than
// misread: the agent was downgraded, and the port is left alone for the
// newer agent to restore (see cniserver.Restore).
const RecordVersion = 2

// IsPodPort reports whether a port's external_ids mark it as a pod port.
func IsPodPort(ids map[string]string) bool { return ids[ovsdb.KeyWeirType] == ovsdb.WeirTypePod }

// ExternalIDs encodes i as the external_ids of its OVS port.
func ExternalIDs(i Interface) map[string]string {
	ips := make([]string, len(i.IPs))
	for n, a := range i.IPs {
		ips[n] = a.String()
	}
	ids := map[string]string{
		ovsdb.KeyWeirType: ovsdb.WeirTypePod,
		KeyRecordVersion:  strconv.Itoa(RecordVersion),
		KeyContainerID:    i.ContainerID,
		KeyIfName:         i.IfName,
		KeyNetNS:          i.NetNS,
		KeyIP:             strings.Join(ips, ","),
		KeyMAC:            i.MAC.String(),
	}
	for k, v := range map[string]string{KeyPodName: i.PodName, KeyPodNamespace: i.PodNamespace,
		KeyPodUID: i.PodUID, KeyNetwork: i.Network} {
		if v != "" {
			ids[k] = v
		}
	}
	return ids
}

// ErrNewerRecord is returned, wrapped, by FromPort for a record of a
// version later than RecordVersion.
var ErrNewerRecord = fmt.Errorf("interfacestore: record written by a newer Weir")

// FromPort decodes the Interface recorded on OVS port name with OpenFlow
// port ofport (0 or less: none yet) and external_ids ids.
func FromPort(name string, ofport int, ids map[string]string) (Interface, error) {
	if !IsPodPort(ids) {
		return Interface{}, fmt.Errorf("interfacestore: port %s is not a pod port (%s=%q)", name, ovsdb.KeyWeirType, ids[ovsdb.KeyWeirType])
	}
	version := 1
	if v, ok := ids[KeyRecordVersion]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			return Interface{}, fmt.Errorf("interfacestore: port %s has an invalid %s %q", name, KeyRecordVersion, v)
		}
		if n > RecordVersion {
			return Interface{}, fmt.Errorf("%w: port %s has record version %d, this agent reads up to %d", ErrNewerRecord, name, n, RecordVersion)
		}
		version = n
	}
	i := Interface{ContainerID: ids[KeyContainerID], IfName: ids[KeyIfName], NetNS: ids[KeyNetNS],
		PodNamespace: ids[KeyPodNamespace], PodName: ids[KeyPodName], PodUID: ids[KeyPodUID],
		Network: ids[KeyNetwork], PortName: name}
	if ofport > 0 {
		i.OFPort = uint32(ofport)
	}
	if i.ContainerID == "" || i.IfName == "" || i.NetNS == "" {
		return Interface{}, fmt.Errorf("interfacestore: port %s lacks %s, %s or %s in external_ids", name, KeyContainerID, KeyIfName, KeyNetNS)
	}
	ips, err := parseIPs(ids[KeyIP], version)
	if err != nil {
		return Interface{}, fmt.Errorf("interfacestore: port %s: %w", name, err)
	}
	i.IPs = ips
	mac, err := net.ParseMAC(ids[KeyMAC])
	if err != nil {
		return Interface{}, fmt.Errorf("interfacestore: port %s has no valid %s in external_ids: %w", name, KeyMAC, err)
	}
	i.MAC = mac
	return i, nil
}

// parseIPs reads KeyIP: one IPv4 address in version 1, up to one address
// per family in version 2, IPv4 first.
func parseIPs(s string, version int) ([]netip.Addr, error) {
	fields := strings.Split(s, ",")
	if s == "" || version == 1 && len(fields) != 1 || len(fields) > 2 {
		return nil, fmt.Errorf("invalid %s %q in external_ids (record version %d)", KeyIP, s, version)
	}
	out := make([]netip.Addr, 0, len(fields))
	for _, f := range fields {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil || a.Zone() != "" || a.Is4In6() || version == 1 && !a.Is4() {
			return nil, fmt.Errorf("invalid %s %q in external_ids (record version %d)", KeyIP, s, version)
		}
		if len(out) == 1 && (out[0].Is4() == a.Is4() || !out[0].Is4()) {
			return nil, fmt.Errorf("invalid %s %q in external_ids: want at most one address per family, IPv4 first", KeyIP, s)
		}
		out = append(out, a)
	}
	return out, nil
}
