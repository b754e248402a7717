// Package etcd is a build-only wrapper module: it gives `go get` and `go build` a main
// module from which etcd is built at a pinned go.etcd.io/etcd/server/v3 release. It
// contains no code of its own.
package etcd
