package openflow

import (
	"encoding/binary"
	"fmt"

	"antrea.io/libOpenflow/openflow15"
)

// oxmHeaders holds each field's OXM class and field number, from
// libOpenflow's field table (read-only after initialisation).
var oxmHeaders = func() [numFields][2]uint16 {
	var h [numFields][2]uint16
	for f := Field(0); f < numFields; f++ {
		mf, err := openflow15.FindFieldHeaderByName(fieldTable[f].oxm, false)
		if err != nil {
			panic(fmt.Sprintf("openflow: libOpenflow lacks %s: %v", fieldTable[f].oxm, err))
		}
		h[f] = [2]uint16{mf.Class, uint16(mf.Field)}
	}
	return h
}()

// flowModFixedLen is ofp_flow_mod up to its match (header included).
const flowModFixedLen = 48

// appendFlowMod encodes the flow as an OpenFlow 1.5 flow_mod (xid 0)
// directly into buf. It produces exactly the bytes libOpenflow's
// FlowMod.MarshalBinary does (TestEncodeMatchesLibOpenflow checks), without
// building the object graph: installing many flows is dominated by this.
func (f *Flow) appendFlowMod(buf []byte, command uint8) ([]byte, error) {
	start := len(buf)
	buf = append(buf, make([]byte, flowModFixedLen)...)
	h := buf[start:]
	h[0], h[1] = openflow15.VERSION, openflow15.Type_FlowMod
	binary.BigEndian.PutUint64(h[8:], f.Cookie)
	// cookie_mask stays 0: strict commands match on priority and match.
	h[24], h[25] = f.Table, command
	binary.BigEndian.PutUint16(h[26:], f.IdleTimeout)
	binary.BigEndian.PutUint16(h[28:], f.HardTimeout)
	binary.BigEndian.PutUint16(h[30:], f.Priority)
	binary.BigEndian.PutUint32(h[32:], 0xffffffff) // buffer_id: none
	binary.BigEndian.PutUint32(h[36:], openflow15.P_ANY)
	binary.BigEndian.PutUint32(h[40:], openflow15.OFPG_ANY)

	// ofp_match: type OXM, length (without padding), TLVs, pad to 8.
	mStart := len(buf)
	buf = append(buf, 0, openflow15.MatchType_OXM, 0, 0)
	for _, m := range f.matches {
		hdr := oxmHeaders[m.field]
		n := len(m.value) + len(m.mask)
		hasMask := byte(0)
		if m.mask != nil {
			hasMask = 1
		}
		buf = append(buf, byte(hdr[0]>>8), byte(hdr[0]), byte(hdr[1])<<1|hasMask, byte(n))
		buf = append(buf, m.value...)
		buf = append(buf, m.mask...)
	}
	binary.BigEndian.PutUint16(buf[mStart+2:], uint16(len(buf)-mStart))
	for (len(buf)-mStart)%8 != 0 {
		buf = append(buf, 0)
	}

	if command != openflow15.FC_DELETE && command != openflow15.FC_DELETE_STRICT {
		if len(f.actions) > 0 {
			iStart := len(buf)
			buf = append(buf, 0, openflow15.InstrType_APPLY_ACTIONS, 0, 0, 0, 0, 0, 0)
			for _, a := range f.actions {
				oa, err := a.encode()
				if err != nil {
					return nil, fmt.Errorf("encoding %s: %w", renderAction(a, nil), err)
				}
				data, err := oa.MarshalBinary()
				if err != nil {
					return nil, fmt.Errorf("encoding %s: %w", renderAction(a, nil), err)
				}
				buf = append(buf, data...)
			}
			binary.BigEndian.PutUint16(buf[iStart+2:], uint16(len(buf)-iStart))
		}
		if f.gotoTable >= 0 {
			buf = append(buf, 0, openflow15.InstrType_GOTO_TABLE, 0, 8, byte(f.gotoTable), 0, 0, 0)
		}
	}
	if len(buf)-start > 0xffff {
		return nil, fmt.Errorf("flow_mod of %d bytes exceeds OpenFlow's 64 KiB limit", len(buf)-start)
	}
	binary.BigEndian.PutUint16(buf[start+2:], uint16(len(buf)-start))
	return buf, nil
}
