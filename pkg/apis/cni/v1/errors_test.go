package cniv1

import (
	"context"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestWellKnownCodes pins the spec's codes, cross-checked against the CNI
// library the binary is built on.
func TestWellKnownCodes(t *testing.T) {
	tests := []struct {
		name string
		ours uint
		cni  uint
	}{
		{"incompatible version", CodeIncompatibleVersion, types.ErrIncompatibleCNIVersion},
		{"unsupported field", CodeUnsupportedField, types.ErrUnsupportedField},
		{"unknown container", CodeUnknownContainer, types.ErrUnknownContainer},
		{"invalid environment variables", CodeInvalidEnvironmentVariables, types.ErrInvalidEnvironmentVariables},
		{"I/O failure", CodeIOFailure, types.ErrIOFailure},
		{"decoding failure", CodeDecodingFailure, types.ErrDecodingFailure},
		{"invalid network config", CodeInvalidNetworkConfig, types.ErrInvalidNetworkConfig},
		{"try again later", CodeTryAgainLater, types.ErrTryAgainLater},
		{"plugin not available", CodePluginNotAvailable, types.ErrPluginNotAvailable},
		{"limited connectivity", CodeLimitedConnectivity, types.ErrLimitedConnectivity},
	}
	for _, tt := range tests {
		if tt.ours != tt.cni {
			t.Errorf("%s: code %d, CNI library says %d", tt.name, tt.ours, tt.cni)
		}
	}
}

// TestWeirCodes checks that Weir's own codes are in the plugin-specific range
// (>= 100, per the CNI spec) and distinct.
func TestWeirCodes(t *testing.T) {
	codes := map[string]uint32{
		"internal":               CodeInternal,
		"IPAM exhausted":         CodeIPAMExhausted,
		"OVS failure":            CodeOVSFailure,
		"interface setup failed": CodeInterfaceSetupFailure,
		"interface exists":       CodeInterfaceExists,
	}
	seen := map[uint32]string{}
	for name, code := range codes {
		if code < 100 {
			t.Errorf("%s: code %d is in the range the CNI spec reserves (0-99)", name, code)
		}
		if other, dup := seen[code]; dup {
			t.Errorf("%s and %s share code %d", name, other, code)
		}
		seen[code] = name
	}
}

func TestNewError(t *testing.T) {
	tests := []struct {
		code             uint32
		message, details string
	}{
		{CodeIPAMExhausted, "weir: no IP address left in pod CIDR 10.244.1.0/24", "254 of 254 in use"},
		{CodeTryAgainLater, "weir: the agent is starting", ""},
		{CodeInternal, "", ""},
	}
	for _, tt := range tests {
		want := &Error{Code: tt.code, Message: tt.message, Details: tt.details}
		if got := NewError(tt.code, tt.message, tt.details); !proto.Equal(got, want) {
			t.Errorf("NewError(%d, %q, %q) = %v, want %v", tt.code, tt.message, tt.details, got, want)
		}
		resp := NewErrorResponse(tt.code, tt.message, tt.details)
		if !proto.Equal(resp.GetError(), want) || len(resp.GetCniResult()) != 0 {
			t.Errorf("NewErrorResponse(%d, %q, %q) = %v, want only error %v", tt.code, tt.message, tt.details, resp, want)
		}
	}
}

// TestWireNames pins the names and field numbers that old binaries and new
// agents (and the reverse) must agree on during an upgrade.
func TestWireNames(t *testing.T) {
	methods := File_pkg_apis_cni_v1_cni_proto.Services().ByName("Cni").Methods()
	for _, tt := range []struct{ method, fullName string }{
		{"CmdAdd", Cni_CmdAdd_FullMethodName},
		{"CmdCheck", Cni_CmdCheck_FullMethodName},
		{"CmdDel", Cni_CmdDel_FullMethodName},
		{"CmdStatus", Cni_CmdStatus_FullMethodName},
		{"CmdGC", Cni_CmdGC_FullMethodName},
	} {
		if methods.ByName(protoreflect.Name(tt.method)) == nil {
			t.Errorf("service weir.cni.v1.Cni lacks %s", tt.method)
		}
		if want := "/weir.cni.v1.Cni/" + tt.method; tt.fullName != want {
			t.Errorf("%s full name = %q, want %q", tt.method, tt.fullName, want)
		}
	}
	if n := methods.Len(); n != 5 {
		t.Errorf("service has %d methods, want 5", n)
	}

	fields := []struct {
		msg    proto.Message
		field  protoreflect.Name
		number protoreflect.FieldNumber
	}{
		{&CniCmdRequest{}, "cni_args", 1},
		{&CniCmdArgs{}, "container_id", 1},
		{&CniCmdArgs{}, "netns", 2},
		{&CniCmdArgs{}, "ifname", 3},
		{&CniCmdArgs{}, "args", 4},
		{&CniCmdArgs{}, "path", 5},
		{&CniCmdArgs{}, "network_configuration", 6},
		{&CniCmdResponse{}, "cni_result", 1},
		{&CniCmdResponse{}, "error", 2},
		{&Error{}, "code", 1},
		{&Error{}, "message", 2},
		{&Error{}, "details", 3},
	}
	for _, tt := range fields {
		desc := tt.msg.ProtoReflect().Descriptor()
		f := desc.Fields().ByName(tt.field)
		if f == nil || f.Number() != tt.number {
			t.Errorf("%s.%s: want field number %d, got %v", desc.FullName(), tt.field, tt.number, f)
		}
	}
}

// echoServer answers every rpc with the CNI_ARGS it received as the result,
// or with an IPAM error when the container ID is "full".
type echoServer struct {
	UnimplementedCniServer
}

func (echoServer) CmdAdd(_ context.Context, req *CniCmdRequest) (*CniCmdResponse, error) {
	if req.GetCniArgs().GetContainerId() == "full" {
		return NewErrorResponse(CodeIPAMExhausted, "no address left", "10.244.1.0/24"), nil
	}
	return &CniCmdResponse{CniResult: []byte(req.GetCniArgs().GetArgs())}, nil
}

// TestRoundTrip sends requests through the generated client and server.
func TestRoundTrip(t *testing.T) {
	lis := bufconn.Listen(1 << 16)
	srv := grpc.NewServer()
	RegisterCniServer(srv, echoServer{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := NewCniClient(conn)

	tests := []struct {
		name string
		args *CniCmdArgs
		want *CniCmdResponse
	}{
		{
			name: "result",
			args: &CniCmdArgs{ContainerId: "c1", Args: "K8S_POD_NAME=web-0", NetworkConfiguration: []byte(`{}`)},
			want: &CniCmdResponse{CniResult: []byte("K8S_POD_NAME=web-0")},
		},
		{
			name: "error",
			args: &CniCmdArgs{ContainerId: "full"},
			want: NewErrorResponse(CodeIPAMExhausted, "no address left", "10.244.1.0/24"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := client.CmdAdd(context.Background(), &CniCmdRequest{CniArgs: tt.args})
			if err != nil {
				t.Fatalf("CmdAdd: %v", err)
			}
			if !proto.Equal(got, tt.want) {
				t.Errorf("CmdAdd = %v, want %v", got, tt.want)
			}
		})
	}
}
