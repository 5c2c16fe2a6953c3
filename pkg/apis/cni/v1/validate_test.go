package cniv1

import (
	"strings"
	"testing"
)

func TestValidateIfName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // "" is valid
	}{
		{"eth0", ""},
		{"net1", ""},
		{"a", ""},
		{"abcdefghijklmno", ""}, // 15 bytes
		{"", "CNI_IFNAME is missing"},
		{"abcdefghijklmnop", `CNI_IFNAME "abcdefghijklmnop" is 16 bytes long, the kernel allows at most 15`},
		{"eth%d", `CNI_IFNAME "eth%d" must not contain`},
		{"eth/0", "must not contain"},
		{"eth:0", "must not contain"},
		{"eth 0", "must not contain"},
		{"eth\t0", "must not contain"},
		{".", "is not a valid interface name"},
		{"..", "is not a valid interface name"},
	}
	for _, tt := range tests {
		err := ValidateIfName(tt.name)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ValidateIfName(%q) = %v, want nil", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ValidateIfName(%q) = %v, want an error with %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestValidateContainerID(t *testing.T) {
	tests := []struct {
		id      string
		wantErr string
	}{
		{"c1", ""},
		{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ""},
		{"ctr-ab_c.d", ""},
		{"", "CNI_CONTAINERID is missing"},
		{"-c1", "not a valid container ID"},
		{"c/1", "not a valid container ID"},
		{"c 1", "not a valid container ID"},
		{strings.Repeat("a", 257), "at most 256"},
	}
	for _, tt := range tests {
		err := ValidateContainerID(tt.id)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ValidateContainerID(%q) = %v, want nil", tt.id, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ValidateContainerID(%q) = %v, want an error with %q", tt.id, err, tt.wantErr)
		}
	}
}
