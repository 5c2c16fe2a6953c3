package openflow

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"antrea.io/libOpenflow/openflow15"
	"antrea.io/libOpenflow/util"
)

// FlowStats is one flow as read back from the switch, with its counters.
// Flow carries table, priority, cookie, timeouts and match; actions are not
// decoded, so render read-back flows with Renderer.Match.
type FlowStats struct {
	Flow     *Flow
	Packets  uint64
	Bytes    uint64
	Duration time.Duration
}

// FlowFilter selects flows to read back. The zero value selects all.
type FlowFilter struct {
	// Table restricts to one table when non-nil.
	Table *uint8
	// Cookie and CookieMask select flows whose cookie&mask == Cookie&mask.
	Cookie, CookieMask uint64
}

// fieldByOXM maps an encoded (class, field) to our Field, for decoding.
var fieldByOXM = func() map[[2]uint16]Field {
	m := make(map[[2]uint16]Field, numFields)
	for f := Field(0); f < numFields; f++ {
		h, err := openflow15.FindFieldHeaderByName(fieldTable[f].oxm, false)
		if err != nil {
			panic(fmt.Sprintf("openflow: libOpenflow lacks %s: %v", fieldTable[f].oxm, err))
		}
		m[[2]uint16{h.Class, uint16(h.Field)}] = f
	}
	// OVS may report a field under another of its names.
	aliases := map[string]Field{"OXM_OF_TUNNEL_ID": FieldTunID, "NXM_OF_IN_PORT": FieldInPort,
		"NXM_NX_ND_TARGET": FieldNDTarget, "NXM_NX_ND_SLL": FieldNDSll, "NXM_NX_ND_TLL": FieldNDTll}
	for name, f := range aliases {
		h, err := openflow15.FindFieldHeaderByName(name, false)
		if err != nil {
			panic(fmt.Sprintf("openflow: libOpenflow lacks %s: %v", name, err))
		}
		m[[2]uint16{h.Class, uint16(h.Field)}] = f
	}
	return m
}()

// DumpFlows reads flows and their counters from the switch (an OpenFlow
// flow-stats multipart request), sorted by table, then priority (highest
// first).
func (s *Switch) DumpFlows(ctx context.Context, filter FlowFilter) (_ []FlowStats, err error) {
	start := time.Now()
	defer func() { s.observe("flow_stats", 0, start, err) }()
	fsr := openflow15.NewFlowStatsRequest()
	fsr.TableId = openflow15.OFPTT_ALL
	if filter.Table != nil {
		fsr.TableId = *filter.Table
	}
	fsr.Cookie, fsr.CookieMask = filter.Cookie, filter.CookieMask
	mp := openflow15.NewMpRequest(openflow15.MultipartType_FlowDesc)
	mp.Body = []util.Message{fsr}
	data, err := mp.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encoding flow stats request: %w", err)
	}
	req, err := s.roundTrip(ctx, "flow stats request", data)
	if err != nil {
		return nil, err
	}
	if err := req.firstError(); err != nil {
		return nil, err
	}
	var out []FlowStats
	for _, raw := range req.replies {
		descs, err := decodeFlowDescs(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, descs...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Flow, out[j].Flow
		if a.Table != b.Table {
			return a.Table < b.Table
		}
		return a.Priority > b.Priority
	})
	return out, nil
}

// decodeFlowDescs parses an OFPMP_FLOW_DESC multipart reply. The wire
// format is parsed directly: libOpenflow v0.15.0 decodes some match fields
// (MAC addresses) to values it cannot re-encode, and the raw TLVs are all
// that is needed here.
func decodeFlowDescs(msg []byte) ([]FlowStats, error) {
	if len(msg) < 16 || msg[1] != openflow15.Type_MultiPartReply {
		return nil, fmt.Errorf("flow stats: not a multipart reply")
	}
	var out []FlowStats
	body := msg[16:]
	for len(body) > 0 {
		if len(body) < 24 {
			return nil, fmt.Errorf("flow stats: truncated flow_desc")
		}
		n := int(binary.BigEndian.Uint16(body[0:2]))
		if n < 24 || n > len(body) {
			return nil, fmt.Errorf("flow stats: bad flow_desc length %d", n)
		}
		st, err := decodeFlowDesc(body[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, st)
		body = body[n:]
	}
	return out, nil
}

func decodeFlowDesc(d []byte) (FlowStats, error) {
	f := &Flow{
		Table:       d[4],
		Priority:    binary.BigEndian.Uint16(d[6:8]),
		IdleTimeout: binary.BigEndian.Uint16(d[8:10]),
		HardTimeout: binary.BigEndian.Uint16(d[10:12]),
		Cookie:      binary.BigEndian.Uint64(d[16:24]),
		gotoTable:   -1,
	}
	rest := d[24:]
	if len(rest) < 4 {
		return FlowStats{}, fmt.Errorf("flow stats: truncated match")
	}
	matchLen := int(binary.BigEndian.Uint16(rest[2:4]))
	padded := (matchLen + 7) / 8 * 8
	if matchLen < 4 || padded > len(rest) {
		return FlowStats{}, fmt.Errorf("flow stats: bad match length %d", matchLen)
	}
	if err := decodeOXMs(rest[4:matchLen], f); err != nil {
		return FlowStats{}, err
	}
	sort.SliceStable(f.matches, func(i, j int) bool { return f.matches[i].field < f.matches[j].field })
	st := FlowStats{Flow: f}
	rest = rest[padded:]
	if len(rest) >= 4 {
		statsLen := int(binary.BigEndian.Uint16(rest[2:4]))
		if statsLen > len(rest) {
			return FlowStats{}, fmt.Errorf("flow stats: bad stats length %d", statsLen)
		}
		decodeOXS(rest[4:statsLen], &st)
	}
	return st, nil
}

// decodeOXMs parses OXM TLVs into f's matches.
func decodeOXMs(b []byte, f *Flow) error {
	for len(b) >= 4 {
		class := binary.BigEndian.Uint16(b[0:2])
		field := uint16(b[2] >> 1)
		hasMask := b[2]&1 == 1
		n := int(b[3])
		hdr := 4
		if class == openflow15.OXM_CLASS_EXPERIMENTER {
			hdr = 8
		}
		if len(b) < 4+n || n < hdr-4 {
			return fmt.Errorf("flow stats: truncated OXM class %#x field %d", class, field)
		}
		payload := b[hdr : 4+n]
		b = b[4+n:]
		if class == oxmClassPacketRegs {
			if err := decodePacketReg(field, hasMask, payload, f); err != nil {
				return err
			}
			continue
		}
		id, ok := fieldByOXM[[2]uint16{class, field}]
		if !ok {
			return fmt.Errorf("flow stats: match field class %#x field %d not known to Weir", class, field)
		}
		w := fieldTable[id].width
		if len(payload) != w && !(hasMask && len(payload) == 2*w) {
			return fmt.Errorf("flow stats: %s has %d bytes, want %d", fieldTable[id].name, len(payload), w)
		}
		e := matchEntry{field: id, value: append([]byte(nil), payload[:w]...)}
		if hasMask {
			e.mask = append([]byte(nil), payload[w:2*w]...)
		}
		f.matches = append(f.matches, e)
	}
	return nil
}

// oxmClassPacketRegs is OpenFlow 1.5's OXM_CLASS_PACKET_REGS: OVS reports
// matches on reg(2n) and reg(2n+1) as one 64-bit "xreg" n.
const oxmClassPacketRegs = 0x8001

func decodePacketReg(xreg uint16, hasMask bool, payload []byte, f *Flow) error {
	if len(payload) != 8 && !(hasMask && len(payload) == 16) {
		return fmt.Errorf("flow stats: xreg%d has %d bytes", xreg, len(payload))
	}
	for half := 0; half < 2; half++ {
		reg := int(xreg)*2 + half
		if reg > 15 {
			return fmt.Errorf("flow stats: xreg%d out of range", xreg)
		}
		value := append([]byte(nil), payload[4*half:4*half+4]...)
		var mask []byte
		if hasMask {
			mask = append([]byte(nil), payload[8+4*half:8+4*half+4]...)
			if beUint(mask) == 0 {
				continue // this register is not matched
			}
			if allOnes(mask) {
				mask = nil
			}
		}
		f.matches = append(f.matches, matchEntry{field: FieldReg0 + Field(reg), value: value, mask: mask})
	}
	return nil
}

// OXS stat fields (ofp_oxs_ofb_stat_fields).
const (
	oxsDuration    = 0
	oxsPacketCount = 4
	oxsByteCount   = 5
)

func decodeOXS(b []byte, st *FlowStats) {
	for len(b) >= 4 {
		field, n := b[2]>>1, int(b[3])
		if len(b) < 4+n {
			return
		}
		v := b[4 : 4+n]
		switch {
		case field == oxsDuration && n == 8:
			st.Duration = time.Duration(binary.BigEndian.Uint32(v[0:4]))*time.Second + time.Duration(binary.BigEndian.Uint32(v[4:8]))
		case field == oxsPacketCount && n == 8:
			st.Packets = binary.BigEndian.Uint64(v)
		case field == oxsByteCount && n == 8:
			st.Bytes = binary.BigEndian.Uint64(v)
		}
		b = b[4+n:]
	}
}
