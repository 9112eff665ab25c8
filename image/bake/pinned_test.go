package bake

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 10 item 9: cached artifacts were trusted by their name. A file
// whose bytes changed after it was stored fails the bake.
func TestPinnedFileIsRehashedAsItIsCopied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set owners (CI runs as root)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "kubelet")
	if err := os.WriteFile(src, []byte("the real kubelet"), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("the real kubelet"))
	pin := hex.EncodeToString(sum[:])
	root := filepath.Join(dir, "root")
	if err := placeFile(root, File{Path: "/usr/bin/kubelet", Source: src, Mode: 0o755, SHA256: pin}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte("a changed kubelet"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := placeFile(root, File{Path: "/usr/bin/kubelet", Source: src, Mode: 0o755, SHA256: pin})
	if err == nil || !strings.Contains(err.Error(), "not the pinned "+pin) || !strings.Contains(err.Error(), "run make artifacts") {
		t.Errorf("err = %v", err)
	}
}

// The cost of re-hashing at use: placing a 64 MiB artifact with and
// without its pin (docs/benchmarks.md).
func BenchmarkPlaceFile(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to set owners")
	}
	dir := b.TempDir()
	src := filepath.Join(dir, "artifact")
	data := make([]byte, 64<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o755); err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(data)
	for name, pin := range map[string]string{"unpinned": "", "pinned": hex.EncodeToString(sum[:])} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := placeFile(filepath.Join(dir, "root"), File{Path: "/a", Source: src, Mode: 0o755, SHA256: pin}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
