package main

import (
	"path"
	"strings"

	"github.com/weirnet/weir/pkg/imagebuild"
)

// imageDef describes one image: where its files come from and how it runs.
type imageDef struct {
	// name is the archive's file name without ".tar" and the name used on
	// the command line.
	name string
	// repo and tag form the image reference; tag "" means the --tag flag.
	repo, tag string
	// bins are static Go binaries from --bin-dir.
	bins []fileDef
	// files are other files from --bin-dir (data, not checked for static
	// linking).
	files []fileDef
	// scripts are files embedded from build/images.
	scripts []fileDef
	// debRoots are Debian packages installed with their dependency closure.
	debRoots []string
	// rootfs adds the usual top-level directories, /etc/passwd and
	// /etc/group, and lays the tree out usrmerged like Debian.
	rootfs bool
	// symlinks are added after everything else (link path -> target).
	symlinks map[string]string
	// busybox installs applet symlinks for /bin/busybox (from busybox-static).
	busybox bool
	// checkLibs lists path prefixes whose ELF files must find all their
	// shared libraries in the image.
	checkLibs  []string
	entrypoint []string
	cmd        []string
	title      string
}

// fileDef copies src (a binary name or embedded script path) to dst.
type fileDef struct {
	src, dst string
	mode     int64
}

// debExclude are packages (globs) the images never need although Debian
// declares them as dependencies: interpreters, package-management and
// system-administration tools of a full system, PAM. Dropping one drops what
// only it pulled in. MissingLibraries and the image tests prove the daemons
// still run without them.
func debExclude() []string {
	return []string{
		"python3*", "libpython3*", "perl*", "libperl*",
		"debconf*", "cdebconf", "adduser", "passwd", "dpkg", "install-info", "tar",
		"init-system-helpers", "usrmerge", "usr-is-merged",
		"kmod", "procps", "uuid-runtime", "openssl",
		"mime-support", "mailcap", "media-types", "readline-common",
		"libpam*",
	}
}

// keepDebPath drops documentation, manual pages, locales, iconv modules and
// service-manager integration from unpacked packages; copyright files stay.
func keepDebPath(p string) bool {
	switch {
	case strings.HasPrefix(p, "usr/share/doc/"):
		return path.Base(p) == "copyright" || !strings.Contains(strings.TrimPrefix(p, "usr/share/doc/"), "/")
	case strings.HasPrefix(p, "usr/share/man/"), strings.HasPrefix(p, "usr/share/info/"),
		strings.HasPrefix(p, "usr/share/locale/"), strings.HasPrefix(p, "usr/share/lintian/"),
		strings.HasPrefix(p, "usr/share/bug/"), strings.HasPrefix(p, "usr/lib/systemd/"),
		strings.HasPrefix(p, "etc/init.d/"), strings.HasPrefix(p, "etc/logrotate.d/"),
		// glibc's iconv charset modules: nothing in the images converts charsets.
		strings.HasPrefix(p, "usr/lib/x86_64-linux-gnu/gconv/"):
		return false
	}
	return true
}

// imageDefs returns the images weir-image builds, in build order.
func imageDefs() []imageDef {
	return []imageDef{
		{
			name: "weir-agent", repo: "weir-agent", title: "Weir node agent and CNI installer",
			bins: []fileDef{
				{src: "ovs-agent", dst: "/usr/local/bin/ovs-agent", mode: 0o755},
				{src: "weir", dst: "/opt/weir/bin/weir", mode: 0o755},
				// The reference portmap plugin (hostPort), which
				// install-cni installs next to weir (make build).
				{src: "cni-plugins/portmap", dst: "/opt/weir/bin/portmap", mode: 0o755},
			},
			scripts: []fileDef{{src: "agent/install-cni.sh", dst: "/usr/local/bin/install-cni", mode: 0o755}},
			// nftables: the agent runs `nft -f -` (pkg/nodenet) for the
			// underlay ingress drop.
			debRoots:   []string{"busybox-static", "nftables"},
			rootfs:     true,
			busybox:    true,
			checkLibs:  []string{"/usr/sbin/nft"},
			entrypoint: []string{"/usr/local/bin/ovs-agent"},
		},
		{
			name: "weir-ovs", repo: "weir-ovs", title: "Open vSwitch (ovsdb-server + ovs-vswitchd) for Weir",
			scripts: []fileDef{
				{src: "ovs/start-ovs.sh", dst: "/usr/local/bin/start-ovs.sh", mode: 0o755},
				{src: "ovs/ovs-healthy.sh", dst: "/usr/local/bin/ovs-healthy.sh", mode: 0o755},
			},
			debRoots: []string{"openvswitch-switch", "openvswitch-common", "busybox-static"},
			// What openvswitch-switch's postinst does with update-alternatives.
			symlinks:   map[string]string{"/usr/sbin/ovs-vswitchd": "/usr/lib/openvswitch-switch/ovs-vswitchd"},
			rootfs:     true,
			busybox:    true,
			checkLibs:  []string{"/usr/sbin/", "/usr/bin/", "/usr/lib/"},
			entrypoint: []string{"/usr/local/bin/start-ovs.sh"},
		},
		{
			name: "weir-test-server", repo: "weir-test-server", title: "Weir test server (TCP/UDP/HTTP echo of the pod name)",
			bins:       []fileDef{{src: "test-server", dst: "/test-server", mode: 0o755}},
			entrypoint: []string{"/test-server", "serve"},
		},
		{
			name: "pause", repo: "registry.k8s.io/pause", tag: "3.10", title: "Pod sandbox (pause) built by Weir",
			bins:       []fileDef{{src: "pause", dst: "/pause", mode: 0o755}},
			entrypoint: []string{"/pause"},
		},
	}
}

// baseRootfs adds what a shell-capable image expects at the top level.
func baseRootfs(t *imagebuild.Tree) {
	for _, d := range []string{"dev", "proc", "sys", "run", "var/run", "var/log", "var/lib", "etc", "home"} {
		t.Dir(d, 0o755)
	}
	t.Dir("root", 0o700)
	t.Dir("tmp", 0o1777)
	t.File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"))
	t.File("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
}
