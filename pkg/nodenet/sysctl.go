package nodenet

import (
	"bytes"
	"fmt"
	"os"
)

// setSysctl writes value to the procfs file path (the sysctl name, e.g.
// net.ipv4.ip_forward, is for errors) in the calling thread's network
// namespace unless it already holds it, and reports whether it changed.
func setSysctl(path, name, value string) (changed bool, err error) {
	cur, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("nodenet: reading %s: %w", name, err)
	}
	if string(bytes.TrimSpace(cur)) == value {
		return false, nil
	}
	if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
		return false, fmt.Errorf("nodenet: setting %s=%s: %w", name, value, err)
	}
	return true, nil
}
