package images

import (
	"fmt"
	"path"
	"slices"

	"github.com/distribution/reference"
	"kubeboot.dev/kubeboot/nodepath"
)

// HostsDir is containerd's registry host configuration directory
// (config_path of the CRI plugin in overlays/etc/containerd/config.toml):
// one <host>/hosts.toml per registry, the format containerd documents in
// docs/hosts.md. Registry mirrors are configured there too.
const HostsDir = "/etc/containerd/certs.d"

// Registries are the registry hosts of the pinned images, sorted.
func Registries(entries []Entry) []string {
	var out []string
	for _, e := range entries {
		named, err := reference.ParseNormalizedNamed(e.Ref)
		if err != nil {
			continue
		}
		if h := reference.Domain(named); !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// HostsPath is the hosts.toml of registry host under HostsDir.
func HostsPath(host string) string { return path.Join(HostsDir, host, "hosts.toml") }

// RefusingHosts is the hosts.toml that keeps containerd from ever
// fetching from host: its only endpoint may push, not resolve or pull, so
// containerd's resolver finds no host to ask and a pull fails at once
// ("no resolve hosts"), without a connection. The server line must stay:
// without it containerd falls back to host with every capability.
func RefusingHosts(host string) []byte {
	return fmt.Appendf(nil, `# kubeboot: %[1]s serves the images this node image pins (%[2]s).
# They were imported at build time and are never pulled: this endpoint may
# not resolve or pull, so a pull from %[1]s fails here without a connection.
server = "https://%[1]s"
capabilities = ["push"]
`, host, nodepath.ImagesIndex)
}
