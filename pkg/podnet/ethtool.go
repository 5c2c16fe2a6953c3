package podnet

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Transmit checksum offload is switched with the kernel's legacy ethtool
// ioctls ETHTOOL_GTXCSUM/ETHTOOL_STXCSUM rather than a library: it is two
// small, stable ioctls, and the kernel maps them to exactly the feature set
// `ethtool -K dev tx off` changes (NETIF_F_CSUM_MASK | NETIF_F_SCTP_CRC |
// NETIF_F_FCOE_CRC), whereas the feature-name interface of
// github.com/safchain/ethtool would need the list of individual
// "tx-checksum-*" names. The ioctls act on the network namespace of the
// socket they are issued on, so callers run them inside ns.Do.

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with the ifr_data member of the union, padded to
// the size of struct ifreq.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

func ethtoolValueIoctl(ifName string, v *ethtoolValue) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening socket for ethtool ioctl: %w", err)
	}
	defer unix.Close(fd)
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], ifName)
	ifr.data = unsafe.Pointer(v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(v)
	if errno != 0 {
		return errno
	}
	return nil
}

// txChecksum reports whether transmit checksum offload is on for ifName in
// the calling thread's network namespace.
func txChecksum(ifName string) (bool, error) {
	v := ethtoolValue{cmd: unix.ETHTOOL_GTXCSUM}
	if err := ethtoolValueIoctl(ifName, &v); err != nil {
		return false, fmt.Errorf("ETHTOOL_GTXCSUM on %s: %w", ifName, err)
	}
	return v.data != 0, nil
}

// setTxChecksum switches transmit checksum offload of ifName in the calling
// thread's network namespace, and verifies the result.
func setTxChecksum(ifName string, on bool) error {
	v := ethtoolValue{cmd: unix.ETHTOOL_STXCSUM}
	if on {
		v.data = 1
	}
	if err := ethtoolValueIoctl(ifName, &v); err != nil {
		return fmt.Errorf("ETHTOOL_STXCSUM on %s: %w", ifName, err)
	}
	got, err := txChecksum(ifName)
	if err != nil {
		return err
	}
	if got != on {
		return fmt.Errorf("tx checksum offload of %s is still %s after setting it", ifName, onOff(got))
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
