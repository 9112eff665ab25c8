package fromsource

import (
	"sort"
	"strings"

	"kubeboot.dev/kubeboot/image/lock"
)

// The recipes below are the upstream projects' own release flags, reduced
// to what a static linux/amd64 binary needs, with the version stamped in.

func etcdModule(version string) *goModule {
	// etcd's server main package is the module root; etcdctl is its own
	// module at the same version, resolved in the same graph.
	return &goModule{dir: "etcd-" + version, require: "go.etcd.io/etcd/server/v3@" + version, targets: []goTarget{
		{name: "etcd", kind: lock.KindBinary, version: version, pkg: "go.etcd.io/etcd/server/v3"},
		{name: "etcdctl", kind: lock.KindBinary, version: version, pkg: "go.etcd.io/etcd/etcdctl/v3"},
	}}
}

func corednsModule(version string) *goModule {
	return &goModule{dir: "coredns-" + version, require: "github.com/coredns/coredns@" + version, targets: []goTarget{
		{name: "coredns", kind: lock.KindBinary, version: version, pkg: "github.com/coredns/coredns",
			ldflags: []string{"-X", "github.com/coredns/coredns/coremain.GitCommit=" + version}},
	}}
}

func crictlModule(version string) *goModule {
	return &goModule{dir: "cri-tools-" + version, require: "sigs.k8s.io/cri-tools@" + version, targets: []goTarget{
		{name: "crictl", kind: lock.KindBinary, version: version, pkg: "sigs.k8s.io/cri-tools/cmd/crictl",
			ldflags: []string{"-X", "sigs.k8s.io/cri-tools/pkg/version.Version=" + version}},
	}}
}

func containerdModule(version string) *goModule {
	const v = "github.com/containerd/containerd/v2/version"
	ld := []string{"-X", v + ".Version=" + version, "-X", v + ".Revision=kubeboot-from-source",
		"-X", v + ".Package=github.com/containerd/containerd/v2"}
	tags := []string{"no_btrfs", "urfave_cli_no_docs"}
	m := &goModule{dir: "containerd-" + version, require: "github.com/containerd/containerd/v2@" + version}
	for _, name := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		m.targets = append(m.targets, goTarget{name: name, kind: lock.KindBinary, version: version,
			pkg: "github.com/containerd/containerd/v2/cmd/" + name, tags: tags, ldflags: ld})
	}
	return m
}

// libseccompStatic is where Debian's libseccomp-dev puts the static
// library; with it runc is linked statically, else against libseccomp.so.2
// (which the node's base system has).
const libseccompStatic = "/usr/lib/x86_64-linux-gnu/libseccomp.a"

func runcModule(version string) *goModule {
	static := exists(libseccompStatic)
	tags := []string{"seccomp", "urfave_cli_no_docs"}
	if static {
		tags = append(tags, "netgo", "osusergo")
	}
	return &goModule{dir: "runc-" + version, require: "github.com/opencontainers/runc@" + version, targets: []goTarget{
		{name: "runc", kind: lock.KindBinary, version: version, pkg: "github.com/opencontainers/runc", cgo: true, static: static,
			tags: tags, ldflags: []string{"-X", "main.version=" + strings.TrimPrefix(version, "v"), "-X", "main.gitCommit=kubeboot-from-source"}},
	}}
}

// cniPluginPackages maps plugin names to their packages in
// github.com/containernetworking/plugins.
var cniPluginPackages = map[string]string{
	"bridge": "main/bridge", "host-device": "main/host-device", "ipvlan": "main/ipvlan", "loopback": "main/loopback",
	"macvlan": "main/macvlan", "ptp": "main/ptp", "tap": "main/tap", "vlan": "main/vlan", "dummy": "main/dummy",
	"host-local": "ipam/host-local", "dhcp": "ipam/dhcp", "static": "ipam/static",
	"bandwidth": "meta/bandwidth", "firewall": "meta/firewall", "portmap": "meta/portmap", "sbr": "meta/sbr",
	"tuning": "meta/tuning", "vrf": "meta/vrf",
}

func cniModule(version string, plugins []string) (*goModule, error) {
	m := &goModule{dir: "cni-plugins-" + version, require: "github.com/containernetworking/plugins@" + version}
	for _, p := range plugins {
		sub, ok := cniPluginPackages[p]
		if !ok {
			return nil, &unknownPluginError{p}
		}
		m.targets = append(m.targets, goTarget{name: "cni-" + p, kind: lock.KindCNIPlugin, version: version,
			pkg:     "github.com/containernetworking/plugins/plugins/" + sub,
			ldflags: []string{"-X", "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=" + version}})
	}
	return m, nil
}

type unknownPluginError struct{ name string }

func (e *unknownPluginError) Error() string {
	names := make([]string, 0, len(cniPluginPackages))
	for n := range cniPluginPackages {
		names = append(names, n)
	}
	sort.Strings(names)
	return "runtime.cniPlugins.plugins: unknown plugin " + e.name + " (known: " + strings.Join(names, ", ") + ")"
}
