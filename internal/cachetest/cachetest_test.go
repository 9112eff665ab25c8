package cachetest

import (
	"path/filepath"
	"testing"

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/lock"
)

// File finds the file the lock pins: its content hashes to the locked sha256.
func TestFileIsTheLockedOne(t *testing.T) {
	p := File(t, "kubeadm")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	l, err := lock.Read(filepath.Join(root, LockFile))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := l.File("kubeadm")
	got, _, err := fetch.HashFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != want.SHA256 {
		t.Errorf("%s hashes to %s, the lock pins %s", p, got, want.SHA256)
	}
}
