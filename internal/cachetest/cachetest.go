// Package cachetest finds the pinned artifacts (kubeadm, kubelet,
// containerd, ...) of configs/image.lock in the artifact cache, so tests run
// the real binaries, and skips the test with the reason when one is not
// built yet.
package cachetest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/lock"
)

// LockFile is the repository's lock, relative to the module root.
const LockFile = "configs/image.lock"

// File returns the cache path of the locked file called name (a name in
// configs/image.lock, e.g. "kubeadm"). It skips the test when the file is
// not in the cache ($XDG_CACHE_HOME/kubeboot or ~/.cache/kubeboot) and
// fails it when the lock has no such name or the cached file has the
// wrong size.
func File(tb testing.TB, name string) string {
	tb.Helper()
	_, p := locate(tb, name)
	return p
}

// Image returns the locked manifest digest of the image ref (a reference
// in configs/image.lock, e.g. "registry.k8s.io/pause:3.10.2") and the
// cache path of its OCI archive, with File's skips and failures.
func Image(tb testing.TB, ref string) (digest, path string) {
	tb.Helper()
	l, dir := readLock(tb)
	im, ok := l.Image(ref)
	if !ok {
		tb.Fatalf("%s pins no image %q", LockFile, ref)
	}
	p := (&fetch.Cache{Dir: dir}).ImagePath(im.Digest)
	st, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		tb.Skipf("%s (%.19s) is not in the artifact cache %s yet: run make artifacts", ref, im.Digest, dir)
	}
	if err != nil {
		tb.Fatal(err)
	}
	if im.ArchiveSize != 0 && st.Size() != im.ArchiveSize {
		tb.Fatalf("%s in the artifact cache has %d bytes, the lock says %d: the cache is damaged", p, st.Size(), im.ArchiveSize)
	}
	return im.Digest, p
}

// readLock reads the repository's lock and finds the cache, skipping the
// test without a cache.
func readLock(tb testing.TB) (*lock.Lock, string) {
	tb.Helper()
	root, err := moduleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	l, err := lock.Read(filepath.Join(root, LockFile))
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := fetch.DefaultDir()
	if err != nil {
		tb.Skipf("no artifact cache: %v", err)
	}
	return l, dir
}

// locate returns the lock entry called name and its cache path, with
// File's skips and failures.
func locate(tb testing.TB, name string) (lock.File, string) {
	tb.Helper()
	l, dir := readLock(tb)
	f, ok := l.File(name)
	if !ok {
		tb.Fatalf("%s pins no file named %q", LockFile, name)
	}
	p := (&fetch.Cache{Dir: dir}).FilePath(f.SHA256)
	st, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		tb.Skipf("%s %s (sha256 %.12s) is not in the artifact cache %s yet: run make artifacts", name, f.Version, f.SHA256, dir)
	}
	if err != nil {
		tb.Fatal(err)
	}
	if st.Size() != f.Size {
		tb.Fatalf("%s in the artifact cache has %d bytes, the lock says %d: the cache is damaged", p, st.Size(), f.Size)
	}
	return f, p
}

// moduleRoot is the nearest directory above the working directory (a
// package directory under go test) that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
