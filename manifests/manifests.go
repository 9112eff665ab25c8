// Package manifests holds the Kubernetes manifests kubeboot applies, as
// text/template files kept in the repository and built into bootstrapd.
package manifests

import "embed"

// Flannel is manifests/flannel: the pod network (bootstrapd/podnetwork
// renders and applies it).
//
//go:embed flannel/*.yaml
var Flannel embed.FS
