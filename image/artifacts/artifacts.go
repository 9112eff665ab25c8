// Package artifacts is the stable API the image builder uses to find every
// pinned input of a node image in the cache: the node's binaries, the CNI
// plugins and the OCI image archives, each checked against the lock.
//
//	set, err := artifacts.Load("configs/image.yaml")
//	kubeadm := set.Binaries["kubeadm"]          // absolute path in the cache
//	for _, im := range set.Images { im.Ref, im.Digest, im.Path }
package artifacts

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/lock"
	"kubeboot.dev/kubeboot/image/spec"
)

// Kinds of locked files (see package lock).
const (
	KindBinary    = lock.KindBinary
	KindCNIPlugin = lock.KindCNIPlugin
	KindRootfs    = lock.KindRootfs
	KindArchive   = lock.KindArchive
)

// NodeBinaries are installed on the node itself (/usr/local/bin or
// /usr/bin); the image builder can rely on each being in Set.Binaries.
var NodeBinaries = []string{"kubeadm", "kubelet", "kubectl", "crictl", "containerd", "containerd-shim-runc-v2", "ctr", "runc"}

// Image is an OCI archive in the cache, ready for `ctr images import`.
type Image struct {
	Ref    string // registry.k8s.io/pause:3.10.2
	Digest string // manifest digest, sha256:...
	Path   string // OCI archive
	// ArchiveSHA256 is the archive file's sha256 the lock pins (hex);
	// empty in locks written before it was recorded.
	ArchiveSHA256 string
}

// Set is a spec resolved against its lock and the cache.
type Set struct {
	Spec              *spec.ImageSpec
	Lock              *lock.Lock
	Cache             *fetch.Cache
	KubernetesVersion string
	// Binaries maps a binary name (kubeadm, kubelet, kube-apiserver, etcd,
	// containerd, runc, pause ...) to its path in the cache.
	Binaries map[string]string
	// CNIPlugins maps a plugin name (bridge, host-local ...) to its path;
	// install them into /opt/cni/bin under these names.
	CNIPlugins map[string]string
	// Images are sorted by Ref: the control-plane set, then extras.
	Images []Image
}

// Item is one pinned artifact and whether it is in the cache.
type Item struct {
	Kind    string // binary, cni-plugin, rootfs, image
	Name    string // binary name or image ref
	Version string
	Hash    string // sha256 hex (files) or manifest digest (images)
	Path    string
	Size    int64
	Cached  bool
}

// Load reads specPath, its lock (spec.LockPathFor) and checks that every
// artifact is in the default cache. It fails, naming what is missing and
// the command that fetches or builds it, when anything is absent.
func Load(specPath string) (*Set, error) {
	dir, err := fetch.DefaultDir()
	if err != nil {
		return nil, err
	}
	return LoadWithCache(specPath, dir)
}

// LoadWithCache is Load with an explicit cache directory.
func LoadWithCache(specPath, cacheDir string) (*Set, error) {
	set, items, err := Resolve(specPath, cacheDir)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, it := range items {
		if !it.Cached {
			missing = append(missing, it.Kind+" "+it.Name)
		}
	}
	if len(missing) > 0 {
		how := "kubeboot artifacts fetch --spec " + specPath
		if set.Spec.Source == spec.FromSource {
			how = "kubeboot artifacts build --from-source --spec " + specPath + " (or make artifacts)"
		}
		return nil, fmt.Errorf("%d pinned artifacts of %s are not in the cache %s: %s; run %s",
			len(missing), specPath, set.Cache.Dir, strings.Join(missing, ", "), how)
	}
	return set, nil
}

// Resolve is Load without the completeness check: it returns the set and
// every pinned item with its cache state (what `artifacts list` prints).
func Resolve(specPath, cacheDir string) (*Set, []Item, error) {
	s, err := spec.Load(specPath)
	if err != nil {
		return nil, nil, err
	}
	l, err := lock.Read(s.LockPath())
	if err != nil {
		return nil, nil, err
	}
	if l.KubernetesVersion != s.Kubernetes.Version {
		return nil, nil, fmt.Errorf("%s pins Kubernetes %s but %s asks for %s: re-run `kubeboot artifacts lock`", s.LockPath(), l.KubernetesVersion, specPath, s.Kubernetes.Version)
	}
	c, err := fetch.Open(cacheDir)
	if err != nil {
		return nil, nil, err
	}
	set := &Set{Spec: s, Lock: l, Cache: c, KubernetesVersion: l.KubernetesVersion,
		Binaries: map[string]string{}, CNIPlugins: map[string]string{}}
	var items []Item
	for _, f := range l.Files {
		p := c.FilePath(f.SHA256)
		st, err := os.Stat(p)
		cached := err == nil && st.Size() == f.Size
		items = append(items, Item{Kind: f.Kind, Name: f.Name, Version: f.Version, Hash: f.SHA256, Path: p, Size: f.Size, Cached: cached})
		switch f.Kind {
		case KindBinary:
			set.Binaries[f.Name] = p
		case KindCNIPlugin:
			set.CNIPlugins[strings.TrimPrefix(f.Name, "cni-")] = p
		}
	}
	for _, name := range NodeBinaries {
		if _, ok := set.Binaries[name]; !ok {
			return nil, nil, fmt.Errorf("%s: no locked binary %q (every node needs %s)", s.LockPath(), name, strings.Join(NodeBinaries, ", "))
		}
	}
	for _, p := range s.Runtime.CNIPlugins.Plugins {
		if _, ok := set.CNIPlugins[p]; !ok {
			return nil, nil, fmt.Errorf("%s: CNI plugin %q from %s is not locked: re-run `kubeboot artifacts lock`", s.LockPath(), p, specPath)
		}
	}
	for _, ref := range s.AllImages() {
		im, ok := l.Image(ref)
		if !ok {
			return nil, nil, fmt.Errorf("%s: image %s from %s is not locked: re-run `kubeboot artifacts lock`", s.LockPath(), ref, specPath)
		}
		p := c.ImagePath(im.Digest)
		st, err := os.Stat(p)
		cached := err == nil && (im.ArchiveSize == 0 || st.Size() == im.ArchiveSize)
		var size int64
		if err == nil {
			size = st.Size()
		}
		items = append(items, Item{Kind: "image", Name: ref, Version: ref[strings.LastIndex(ref, ":")+1:], Hash: im.Digest, Path: p, Size: size, Cached: cached})
		set.Images = append(set.Images, Image{Ref: ref, Digest: im.Digest, Path: p, ArchiveSHA256: im.ArchiveSHA256})
	}
	sort.Slice(set.Images, func(i, j int) bool { return set.Images[i].Ref < set.Images[j].Ref })
	return set, items, nil
}
