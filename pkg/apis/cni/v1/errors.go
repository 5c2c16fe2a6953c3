package cniv1

// CNI error codes carried in Error.Code and printed by the CNI binary as the
// "code" of the CNI error JSON.
//
// Codes 0-99 are reserved by the CNI specification for well-known errors
// (SPEC.md, section "Error"); the ones below are the spec's list. Codes of 100
// and above are plugin specific: Weir's are the Code* constants from
// CodeInternal on. The constants are untyped so that they compare with both
// Error.Code (uint32) and types.Error.Code (uint) of the CNI library.
const (
	// CodeIncompatibleVersion: the network configuration's cniVersion is
	// not one the plugin supports.
	CodeIncompatibleVersion = 1
	// CodeUnsupportedField: a field of the network configuration is not
	// supported; the message names the key and value.
	CodeUnsupportedField = 2
	// CodeUnknownContainer: the container is unknown or does not exist, so
	// the runtime need not clean up its networking (for example by DEL).
	CodeUnknownContainer = 3
	// CodeInvalidEnvironmentVariables: a required CNI_* (or other)
	// environment variable is missing or invalid; the message names it.
	CodeInvalidEnvironmentVariables = 4
	// CodeIOFailure: an I/O failure, such as failing to read the network
	// configuration from stdin or to write the result to stdout.
	CodeIOFailure = 5
	// CodeDecodingFailure: content could not be decoded, such as a network
	// configuration that is not valid JSON.
	CodeDecodingFailure = 6
	// CodeInvalidNetworkConfig: the network configuration failed validation.
	CodeInvalidNetworkConfig = 7
	// CodeTryAgainLater: a transient condition that should clear up; the
	// runtime should retry the operation later. Weir uses it when the agent
	// cannot be reached or does not answer in time.
	CodeTryAgainLater = 11
	// CodePluginNotAvailable: (STATUS) the plugin cannot service ADD
	// requests, for example because the agent is not ready yet.
	CodePluginNotAvailable = 50
	// CodeLimitedConnectivity: (STATUS) the plugin is not available and
	// existing containers in the network may have limited connectivity.
	CodeLimitedConnectivity = 51

	// CodeInternal: an internal error of the Weir agent that none of the
	// more specific codes describes; also used by the CNI binary for gRPC
	// failures other than "unreachable" and "timed out".
	CodeInternal = 100
	// CodeIPAMExhausted: no IP address is left in the node's pod CIDR.
	CodeIPAMExhausted = 101
	// CodeOVSFailure: the agent failed to program Open vSwitch (OVSDB
	// transaction or OpenFlow flows) for the pod.
	CodeOVSFailure = 102
	// CodeInterfaceSetupFailure: the agent failed to create or configure the
	// pod's network interface (veth pair, addresses, routes) in its netns.
	CodeInterfaceSetupFailure = 103
	// CodeInterfaceExists: ADD asked for an interface the container already
	// has (the spec: "If an interface of the requested name already exists
	// in the container, the CNI plugin MUST return with an error"). The
	// runtime must DEL the attachment before adding it again.
	CodeInterfaceExists = 104
)

// NewError returns the Error for a CNI error code (one of the Code*
// constants), a short message for the kubelet log and optional details such
// as the underlying cause.
func NewError(code uint32, message, details string) *Error {
	return &Error{Code: code, Message: message, Details: details}
}

// NewErrorResponse returns a CniCmdResponse that fails the CNI command with
// NewError(code, message, details).
func NewErrorResponse(code uint32, message, details string) *CniCmdResponse {
	return &CniCmdResponse{Error: NewError(code, message, details)}
}
