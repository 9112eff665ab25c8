package bake

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func write(t *testing.T, root, rel, data string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// TestBake runs the real systemctl --root against a small rootfs that has
// the machine-specific files mmdebstrap leaves behind.
func TestBake(t *testing.T) {
	if _, err := exec.LookPath("systemctl"); err != nil {
		t.Skip("systemctl not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to set owners (CI runs as root)")
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for rel, data := range map[string]string{
		"etc/machine-id":                  "",
		"etc/hostname":                    "buildhost\n",
		"etc/resolv.conf":                 "nameserver 10.255.255.53\n",
		"etc/ssh/ssh_host_ed25519_key":    "PRIVATE",
		"etc/ssh/sshd_config":             "# kept\n",
		"etc/apt/sources.list":            "deb http://mirror.invalid/debian trixie main\n",
		"etc/passwd-":                     "root:x:0:0::/root:/bin/sh\n",
		"etc/passwd":                      "root:x:0:0::/root:/bin/sh\n",
		"var/lib/apt/lists/deb_Packages":  "x",
		"var/log/apt/history.log":         "x",
		"var/cache/ldconfig/aux-cache":    "x",
		"var/lib/dpkg/status":             "kept",
		"boot/initrd.img-6.12":            "debian's initrd",
		"boot/vmlinuz-6.12":               "kernel",
		"usr/lib/systemd/system/.keepdir": "",
		"root/.bashrc":                    "# root's\n",
	} {
		write(t, rootfs, rel, data, 0o644)
	}
	overlay := filepath.Join(dir, "overlay")
	write(t, overlay, "usr/lib/systemd/system/demo.service", "[Service]\nExecStart=/usr/bin/demo\n[Install]\nWantedBy=multi-user.target\n", 0o644)
	write(t, overlay, "usr/lib/kubeboot/hook", "#!/bin/sh\n", 0o755)
	write(t, overlay, "opt/cni/bin/.keep", "# placeholder\n", 0o644)

	dst := filepath.Join(dir, "tree")
	err := Bake(context.Background(), rootfs, dst, Options{
		Overlays: []string{overlay},
		Files: []File{
			{Path: "/usr/bin/demo", Data: []byte("#!/bin/sh\n"), Mode: 0o755},
			{Path: "/usr/share/kubeboot/machine.yaml", Data: []byte("secret: x\n"), Mode: 0o600},
		},
		Enable: []string{"demo.service"},
		Mask:   []string{"systemd-firstboot.service"},
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, gone := range []string{"etc/hostname", "etc/resolv.conf", "etc/ssh/ssh_host_ed25519_key", "etc/apt/sources.list",
		"etc/passwd-", "var/lib/apt/lists/deb_Packages", "var/log/apt", "var/cache/ldconfig/aux-cache", "boot/initrd.img-6.12", "opt/cni/bin/.keep"} {
		if _, err := os.Lstat(filepath.Join(dst, gone)); !os.IsNotExist(err) {
			t.Errorf("%s is still in the image (%v)", gone, err)
		}
	}
	for _, kept := range []string{"etc/ssh/sshd_config", "etc/passwd", "var/lib/dpkg/status", "boot/vmlinuz-6.12", "opt/cni/bin", "var/log/journal"} {
		if _, err := os.Lstat(filepath.Join(dst, kept)); err != nil {
			t.Errorf("%s is missing: %v", kept, err)
		}
	}
	if id, _ := os.ReadFile(filepath.Join(dst, "etc/machine-id")); string(id) != "uninitialized\n" {
		t.Errorf("machine-id = %q, want uninitialized (first-boot semantics)", id)
	}
	link, err := os.Readlink(filepath.Join(dst, "etc/systemd/system/multi-user.target.wants/demo.service"))
	if err != nil || link != "/usr/lib/systemd/system/demo.service" {
		t.Errorf("demo.service not enabled: %q %v", link, err)
	}
	if link, err := os.Readlink(filepath.Join(dst, "etc/systemd/system/systemd-firstboot.service")); err != nil || link != "/dev/null" {
		t.Errorf("systemd-firstboot.service not masked: %q %v", link, err)
	}
	for rel, mode := range map[string]os.FileMode{"usr/bin/demo": 0o755, "usr/share/kubeboot/machine.yaml": 0o600, "usr/lib/kubeboot/hook": 0o755, "usr/lib/systemd/system/demo.service": 0o644} {
		st, err := os.Stat(filepath.Join(dst, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s mode %o, want %o", rel, st.Mode().Perm(), mode)
		}
	}
	// Homes on STATE: links into /var, the contents moved along.
	for link, dir := range map[string]string{"home": "var/home", "root": "var/roothome"} {
		if got, err := os.Readlink(filepath.Join(dst, link)); err != nil || got != dir {
			t.Errorf("/%s -> %q (%v), want %s", link, got, err, dir)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dst, "var/roothome/.bashrc")); string(data) != "# root's\n" {
		t.Errorf("root's files did not move to var/roothome: %q", data)
	}
	for dir, mode := range map[string]os.FileMode{"var/home": 0o755, "var/roothome": 0o700} {
		if st, err := os.Lstat(filepath.Join(dst, dir)); err != nil || !st.IsDir() || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want a directory %o", dir, st, err, mode)
		}
	}
	// The cached rootfs is never changed.
	if _, err := os.Stat(filepath.Join(rootfs, "etc/hostname")); err != nil {
		t.Error("Bake changed its input rootfs")
	}
	if err := Bake(context.Background(), rootfs, dst, Options{}); err == nil {
		t.Error("Bake into an existing directory was accepted")
	}
}
