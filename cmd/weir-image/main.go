// Command weir-image builds Weir's container images without a container
// engine, as docker-archive tarballs that `ctr -n k8s.io images import` and
// `docker load` accept:
//
//	weir-agent:dev             ovs-agent, the weir CNI binary, portmap, install-cni, busybox, nft
//	weir-ovs:dev               Open vSwitch from Debian's packages, start/liveness scripts
//	weir-test-server:dev       /test-server
//	registry.k8s.io/pause:3.10 /pause (kubelet's sandbox image, provided locally)
//
// Usage:
//
//	weir-image build --bin-dir bin --out-dir bin/images [--debs-cache /var/cache/weir/debs] [IMAGE...]
//
// Each image is written as <out-dir>/<name>.tar with the hash of its inputs
// in <name>.tar.inputs; an image whose inputs did not change is not rebuilt.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/build/images"
	"github.com/weirnet/weir/pkg/imagebuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Stdout).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "weir-image:", err)
		os.Exit(1)
	}
}

func newRootCmd(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "weir-image",
		Short:         "Build Weir's container images as docker-archive tarballs, without a container engine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	root.PersistentFlags().AddGoFlag(klogFlags.Lookup("v"))
	root.AddCommand(newBuildCmd(stdout))
	return root
}

type buildOptions struct {
	binDir, outDir, debsCache, tag string
	force                          bool
}

func newBuildCmd(stdout io.Writer) *cobra.Command {
	var o buildOptions
	var names []string
	for _, d := range imageDefs() {
		names = append(names, d.name)
	}
	cmd := &cobra.Command{
		Use:   "build [IMAGE...]",
		Short: "Build images (default: all of " + strings.Join(names, ", ") + ")",
		Long: "Build images into OUT-DIR/<image>.tar. Go binaries come from BIN-DIR and must be static\n" +
			"(make build). Debian packages are resolved with the host's apt index, downloaded with\n" +
			"`apt-get download` into DEBS-CACHE (kept, named by exact version) and unpacked.\n" +
			"An image whose inputs are unchanged since the last build is skipped.",
		RunE: func(cmd *cobra.Command, args []string) error {
			defs, err := selectImages(args)
			if err != nil {
				return err
			}
			b, err := newBuilder(o)
			if err != nil {
				return err
			}
			for _, d := range defs {
				res, err := b.build(cmd.Context(), d)
				if err != nil {
					return err
				}
				state := fmt.Sprintf("built in %.1fs", res.took.Seconds())
				if res.upToDate {
					state = "up to date"
				}
				fmt.Fprintf(stdout, "%-18s %-28s %7.1f MiB  %s\n", d.name, res.ref, float64(res.size)/(1<<20), state)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.binDir, "bin-dir", "bin", "directory with the static binaries ovs-agent, weir, test-server, pause")
	cmd.Flags().StringVar(&o.outDir, "out-dir", "bin/images", "directory for the image tarballs")
	cmd.Flags().StringVar(&o.debsCache, "debs-cache", "/var/cache/weir/debs", "cache directory for downloaded .deb files")
	cmd.Flags().StringVar(&o.tag, "tag", "dev", "tag of the weir-* images")
	cmd.Flags().BoolVar(&o.force, "force", false, "rebuild even if the inputs did not change")
	return cmd
}

func selectImages(args []string) ([]imageDef, error) {
	all := imageDefs()
	if len(args) == 0 {
		return all, nil
	}
	// The upstream e2e test images only when named (conformance.go).
	all = append(all, conformanceImageDefs()...)
	all = append(all, corednsImageDef()) // coredns.go
	var out []imageDef
	for _, a := range args {
		i := slices.IndexFunc(all, func(d imageDef) bool { return d.name == a })
		if i < 0 {
			return nil, fmt.Errorf("unknown image %q", a)
		}
		out = append(out, all[i])
	}
	return out, nil
}

type builder struct {
	opts buildOptions
	apt  *imagebuild.Apt
	// toolHash identifies this weir-image binary: a new tool version may lay
	// images out differently, so it is one of every image's inputs.
	toolHash string
}

func newBuilder(o buildOptions) (*builder, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locating weir-image itself: %w", err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		return nil, fmt.Errorf("hashing weir-image itself: %w", err)
	}
	sum := sha256.Sum256(data)
	return &builder{opts: o, apt: &imagebuild.Apt{CacheDir: o.debsCache}, toolHash: hex.EncodeToString(sum[:])}, nil
}

// inputFile is one file of an image, identified by content hash.
type inputFile struct {
	Path   string `json:"path"`
	Mode   int64  `json:"mode"`
	SHA256 string `json:"sha256"`
	data   []byte
}

// inputs is everything an image is made from; its hash decides rebuilds.
type inputs struct {
	Tool   string               `json:"tool"`
	Config imagebuild.Config    `json:"config"`
	Files  []inputFile          `json:"files"`
	Debs   []imagebuild.Package `json:"debs"`
}

type result struct {
	ref      string
	size     int64
	upToDate bool
	took     time.Duration
}

func (b *builder) build(ctx context.Context, d imageDef) (result, error) {
	start := time.Now()
	in, err := b.gather(ctx, d)
	if err != nil {
		return result{}, fmt.Errorf("image %s: %w", d.name, err)
	}
	hash, err := imagebuild.HashInputs(in)
	if err != nil {
		return result{}, fmt.Errorf("image %s: %w", d.name, err)
	}
	out := filepath.Join(b.opts.outDir, d.name+".tar")
	res := result{ref: in.Config.Ref}
	if !b.opts.force && imagebuild.UpToDate(out, hash) {
		res.upToDate = true
	} else {
		klog.InfoS("Building image", "image", in.Config.Ref, "out", out, "debs", len(in.Debs))
		if err := b.assemble(ctx, d, in, out); err != nil {
			return result{}, fmt.Errorf("image %s: %w", d.name, err)
		}
		if err := imagebuild.RecordInputs(out, hash); err != nil {
			return result{}, err
		}
	}
	st, err := os.Stat(out)
	if err != nil {
		return result{}, fmt.Errorf("image %s: %w", d.name, err)
	}
	res.size = st.Size()
	res.took = time.Since(start)
	klog.V(1).InfoS("Image ready", "image", in.Config.Ref, "bytes", res.size, "upToDate", res.upToDate, "took", res.took)
	return res, nil
}

// gather reads and hashes the image's files and resolves its packages (no
// downloads).
func (b *builder) gather(ctx context.Context, d imageDef) (*inputs, error) {
	tag := d.tag
	if tag == "" {
		tag = b.opts.tag
	}
	in := &inputs{Tool: b.toolHash, Config: imagebuild.Config{
		Ref:        d.repo + ":" + tag,
		Entrypoint: d.entrypoint,
		Cmd:        d.cmd,
		Env:        []string{imagebuild.DefaultPath},
		Labels: map[string]string{
			"org.opencontainers.image.title":  d.title,
			"org.opencontainers.image.source": "https://github.com/weirnet/weir",
		},
	}}
	add := func(dst string, mode int64, data []byte) {
		sum := sha256.Sum256(data)
		in.Files = append(in.Files, inputFile{Path: dst, Mode: mode, SHA256: hex.EncodeToString(sum[:]), data: data})
	}
	for _, f := range d.bins {
		src := filepath.Join(b.opts.binDir, f.src)
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("reading binary (run make build first): %w", err)
		}
		if err := imagebuild.CheckStatic(data); err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		add(f.dst, f.mode, data)
	}
	for _, f := range d.files {
		data, err := os.ReadFile(filepath.Join(b.opts.binDir, f.src))
		if err != nil {
			return nil, fmt.Errorf("reading file for the image: %w", err)
		}
		add(f.dst, f.mode, data)
	}
	for _, f := range d.scripts {
		data, err := images.Script(f.src)
		if err != nil {
			return nil, err
		}
		add(f.dst, f.mode, data)
	}
	if len(d.debRoots) > 0 {
		names, err := b.apt.Closure(ctx, d.debRoots, debExclude())
		if err != nil {
			return nil, err
		}
		if in.Debs, err = b.apt.Resolve(ctx, names); err != nil {
			return nil, err
		}
		for _, p := range in.Debs {
			if p.Name == "openvswitch-switch" {
				in.Config.Labels["io.weir.openvswitch-version"] = p.Version
			}
		}
	}
	return in, nil
}

// assemble downloads the packages, builds the root file system and writes
// the archive.
func (b *builder) assemble(ctx context.Context, d imageDef, in *inputs, out string) error {
	t := imagebuild.NewTree(d.rootfs)
	if d.rootfs {
		baseRootfs(t)
	}
	if len(in.Debs) > 0 {
		debs, err := b.apt.Fetch(ctx, in.Debs)
		if err != nil {
			return err
		}
		for _, deb := range debs {
			if err := imagebuild.ExtractDeb(ctx, deb, t, keepDebPath); err != nil {
				return err
			}
		}
	}
	if d.busybox {
		if err := imagebuild.InstallBusyboxApplets(ctx, t, "/bin/busybox"); err != nil {
			return err
		}
	}
	for _, f := range in.Files {
		t.File(f.Path, f.Mode, f.data)
	}
	for link, target := range d.symlinks {
		t.Symlink(link, target)
	}
	if len(d.checkLibs) > 0 {
		if missing := t.MissingLibraries(d.checkLibs...); len(missing) > 0 {
			return errors.New("shared libraries missing from the image:\n  " + strings.Join(missing, "\n  "))
		}
	}
	return imagebuild.WriteArchive(t, in.Config, out)
}
