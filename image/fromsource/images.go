package fromsource

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/lock"
	"kubeboot.dev/kubeboot/image/oci"
)

// ImageRecipe says how one control-plane image is assembled from locked
// binaries. Exported so tests and the import check use the same table.
type ImageRecipe struct {
	// Binaries maps a path in the image to a locked binary name.
	Binaries   map[string]string
	Entrypoint []string
	User       string
	// VersionArgs make the entrypoint print its version and exit 0.
	VersionArgs []string
	// Userland adds kube-proxy's iptables/nft/conntrack from Debian.
	Userland bool
	// Busybox is Debian's static BusyBox and its applet links (the test
	// image); the image's tag must be BusyBox's version.
	Busybox bool
	Dirs    []string
}

// Recipes are keyed by the last element of the image repository.
var Recipes = map[string]ImageRecipe{
	"kube-apiserver":          kubeImage("kube-apiserver"),
	"kube-controller-manager": kubeImage("kube-controller-manager"),
	"kube-scheduler":          kubeImage("kube-scheduler"),
	"kube-proxy": func() ImageRecipe {
		r := kubeImage("kube-proxy")
		r.Userland = true
		return r
	}(),
	// kubeadm's etcd static pod runs `etcd` by name with its data in
	// /var/lib/etcd.
	"etcd": {Binaries: map[string]string{"/usr/local/bin/etcd": "etcd", "/usr/local/bin/etcdctl": "etcdctl"},
		Entrypoint: []string{"/usr/local/bin/etcd"}, VersionArgs: []string{"--version"}, Dirs: []string{"/var/lib/etcd", "/var/etcd"}},
	"coredns": {Binaries: map[string]string{"/coredns": "coredns"}, Entrypoint: []string{"/coredns"}, VersionArgs: []string{"-version"}},
	// The sandbox process needs no privileges; upstream also runs it as
	// 65535.
	"pause": {Binaries: map[string]string{"/pause": "pause"}, Entrypoint: []string{"/pause"}, User: "65535:65535", VersionArgs: []string{"-v"}},
	// Upstream's paths: the DaemonSet runs /opt/bin/flanneld, and its init
	// container /opt/bin/install-conf to put the CNI config on the host.
	"flannel": {Binaries: map[string]string{"/opt/bin/flanneld": "flanneld", "/opt/bin/install-conf": "flannel-install-conf"},
		Entrypoint: []string{"/opt/bin/flanneld"}, VersionArgs: []string{"--version"}, Userland: true},
	// The end-to-end tests' pod image (images.extras, from: built). With
	// busybox as the entrypoint, a pod's args alone name the applet.
	"busybox": {Entrypoint: []string{"/bin/busybox"}, VersionArgs: []string{"--help"}, Busybox: true},
}

func kubeImage(name string) ImageRecipe {
	return ImageRecipe{Binaries: map[string]string{"/usr/local/bin/" + name: name},
		Entrypoint: []string{"/usr/local/bin/" + name}, VersionArgs: []string{"--version"}}
}

// RecipeFor returns the recipe for an image reference.
func RecipeFor(ref string) (ImageRecipe, bool) {
	repo := ref[:strings.LastIndex(ref, ":")]
	r, ok := Recipes[repo[strings.LastIndex(repo, "/")+1:]]
	return r, ok
}

// assemble builds the image ref from binaries already in l and the cache,
// stores its OCI archive in the cache and returns its lock entry.
func (b *Builder) assemble(l *lock.Lock, ref string) (lock.Image, error) {
	r, ok := RecipeFor(ref)
	if !ok {
		names := slices.Sorted(maps.Keys(Recipes))
		return lock.Image{}, fmt.Errorf("no recipe to assemble %s from source (known repositories ending in: %s)", ref, strings.Join(names, ", "))
	}
	task := b.Progress.Start("assemble "+ref, -1)
	im, err := AssembleImage(b.Cache, l, ref, r)
	task.Done(err)
	return im, err
}

// rootfsOf finds the locked Debian rootfs called rootfs-<suite>-<name>.
func rootfsOf(l *lock.Lock, name string) (lock.File, error) {
	for _, f := range l.Files {
		if f.Kind == lock.KindRootfs && strings.HasSuffix(f.Name, "-"+name) {
			return f, nil
		}
	}
	return lock.File{}, fmt.Errorf("no Debian rootfs %q in the lock", name)
}

// AssembleImage builds ref per recipe from the locked files in cache and
// writes its OCI archive into the cache.
func AssembleImage(c *fetch.Cache, l *lock.Lock, ref string, r ImageRecipe) (lock.Image, error) {
	var entries []oci.Entry
	for at, name := range r.Binaries {
		f, ok := l.File(name)
		if !ok {
			return lock.Image{}, fmt.Errorf("%s: binary %s is not built", ref, name)
		}
		entries = append(entries, oci.Entry{Path: at, Source: c.FilePath(f.SHA256), Mode: 0o755})
	}
	for _, d := range r.Dirs {
		entries = append(entries, oci.Entry{Path: d, Dir: true})
	}
	if r.Userland {
		rootfs, err := rootfsOf(l, userlandRootfs)
		if err != nil {
			return lock.Image{}, fmt.Errorf("%s: %w", ref, err)
		}
		more, err := kubeProxyUserland(c.FilePath(rootfs.SHA256))
		if err != nil {
			return lock.Image{}, err
		}
		entries = append(entries, more...)
	}
	if r.Busybox {
		rootfs, err := rootfsOf(l, busyboxRootfs)
		if err != nil {
			return lock.Image{}, fmt.Errorf("%s: %w", ref, err)
		}
		more, err := busyboxImage(c.FilePath(rootfs.SHA256), ref[strings.LastIndex(ref, ":")+1:])
		if err != nil {
			return lock.Image{}, fmt.Errorf("%s: %w", ref, err)
		}
		entries = append(entries, more...)
	}
	img, err := oci.Build(c.TempDir(), oci.Config{Entrypoint: r.Entrypoint, Env: []string{oci.DefaultPath}, User: r.User}, entries)
	if err != nil {
		return lock.Image{}, fmt.Errorf("%s: %w", ref, err)
	}
	defer img.Close()
	d, err := img.Digest()
	if err != nil {
		return lock.Image{}, err
	}
	// Same digest, same archive bytes: an existing archive is reused.
	p := c.ImagePath(d.String())
	if _, err := os.Stat(p); err != nil {
		if p, err = c.PutImage(img, ref, d.String()); err != nil {
			return lock.Image{}, err
		}
	}
	info, err := os.Stat(p)
	if err != nil {
		return lock.Image{}, err
	}
	sha, _, err := fetch.HashFile(p)
	if err != nil {
		return lock.Image{}, err
	}
	return lock.Image{Ref: ref, Source: "built", Digest: d.String(), ArchiveSHA256: sha, ArchiveSize: info.Size()}, nil
}
