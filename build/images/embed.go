// Package images holds the files that go into Weir's container images
// besides the Go binaries: the agent's install-cni script and the OVS
// container's start and liveness scripts. cmd/weir-image embeds them from
// here, so building images does not depend on the working directory.
package images

import (
	"embed"
	"fmt"
)

//go:embed agent/install-cni.sh ovs/start-ovs.sh ovs/ovs-healthy.sh
//go:embed e2e/nginx.conf
var files embed.FS

// Script returns the content of one of the embedded files, named by its
// path below build/images (e.g. "ovs/start-ovs.sh").
func Script(name string) ([]byte, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	return b, nil
}
