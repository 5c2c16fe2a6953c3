package cniv1

import (
	"fmt"
	"strings"
)

// MaxIfNameLen is the longest interface name the Linux kernel accepts
// (IFNAMSIZ less the terminating NUL).
const MaxIfNameLen = 15

// ValidateIfName checks CNI_IFNAME against the kernel's rules for interface
// names (dev_valid_name: not empty, at most 15 bytes, not "." or "..", no
// '/', ':' or whitespace) and also rejects '%': the kernel treats a name
// with '%' as a template ("eth%d") and picks the first free name, so the
// interface would not get the name the runtime asked for. Both the CNI
// binary (before it forwards anything) and the agent apply it; a failure
// is CodeInvalidEnvironmentVariables, and the message names CNI_IFNAME.
func ValidateIfName(name string) error {
	var why string
	switch {
	case name == "":
		why = "is missing"
	case len(name) > MaxIfNameLen:
		why = fmt.Sprintf("is %d bytes long, the kernel allows at most %d", len(name), MaxIfNameLen)
	case name == "." || name == "..":
		why = "is not a valid interface name"
	case strings.ContainsAny(name, "/:% \t\n\r\v\f\x00"):
		why = "must not contain '/', ':', '%' or whitespace"
	default:
		return nil
	}
	if name == "" {
		return fmt.Errorf("CNI_IFNAME %s", why)
	}
	return fmt.Errorf("CNI_IFNAME %q %s", name, why)
}

// ValidateContainerID checks CNI_CONTAINERID against the spec: not empty,
// an alphanumeric character followed by alphanumerics, '_', '.' or '-'.
// (The spec sets no length limit; Weir allows 256 bytes, far above the 64
// hex digits containerd and CRI-O use, so that a key stays a sane size.)
func ValidateContainerID(id string) error {
	if id == "" {
		return fmt.Errorf("CNI_CONTAINERID is missing")
	}
	if len(id) > 256 {
		return fmt.Errorf("CNI_CONTAINERID is %d bytes long, Weir allows at most 256", len(id))
	}
	for i, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '_' && r != '.' && r != '-') {
			return fmt.Errorf("CNI_CONTAINERID %q is not a valid container ID (an alphanumeric character, then alphanumerics, '_', '.' or '-')", id)
		}
	}
	return nil
}
