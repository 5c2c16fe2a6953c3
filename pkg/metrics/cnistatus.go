package metrics

import (
	"context"
	"fmt"
	"net"
	"net/url"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

// CNIStatus sends a CNI STATUS request to the agent's CNI socket, as the
// weir binary does. It returns the CNI error the agent answered with (nil
// when ready) and, as err, a failure to get an answer at all.
func CNIStatus(ctx context.Context, socket string) (*cniv1.Error, error) {
	target := (&url.URL{Scheme: "unix", Path: socket}).String()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}))
	if err != nil {
		return nil, fmt.Errorf("CNI socket %s: %w", socket, err)
	}
	defer func() { _ = conn.Close() }()
	resp, err := cniv1.NewCniClient(conn).CmdStatus(ctx, &cniv1.CniCmdRequest{CniArgs: &cniv1.CniCmdArgs{
		NetworkConfiguration: []byte(`{"cniVersion":"1.1.0","name":"weir","type":"weir"}`)}})
	if err != nil {
		return nil, fmt.Errorf("CNI STATUS on %s: %w", socket, err)
	}
	return resp.GetError(), nil
}
