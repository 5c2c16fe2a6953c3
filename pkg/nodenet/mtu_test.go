package nodenet

import "testing"

func TestPodMTU(t *testing.T) {
	for _, tc := range []struct{ underlay, want int }{
		{1500, 1450},
		{9000, 8950},
		{1450, 1400},
	} {
		if got := PodMTU(tc.underlay); got != tc.want {
			t.Errorf("PodMTU(%d) = %d, want %d", tc.underlay, got, tc.want)
		}
	}
}
