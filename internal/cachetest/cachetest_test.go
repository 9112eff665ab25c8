package cachetest

import (
	"testing"

	"kubeboot.dev/kubeboot/image/fetch"
)

// File finds the file the lock pins: its content hashes to the locked sha256.
func TestFileIsTheLockedOne(t *testing.T) {
	f, p := locate(t, "kubeadm")
	if got := File(t, "kubeadm"); got != p {
		t.Fatalf("File = %s, locate = %s", got, p)
	}
	sum, _, err := fetch.HashFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if sum != f.SHA256 {
		t.Errorf("%s hashes to %s, the lock pins %s", p, sum, f.SHA256)
	}
}
