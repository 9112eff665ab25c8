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

// flannelModule builds flanneld and install-conf (the atomic file copy the
// DaemonSet's init container uses to install the CNI config, so the image
// needs no shell). Upstream links flanneld statically with cgo on amd64 (the
// udp backend has C code); so does this recipe (glibc's libc.a, which
// pause's static build needs too). The tencent-vpc backend is
// left out: the proxy does not serve its Tencent Cloud SDK.
func flannelModule(version string) *goModule {
	return &goModule{dir: "flannel-" + version, require: "github.com/flannel-io/flannel@" + version,
		patch: sourcePatch{file: "main.go", drops: []string{"github.com/flannel-io/flannel/pkg/backend/tencentvpc"}},
		targets: []goTarget{
			{name: "flanneld", kind: lock.KindBinary, version: version, pkg: "github.com/flannel-io/flannel",
				cgo: true, static: true, tags: []string{"netgo", "osusergo"},
				ldflags: []string{"-X", "github.com/flannel-io/flannel/pkg/version.Version=" + version}},
			{name: "flannel-install-conf", kind: lock.KindBinary, version: version, pkg: "github.com/flannel-io/flannel/cmd/install_conf"},
		}}
}

// flannelCNIModule builds the flannel CNI plugin, which reads the node's
// /run/flannel/subnet.env and delegates to the bridge plugin.
func flannelCNIModule(version string) *goModule {
	return &goModule{dir: "flannel-cni-" + version, require: "github.com/containernetworking/plugins@" + version, targets: []goTarget{
		{name: "cni-flannel", kind: lock.KindCNIPlugin, version: version,
			pkg:     "github.com/containernetworking/plugins/plugins/meta/flannel",
			ldflags: []string{"-X", "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=" + version}},
	}}
}
