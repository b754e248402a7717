// Package k8s is a build-only wrapper module: it gives `go get` and `go build` a main
// module from which kube-apiserver and kube-controller-manager are built at a pinned
// k8s.io/kubernetes release. It contains no code of its own.
package k8s
