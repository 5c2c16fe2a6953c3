package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Snapshot is the whole persistent state of an Allocator.
type Snapshot struct {
	// CIDR is the CIDR the allocations were made from. Informational: New
	// checks the allocations themselves against its CIDR.
	CIDR string
	// LastAllocated is the most recently allocated address (the round-robin
	// position), or nil.
	LastAllocated net.IP
	// Allocations maps owner to address.
	Allocations map[string]net.IP
}

// Store persists an Allocator's state. Save is called with the complete
// state after every change and must not return before the state is durable;
// Load returns what the last successful Save stored, or an empty Snapshot if
// nothing was ever saved. The Allocator serialises its calls.
type Store interface {
	Load() (Snapshot, error)
	Save(Snapshot) error
}

// fileVersion is the version of the JSON document FileStore writes.
const fileVersion = 1

// fileDoc is the JSON document of a FileStore.
type fileDoc struct {
	Version       int               `json:"version"`
	CIDR          string            `json:"cidr,omitempty"`
	LastAllocated string            `json:"lastAllocated,omitempty"`
	Allocations   map[string]string `json:"allocations"`
}

// FileStore keeps the state in one JSON file. Every Save replaces the file
// atomically: the new content is written to a temporary file in the same
// directory, fsynced, renamed over the old file, and the directory is
// fsynced, so after a crash the file holds either the old or the new state,
// never a mix. The directory is created (0700) on the first Save if needed;
// the file is 0600.
//
// Only one process may use a file at a time; FileStore does not lock it.
type FileStore struct {
	path string
}

// NewFileStore returns a FileStore for path. Nothing is read or written until
// Load or Save.
func NewFileStore(path string) *FileStore { return &FileStore{path: path} }

// Path returns the path of the state file.
func (s *FileStore) Path() string { return s.path }

// Load reads the state file. A missing file is an empty state. An
// unreadable file is an error naming the file. A corrupt file (not a valid
// document of this version) is never silently reset: it is renamed to
// <path>.corrupt-<UTC time> for a human to inspect, a warning naming both
// paths is logged, and Load returns an empty state. That is safe only
// because the file is not the authoritative record: its user rebuilds the
// allocations from one (the agent calls Allocator.Restore with the IPs of
// its OVSDB pod ports at every start, before it serves any ADD), and an
// agent that refused to start on a torn or hand-edited file would take the
// whole node's pod networking down for what it can recover by itself.
// Temporary files left behind by a Save interrupted by a crash are removed.
func (s *FileStore) Load() (Snapshot, error) {
	if s.path == "" {
		return Snapshot{}, errors.New("IPAM state file path is empty")
	}
	s.removeStaleTemps()
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return Snapshot{Allocations: map[string]net.IP{}}, nil
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading IPAM state file: %w", err)
	}
	snap, err := decodeFile(data)
	if err != nil {
		aside := s.path + corruptInfix + time.Now().UTC().Format("20060102T150405.000000000Z")
		if rerr := os.Rename(s.path, aside); rerr != nil {
			return Snapshot{}, fmt.Errorf("IPAM state file %s is corrupt (%v) and cannot be moved aside: %w", s.path, err, rerr)
		}
		klog.Warningf("IPAM state file is corrupt, moved aside; starting empty for the caller to rebuild the allocations from its authoritative record: path=%q movedTo=%q err=%q",
			s.path, aside, err.Error())
		return Snapshot{Allocations: map[string]net.IP{}}, nil
	}
	return snap, nil
}

// corruptInfix names a corrupt state file Load moved aside.
const corruptInfix = ".corrupt-"

func decodeFile(data []byte) (Snapshot, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Snapshot{}, errors.New("file is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc fileDoc
	if err := dec.Decode(&doc); err != nil {
		return Snapshot{}, fmt.Errorf("decoding JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Snapshot{}, errors.New("trailing data after the JSON document")
	}
	if doc.Version != fileVersion {
		return Snapshot{}, fmt.Errorf("unsupported version %d (want %d)", doc.Version, fileVersion)
	}
	if doc.Allocations == nil {
		return Snapshot{}, errors.New(`missing "allocations"`)
	}
	snap := Snapshot{CIDR: doc.CIDR, Allocations: make(map[string]net.IP, len(doc.Allocations))}
	if doc.LastAllocated != "" {
		if snap.LastAllocated = net.ParseIP(doc.LastAllocated); snap.LastAllocated == nil {
			return Snapshot{}, fmt.Errorf("invalid lastAllocated %q", doc.LastAllocated)
		}
	}
	for owner, s := range doc.Allocations {
		ip := net.ParseIP(s)
		if ip == nil {
			return Snapshot{}, fmt.Errorf("invalid address %q for owner %q", s, owner)
		}
		snap.Allocations[owner] = ip
	}
	return snap, nil
}

// Save writes snap atomically and durably.
func (s *FileStore) Save(snap Snapshot) error {
	if s.path == "" {
		return errors.New("IPAM state file path is empty")
	}
	doc := fileDoc{
		Version:     fileVersion,
		CIDR:        snap.CIDR,
		Allocations: make(map[string]string, len(snap.Allocations)),
	}
	if snap.LastAllocated != nil {
		doc.LastAllocated = snap.LastAllocated.String()
	}
	for owner, ip := range snap.Allocations {
		doc.Allocations[owner] = ip.String()
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding IPAM state: %w", err)
	}
	data = append(data, '\n')
	if err := writeFileAtomic(s.path, data, 0o600); err != nil {
		return fmt.Errorf("writing IPAM state file: %w", err)
	}
	return nil
}

const tempInfix = ".tmp-"

func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	f, err := os.CreateTemp(dir, base+tempInfix+"*")
	if err != nil {
		return fmt.Errorf("creating temporary file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	// The rename is durable only once the directory entry is.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

func (s *FileStore) removeStaleTemps() {
	dir, base := filepath.Split(s.path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), base+tempInfix) && e.Type().IsRegular() {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// MemStore is an in-memory Store for tests. Its zero value is ready to use.
type MemStore struct {
	mu    sync.Mutex
	snap  Snapshot
	saves int
}

// Load returns a copy of the last saved state.
func (m *MemStore) Load() (Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copySnapshot(m.snap), nil
}

// Save keeps a copy of snap.
func (m *MemStore) Save(snap Snapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap = copySnapshot(snap)
	m.saves++
	return nil
}

// Saves returns how many times Save was called.
func (m *MemStore) Saves() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saves
}

func copySnapshot(s Snapshot) Snapshot {
	out := Snapshot{CIDR: s.CIDR, Allocations: make(map[string]net.IP, len(s.Allocations))}
	if s.LastAllocated != nil {
		out.LastAllocated = append(net.IP(nil), s.LastAllocated...)
	}
	for o, ip := range s.Allocations {
		out.Allocations[o] = append(net.IP(nil), ip...)
	}
	return out
}
