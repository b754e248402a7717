// Command webhooks prints, as one JSON array, the two admission webhook configurations that
// virt-operator installs for virt-api (validating first, then mutating), taken from KubeVirt's
// own generator at the pinned release. testenv rewrites each service reference to a URL on
// loopback and registers them, so the testbed admits objects exactly as a KubeVirt cluster does.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
)

func main() {
	const namespace = "kubevirt"
	configurations := []any{
		components.NewVirtAPIValidatingWebhookConfiguration(namespace),
		components.NewVirtAPIMutatingWebhookConfiguration(namespace),
	}
	if err := json.NewEncoder(os.Stdout).Encode(configurations); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
