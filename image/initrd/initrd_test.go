package initrd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestKernelVersion(t *testing.T) {
	root := t.TempDir()
	if _, err := KernelVersion(root); err == nil {
		t.Error("no /usr/lib/modules: no error")
	}
	os.MkdirAll(filepath.Join(root, "usr/lib/modules/6.12.118+deb13-amd64"), 0o755)
	if v, err := KernelVersion(root); err != nil || v != "6.12.118+deb13-amd64" {
		t.Errorf("KernelVersion = %q, %v", v, err)
	}
	os.MkdirAll(filepath.Join(root, "usr/lib/modules/6.12.119+deb13-amd64"), 0o755)
	if _, err := KernelVersion(root); err == nil || !strings.Contains(err.Error(), "2 kernels") {
		t.Errorf("two kernels: err = %v", err)
	}
}

// TestBuildFromRootfs builds a real initrd from a Debian rootfs made by the
// image builder (its rootfs step's tree, e.g.
// ~/.cache/kubeboot/image/rootfs/<key>/tree) with the repository's
// initramfs files, and lists it with the rootfs's own lsinitramfs.
func TestBuildFromRootfs(t *testing.T) {
	rootfs := os.Getenv("KUBEBOOT_TEST_ROOTFS")
	if rootfs == "" {
		t.Skip("set KUBEBOOT_TEST_ROOTFS to a rootfs tree from kubeboot image build (needs root)")
	}
	out := filepath.Join(t.TempDir(), "initrd.img")
	if err := Build(context.Background(), rootfs, "../../overlays", out, 315532800); err != nil {
		t.Fatal(err)
	}
	// lsinitramfs runs from the rootfs (it knows the initrd's format), on a
	// copy in a tmpfs of a private mount namespace: the rootfs is not written.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
		`mount -t tmpfs lsinitramfs "$1/tmp" && cp "$2" "$1/tmp/initrd.img" && chroot "$1" lsinitramfs /tmp/initrd.img`,
		"sh", rootfs, out)
	list, err := cmd.Output()
	if err != nil {
		t.Fatalf("lsinitramfs: %v", err)
	}
	for _, want := range []string{"scripts/local-bottom/kubeboot", "usr/bin/systemd-repart", "usr/sbin/mkfs.ext4", "usr/sbin/resize2fs",
		"usr/lib/kubeboot/repart.d/50-state.conf", "squashfs.ko", "overlay.ko"} {
		if !strings.Contains(string(list), want) {
			t.Errorf("initrd lacks %s", want)
		}
	}
}
