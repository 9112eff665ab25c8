// Package containerdtest gives tests a real containerd: our own pinned
// build from the artifact cache (configs/image.yaml), on a private root,
// socket and mount namespace (image/privatecontainerd), stopped by its pid
// when the test ends; and small OCI archives to import into it.
package containerdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/image/artifacts"
	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/oci"
	"kubeboot.dev/kubeboot/image/privatecontainerd"
)

// locked resolves configs/image.yaml against the artifact cache, skipping
// the test when it does not run as root.
func locked(tb testing.TB) (*artifacts.Set, map[string]bool) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: containerd mounts snapshots in its own mount namespace")
	}
	_, file, _, _ := runtime.Caller(0)
	spec := filepath.Join(filepath.Dir(file), "../../configs/image.yaml")
	dir, err := fetch.DefaultDir()
	if err != nil {
		tb.Fatal(err)
	}
	set, items, err := artifacts.Resolve(spec, dir)
	if err != nil {
		tb.Fatal(err)
	}
	cached := map[string]bool{}
	for _, it := range items {
		cached[it.Name] = it.Cached
	}
	return set, cached
}

// Binaries returns the cached paths of names (containerd, ctr, crictl,
// runc, ...) from configs/image.yaml's lock, skipping the test with the
// reason when one is not built or the test does not run as root.
func Binaries(tb testing.TB, names ...string) map[string]string {
	tb.Helper()
	set, cached := locked(tb)
	out := map[string]string{}
	for _, n := range names {
		p, ok := set.Binaries[n]
		if !ok || !cached[n] {
			tb.Skipf("%s is not built in %s: run make artifacts", n, set.Cache.Dir)
		}
		out[n] = p
	}
	return out
}

// LockedImages returns the index entries of configs/image.yaml's pinned
// images and their archives in the cache, skipping the test when one is
// not built.
func LockedImages(tb testing.TB) ([]images.Entry, []string) {
	tb.Helper()
	set, cached := locked(tb)
	var entries []images.Entry
	var paths []string
	for _, im := range set.Images {
		if !cached[im.Ref] {
			tb.Skipf("image %s is not built in %s: run make artifacts", im.Ref, set.Cache.Dir)
		}
		entries = append(entries, images.Entry{Ref: im.Ref, Digest: im.Digest, File: images.FileName(im.Ref)})
		paths = append(paths, im.Path)
	}
	return entries, paths
}

// Start runs containerd (CRI off unless o.CRI) on root and stops it when
// the test ends. o.Binaries defaults to containerd alone.
func Start(tb testing.TB, o privatecontainerd.Options) *privatecontainerd.Daemon {
	tb.Helper()
	if o.Binaries == nil {
		o.Binaries = Binaries(tb, "containerd")
	}
	d, err := privatecontainerd.Start(context.Background(), o)
	if err != nil {
		if d != nil {
			d.Stop()
		}
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := d.Stop(); err != nil {
			tb.Error(err)
		}
	})
	return d
}

// Archive assembles a one-layer image tagged ref holding files (path ->
// contents) and writes it as an OCI archive in dir, named as the builder
// names archives. It returns the index entry and the archive's path.
func Archive(tb testing.TB, dir, ref string, files map[string]string) (images.Entry, string) {
	tb.Helper()
	var entries []oci.Entry
	for p, data := range files {
		entries = append(entries, oci.Entry{Path: p, Data: []byte(data)})
	}
	img, err := oci.Build(tb.TempDir(), oci.Config{Entrypoint: []string{"/bin/true"}, Env: []string{oci.DefaultPath}}, entries)
	if err != nil {
		tb.Fatal(err)
	}
	defer img.Close()
	e := images.Entry{Ref: ref, File: images.FileName(ref)}
	p := filepath.Join(dir, e.File)
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	d, err := oci.WriteArchive(f, img, ref)
	if err != nil {
		tb.Fatal(err)
	}
	e.Digest = d.String()
	return e, p
}

// StartCRIWithHosts runs containerd with the CRI plugin in a network
// namespace (inNS runs a function there, as stage.Env.InNetNS does),
// reading registry hosts from hostsDir as the node's config_path does, and
// stops it when the test ends. crictl runs crictl (one of bins) against it.
func StartCRIWithHosts(tb testing.TB, bins map[string]string, inNS func(func() error) error, hostsDir string) (d *privatecontainerd.Daemon, crictl func(args ...string) (string, error)) {
	tb.Helper()
	err := inNS(func() (err error) {
		d, err = privatecontainerd.Start(context.Background(), privatecontainerd.Options{
			Binaries: bins, Root: filepath.Join(tb.TempDir(), "root"), CRI: true,
			Config: fmt.Sprintf("\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = %q\n", hostsDir),
		})
		return err
	})
	if d != nil {
		tb.Cleanup(func() {
			if err := d.Stop(); err != nil {
				tb.Error(err)
			}
		})
	}
	if err != nil {
		tb.Fatal(err)
	}
	return d, func(args ...string) (string, error) {
		out, err := exec.Command(bins["crictl"], append([]string{"--runtime-endpoint", "unix://" + d.Socket, "--image-endpoint", "unix://" + d.Socket, "--timeout", "30s"}, args...)...).CombinedOutput()
		return string(out), err
	}
}
