// Package kubevirt is a build-only wrapper module: it gives `go mod tidy` and `go build` a main
// module from which KubeVirt's virt-controller, virt-api and virtctl are built at a pinned
// kubevirt.io/kubevirt release. Its only code is the `webhooks` command.
package kubevirt
