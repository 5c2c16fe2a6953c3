// Command cni-client is Weir's CNI plugin binary, installed as
// /opt/cni/bin/weir. It is deliberately tiny: it answers VERSION itself and
// forwards every other CNI command (ADD, CHECK, DEL, STATUS, GC) unchanged to
// the CNI server of the Weir agent over gRPC on a unix socket, then prints the
// agent's answer as the CNI result or error.
//
// Supported CNI spec versions: 0.4.0, 1.0.0 and 1.1.0 (STATUS and GC need
// 1.1.0).
//
// Configuration, beyond the CNI environment and the network configuration on
// stdin that the agent interprets:
//
//   - "cniSocket" (optional string in the network configuration): absolute
//     path of the agent's CNI socket; default /var/run/weir/cni.sock. It is
//     the only field of the network configuration this binary reads.
//   - WEIR_CNI_TIMEOUT (optional environment variable): a Go duration such as
//     "30s" that replaces the deadline of every forwarded call (defaults: 2m
//     for ADD, CHECK, DEL and GC; 10s for STATUS). Meant for tests.
//
// Errors: an agent that cannot be reached or does not answer in time yields
// CNI error 11 (try again later), or 50 (plugin not available) for STATUS;
// a CNI error from the agent is passed through verbatim; any other gRPC
// failure yields Weir's code 100 (internal). An invalid CNI_IFNAME or
// CNI_CONTAINERID is code 4 before anything is forwarded. The error JSON
// carries the request's cniVersion. See package
// github.com/weirnet/weir/pkg/apis/cni/v1 for the codes.
package main

import (
	"io"
	"log"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

// about is printed on stderr when the binary runs without CNI_COMMAND.
const about = "weir: CNI plugin of Weir; forwards CNI calls to the Weir agent (ovs-agent)"

func main() {
	// The network configuration is read here, before skel reads it, so
	// that every error, skel's own included, carries its cniVersion.
	var stdin []byte
	if os.Getenv("CNI_COMMAND") != "" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			exit("", types.NewError(cniv1.CodeIOFailure, "weir: cannot read the network configuration from stdin", err.Error()))
		}
		stdin = b
		if err := replaceStdin(b); err != nil {
			exit(requestVersion(b), types.NewError(cniv1.CodeIOFailure, "weir: cannot pass on the network configuration", err.Error()))
		}
	}
	v := requestVersion(stdin)
	if e := preflight(os.Getenv); e != nil {
		exit(v, e)
	}
	p := &plugin{stdout: os.Stdout, getenv: os.Getenv}
	if e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add:    p.cmdAdd,
		Check:  p.cmdCheck,
		Del:    p.cmdDel,
		Status: p.cmdStatus,
		GC:     p.cmdGC,
	}, version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), about); e != nil {
		exit(v, e)
	}
}

func exit(cniVersion string, e *types.Error) {
	if err := printError(os.Stdout, cniVersion, e); err != nil {
		log.Print("weir: writing the error JSON to stdout: ", err)
	}
	os.Exit(1)
}

// replaceStdin makes os.Stdin a pipe that yields b, for skel to read.
func replaceStdin(b []byte) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	go func() {
		_, _ = w.Write(b)
		_ = w.Close()
	}()
	os.Stdin = r
	return nil
}
