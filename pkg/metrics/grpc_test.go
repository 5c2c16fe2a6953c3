package metrics_test

import (
	"context"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// grpcClient connects to the CNI server's unix socket.
func grpcClient(socket string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///cni", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}))
}
