package statefs_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/statefs"
)

// rootfs is a Debian rootfs from the image builder's cache: statefs runs
// its mke2fs. Skips when no image was built on this machine.
func rootfs(t *testing.T) string {
	t.Helper()
	dir, err := fetch.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	trees, _ := filepath.Glob(filepath.Join(dir, "image/rootfs/*/tree"))
	for _, tr := range trees {
		if _, err := os.Stat(filepath.Join(tr, "usr/sbin/mke2fs")); err == nil {
			return tr
		}
	}
	t.Skipf("no cached Debian rootfs with e2fsprogs under %s/image/rootfs: run make image", dir)
	return ""
}

// tree makes a /var-like tree with what a containerd store holds: owners,
// a hard link, a symlink, a whiteout (0/0 character device) and an
// overlayfs opaque xattr.
func tree(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: device nodes, owners and trusted xattrs")
	}
	d := filepath.Join(t.TempDir(), "var")
	fs := filepath.Join(d, "lib/containerd/snapshots/1/fs")
	for _, c := range [][]string{
		{"mkdir", "-p", fs + "/etc", d + "/log/journal"},
		{"sh", "-c", "echo data > " + fs + "/etc/file && ln " + fs + "/etc/file " + fs + "/etc/link && ln -s file " + fs + "/etc/sym"},
		{"mknod", fs + "/etc/gone", "c", "0", "0"},
		{"chown", "1000:1000", fs + "/etc/file"},
		{"touch", "-d", "2030-01-01", fs + "/etc/file"},
		// Layers carry times before SOURCE_DATE_EPOCH, which mke2fs keeps.
		{"touch", "-h", "-d", "1970-01-02", fs + "/etc/sym"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	if err := unix.Setxattr(fs+"/etc", "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	return d
}

func build(t *testing.T, rootfs, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "state.img")
	if err := statefs.Build(context.Background(), statefs.Options{
		Rootfs: rootfs, Var: dir, Out: out, Size: 64 << 20,
		UUID: "5b1f0c9e-2d7a-4c1e-9a51-6f0f7e3c2a11", HashSeed: "0b5a2d8e-77c4-4f5e-8d0a-3c9b1e6f4a22", SourceDateEpoch: 315532800,
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBuildIsReproducibleAndKeepsTheTree(t *testing.T) {
	r := rootfs(t)
	d := tree(t)
	a := build(t, r, d)
	// Another copy of the tree, made later (other ctimes and inode
	// numbers), whose files were read since (other access times).
	d2 := filepath.Join(t.TempDir(), "var")
	if out, err := exec.Command("cp", "-a", d, d2).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if err := os.Chtimes(filepath.Join(d2, "lib/containerd/snapshots/1/fs/etc/file"), time.Unix(3600, 0), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if sa, sb := sum(t, a), sum(t, build(t, r, d2)); sa != sb {
		t.Errorf("same tree, two images: %s / %s", sa, sb)
	}
	if out, err := exec.Command("e2fsck", "-fn", a).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	debugfs := func(req string) string {
		out, err := exec.Command("debugfs", "-R", req, a).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs %s: %v %s", req, err, out)
		}
		return string(out)
	}
	file := debugfs("stat /lib/containerd/snapshots/1/fs/etc/file")
	for _, want := range []string{"User:  1000   Group:  1000", "Links: 2", "mtime: 0x12cea600:00000000 -- Tue Jan  1 00:00:00 1980", "ctime: 0x12cea600:00000000"} {
		if !strings.Contains(file, want) {
			t.Errorf("stat etc/file lacks %q:\n%s", want, file)
		}
	}
	if gone := debugfs("stat /lib/containerd/snapshots/1/fs/etc/gone"); !strings.Contains(gone, "Type: character special") {
		t.Errorf("the whiteout is not a character device:\n%s", gone)
	}
	if x := debugfs("ea_get /lib/containerd/snapshots/1/fs/etc trusted.overlay.opaque"); !strings.Contains(x, "y") {
		t.Errorf("the opaque xattr is lost: %s", x)
	}
	if ls := debugfs("ls /lib/kubeboot"); !strings.Contains(ls, "state-seeded") {
		t.Errorf("no seeded marker:\n%s", ls)
	}
	if label, _ := exec.Command("e2label", a).Output(); strings.TrimSpace(string(label)) != statefs.Label {
		t.Errorf("label %q", label)
	}
}

func sum(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
