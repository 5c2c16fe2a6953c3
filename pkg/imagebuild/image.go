package imagebuild

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultPath is the PATH set in every image.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config is the runtime configuration of an image.
type Config struct {
	// Ref names the image in the archive, e.g. "weir-agent:dev".
	Ref        string            `json:"ref"`
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Env        []string          `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// WriteArchive writes tree as a one-layer linux/amd64 image with config cfg
// to out, a docker-archive tarball (`docker load`, `ctr images import`). The
// file is written next to out and renamed into place, so out is either the
// old or the complete new archive.
func WriteArchive(tree *Tree, cfg Config, out string) error {
	ref, err := name.NewTag(cfg.Ref)
	if err != nil {
		return fmt.Errorf("imagebuild: image reference %q: %w", cfg.Ref, err)
	}
	layer, err := tree.Layer()
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("imagebuild: adding the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("imagebuild: reading the image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config.Entrypoint = cfg.Entrypoint
	cf.Config.Cmd = cfg.Cmd
	cf.Config.Env = cfg.Env
	cf.Config.WorkingDir = cfg.WorkingDir
	cf.Config.Labels = cfg.Labels
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("imagebuild: setting the image config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("imagebuild: creating the output directory: %w", err)
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("imagebuild: writing %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("imagebuild: writing %s: %w", out, err)
	}
	return nil
}

// HashInputs returns a hex SHA-256 over the JSON encoding of v, a
// description of everything an image is made from.
func HashInputs(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("imagebuild: encoding the image inputs: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// stampPath is where the inputs hash of the archive at out is recorded.
func stampPath(out string) string { return out + ".inputs" }

// UpToDate reports whether out exists and was built from inputs with hash.
func UpToDate(out, hash string) bool {
	if _, err := os.Stat(out); err != nil {
		return false
	}
	b, err := os.ReadFile(stampPath(out))
	return err == nil && strings.TrimSpace(string(b)) == hash
}

// RecordInputs stores hash as the inputs of the archive at out.
func RecordInputs(out, hash string) error {
	if err := os.WriteFile(stampPath(out), []byte(hash+"\n"), 0o644); err != nil {
		return fmt.Errorf("imagebuild: recording the inputs of %s: %w", out, err)
	}
	return nil
}

// CheckStatic returns an error unless data is a statically linked ELF
// executable (no program interpreter), i.e. one that runs in an image
// without a C library.
func CheckStatic(data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dynamically linked (build it with CGO_ENABLED=0)")
		}
	}
	return nil
}

// Digest returns the digest of the image in the docker-archive at path (the
// single image in it).
func Digest(path string) (v1.Hash, error) {
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("imagebuild: opening %s: %w", path, err)
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("imagebuild: digest of %s: %w", path, err)
	}
	return d, nil
}
