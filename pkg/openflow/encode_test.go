package openflow

import (
	"bytes"
	"testing"

	"antrea.io/libOpenflow/openflow15"
)

// TestEncodeMatchesLibOpenflow checks the direct encoder against
// libOpenflow's FlowMod marshalling for every catalog flow and command.
func TestEncodeMatchesLibOpenflow(t *testing.T) {
	for _, c := range catalog() {
		f, err := c.build.Done()
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []uint8{openflow15.FC_ADD, openflow15.FC_MODIFY_STRICT, openflow15.FC_DELETE_STRICT} {
			fm, err := f.FlowMod(cmd)
			if err != nil {
				t.Fatal(err)
			}
			fm.Header.Xid = 0
			want, err := fm.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.appendFlowMod(nil, cmd)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s command %d:\n got %x\nwant %x", c.name, cmd, got, want)
			}
		}
	}
}

// TestDeleteStrictFromCache checks that the DELETE_STRICT derived from a
// cached ADD equals a freshly encoded DELETE_STRICT.
func TestDeleteStrictFromCache(t *testing.T) {
	for _, c := range catalog() {
		f := c.build.MustDone()
		add, err := f.Encode()
		if err != nil {
			t.Fatal(err)
		}
		want, err := f.appendFlowMod(nil, openflow15.FC_DELETE_STRICT)
		if err != nil {
			t.Fatal(err)
		}
		if got := deleteStrictFrom(add); !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %x\nwant %x", c.name, got, want)
		}
	}
}
