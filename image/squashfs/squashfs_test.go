package squashfs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBuildKeepsOwnersModesAndIsReproducible(t *testing.T) {
	for _, tool := range []string{"mksquashfs", "unsquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (squashfs-tools: scripts/setup-host.sh)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown test files (CI runs as root)")
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755))
	must(os.WriteFile(filepath.Join(tree, "usr/bin/tool"), []byte("#!/bin/sh\n"), 0o755))
	must(syscall.Chmod(filepath.Join(tree, "usr/bin/tool"), 0o4755)) // os.Chmod does not take the raw setuid bit
	must(os.WriteFile(filepath.Join(tree, "usr/bin/secret"), []byte("x"), 0o600))
	must(os.Chown(filepath.Join(tree, "usr/bin/secret"), 1000, 1001))
	must(os.Symlink("tool", filepath.Join(tree, "usr/bin/link")))

	opts := Options{SourceDateEpoch: 1700000000}
	a := filepath.Join(dir, "a.sqfs")
	must(Build(context.Background(), tree, a, opts))
	// Touch everything: times must not leak into the image.
	now := time.Now()
	must(os.Chtimes(filepath.Join(tree, "usr/bin/tool"), now, now))
	b := filepath.Join(dir, "b.sqfs")
	t.Setenv("SOURCE_DATE_EPOCH", "1") // must not reach mksquashfs (it refuses both)
	must(Build(context.Background(), tree, b, opts))
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Error("two builds of the same tree differ")
	}

	list := exec.Command("unsquashfs", "-lln", a)
	list.Env = append(os.Environ(), "TZ=UTC")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("unsquashfs -lln: %v", err)
	}
	listing := string(out)
	for _, want := range []string{
		"-rwsr-xr-x 0/0",       // setuid kept, owner root
		"-rw------- 1000/1001", // owner kept
		"lrwxrwxrwx 0/0",       // symlink
		"2023-11-14 22:13",     // SOURCE_DATE_EPOCH, UTC
		"squashfs-root/usr/bin/link -> tool",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("unsquashfs -lln lacks %q:\n%s", want, listing)
		}
	}
}
