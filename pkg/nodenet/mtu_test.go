package nodenet

import "testing"

func TestPodMTU(t *testing.T) {
	for _, tc := range []struct {
		underlay int
		ipv6     bool
		want     int
	}{
		{1500, false, 1450},
		{9000, false, 8950},
		{1450, false, 1400},
		{1500, true, 1430},
		{9000, true, 8930},
		{1350, true, 1280}, // the IPv6 minimum link MTU for IPv6 pods
	} {
		if got := PodMTUFor(tc.underlay, tc.ipv6); got != tc.want {
			t.Errorf("PodMTUFor(%d, %v) = %d, want %d", tc.underlay, tc.ipv6, got, tc.want)
		}
		if !tc.ipv6 {
			if got := PodMTU(tc.underlay); got != tc.want {
				t.Errorf("PodMTU(%d) = %d, want %d", tc.underlay, got, tc.want)
			}
		}
	}
}
