module github.com/weirnet/weir

go 1.26.0

// The antrea.io vanity paths are refused by the module proxy here; the GitHub
// paths of the same tags are served and declare module antrea.io/... .
replace (
	antrea.io/libOpenflow v0.15.0 => github.com/antrea-io/libOpenflow v0.15.0
	antrea.io/ofnet v0.14.0 => github.com/antrea-io/ofnet v0.14.0
)

require (
	antrea.io/libOpenflow v0.15.0
	antrea.io/ofnet v0.14.0
	github.com/sirupsen/logrus v1.9.3
	k8s.io/klog/v2 v2.130.1
)

require (
	github.com/Microsoft/go-winio v0.6.2 // indirect
	github.com/cenkalti/hub v1.0.2 // indirect
	github.com/cenkalti/rpc2 v1.0.3 // indirect
	github.com/contiv/libovsdb v0.0.0-20170227191248-d0061a53e358 // indirect
	github.com/go-logr/logr v1.4.2 // indirect
	github.com/orcaman/concurrent-map/v2 v2.0.1 // indirect
	github.com/ovn-org/libovsdb v0.7.0 // indirect
	golang.org/x/sys v0.25.0 // indirect
)
