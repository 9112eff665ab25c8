package build

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/image/disk"
	"kubeboot.dev/kubeboot/nodepath"
)

// TestBuiltImage checks an image made by `kubeboot image build` with the
// real tools: sfdisk, fsck.vfat, unsquashfs, qemu-img. It is opt-in
// because building an image takes minutes: make e2e runs it with
// KUBEBOOT_TEST_IMAGE=out/node.raw.
func TestBuiltImage(t *testing.T) {
	img := os.Getenv("KUBEBOOT_TEST_IMAGE")
	if img == "" {
		t.Skip("set KUBEBOOT_TEST_IMAGE to a raw image from kubeboot image build (make e2e does)")
	}
	for _, tool := range []string{"sfdisk", "fsck.vfat", "unsquashfs", "dd", "e2fsck", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run scripts/setup-host.sh", tool)
		}
	}
	if out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput(); err != nil {
		t.Fatalf("sfdisk --verify %s: %v\n%s", img, err, out)
	}
	out, err := exec.Command("sfdisk", "-J", img).Output()
	if err != nil {
		t.Fatalf("sfdisk -J: %v", err)
	}
	var dump struct {
		PartitionTable struct {
			Label      string `json:"label"`
			Partitions []struct {
				Start, Size int64
				Type, Name  string
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		t.Fatal(err)
	}
	parts := dump.PartitionTable.Partitions
	want := []struct{ name, typ string }{{"ESP", string(disk.TypeESP)}, {"ROOT-A", string(disk.TypeRootX86_64)}, {"ROOT-B", string(disk.TypeRootX86_64)}, {"STATE", string(disk.TypeLinuxData)}}
	if dump.PartitionTable.Label != "gpt" || len(parts) != len(want) {
		t.Fatalf("want a GPT with ESP, ROOT-A, ROOT-B, STATE; sfdisk says:\n%s", out)
	}
	for i, w := range want {
		if parts[i].Name != w.name || !strings.EqualFold(parts[i].Type, w.typ) {
			t.Errorf("partition %d is %s %s, want %s %s", i+1, parts[i].Name, parts[i].Type, w.name, w.typ)
		}
	}
	if parts[1].Size != parts[2].Size {
		t.Errorf("ROOT-A has %d sectors, ROOT-B %d: want the same size", parts[1].Size, parts[2].Size)
	}
	st, _ := os.Stat(img)
	if parts[3].Start != parts[2].Start+parts[2].Size || parts[3].Size*512 < minStateSize || parts[3].Start+parts[3].Size != st.Size()/512-2048 {
		t.Errorf("STATE (sectors %d+%d) must follow ROOT-B, fill the disk up to its last MiB and hold at least %d MiB", parts[3].Start, parts[3].Size, minStateSize/disk.MiB)
	}

	dir := t.TempDir()
	stateImg := filepath.Join(dir, "state.img")
	if out, err := exec.Command("dd", "if="+img, "of="+stateImg, "bs=1M", "iflag=skip_bytes,count_bytes", "conv=sparse",
		"skip="+strconv.FormatInt(parts[3].Start*512, 10), "count="+strconv.FormatInt(parts[3].Size*512, 10), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd STATE: %v %s", err, out)
	}
	if out, err := exec.Command("e2fsck", "-fn", stateImg).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn on STATE: %v\n%s", err, out)
	}
	debugfs := func(req string) string {
		out, err := exec.Command("debugfs", "-R", req, stateImg).Output()
		if err != nil {
			t.Errorf("debugfs -R %q: %v", req, err)
		}
		return string(out)
	}
	if label, err := exec.Command("e2label", stateImg).Output(); err != nil || strings.TrimSpace(string(label)) != "STATE" {
		t.Errorf("STATE's file system label is %q (%v), want STATE", label, err)
	}
	if !strings.Contains(debugfs("ls /lib/kubeboot"), "state-seeded") {
		t.Error("STATE lacks lib/kubeboot/state-seeded: the initrd would copy the image's /var over it")
	}
	espImg := filepath.Join(dir, "esp.img")
	if out, err := exec.Command("dd", "if="+img, "of="+espImg, "bs=512", "skip="+strconv.FormatInt(parts[0].Start, 10),
		"count="+strconv.FormatInt(parts[0].Size, 10), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd ESP: %v %s", err, out)
	}
	if out, err := exec.Command("fsck.vfat", "-n", espImg).CombinedOutput(); err != nil {
		t.Errorf("fsck.vfat -n on the ESP: %v\n%s", err, out)
	}
	mdir := exec.Command("mdir", "-/", "-b", "-i", espImg, "::/")
	mdir.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := mdir.Output(); err != nil {
		t.Errorf("mdir on the ESP: %v", err)
	} else {
		for _, f := range []string{"::/EFI/BOOT/BOOTX64.EFI", "::/loader/loader.conf", "::/loader/entries/kubeboot-a.conf", "::/kubeboot/a/vmlinuz", "::/kubeboot/a/initrd.img"} {
			if !strings.Contains(strings.ToUpper(string(out)), strings.ToUpper(f)) {
				t.Errorf("ESP lacks %s:\n%s", f, out)
			}
		}
	}

	ls := exec.Command("unsquashfs", "-ll", "-o", strconv.FormatInt(parts[1].Start*512, 10), img)
	ls.Env = append(os.Environ(), "TZ=UTC")
	listing, err := ls.Output()
	if err != nil {
		t.Fatalf("unsquashfs -ll ROOT-A: %v", err)
	}
	entry := func(path string) string {
		re := regexp.MustCompile(`(?m)^(\S+) (\S+) .* squashfs-root` + regexp.QuoteMeta(path) + `( -> (\S+))?$`)
		m := re.FindStringSubmatch(string(listing))
		if m == nil {
			return ""
		}
		return m[1] + " " + m[2] + m[3]
	}
	checks := map[string]string{
		"/usr/bin/bootstrapd": "-rwxr-xr-x root/root",
		"/etc/systemd/system/multi-user.target.wants/bootstrapd.service": "lrwxrwxrwx root/root -> /lib/systemd/system/bootstrapd.service",
		"/etc/systemd/system/systemd-firstboot.service":                  "lrwxrwxrwx root/root -> /dev/null",
		"/etc/systemd/system/apt-daily.timer":                            "lrwxrwxrwx root/root -> /dev/null",
		"/etc/systemd/system/apt-daily-upgrade.timer":                    "lrwxrwxrwx root/root -> /dev/null",
		"/etc/machine-id": "-rw-r--r-- root/root",
		// Homes on STATE (the root is read-only), and the console banner.
		"/home":                          "lrwxrwxrwx root/root -> var/home",
		"/root":                          "lrwxrwxrwx root/root -> var/roothome",
		"/var/home":                      "drwxr-xr-x root/root",
		"/var/roothome":                  "drwx------ root/root",
		"/etc/issue.d/50-kubeboot.issue": "lrwxrwxrwx root/root -> /run/kubeboot/issue",
	}
	if strings.Contains(string(listing), "squashfs-root/usr/bin/kubelet") {
		for _, b := range []string{"kubeadm", "kubelet", "kubectl", "crictl", "containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
			checks["/usr/bin/"+b] = "-rwxr-xr-x root/root"
		}
		checks["/etc/systemd/system/multi-user.target.wants/kubelet.service"] = "lrwxrwxrwx root/root -> /lib/systemd/system/kubelet.service"
		checks["/etc/systemd/system/multi-user.target.wants/containerd.service"] = "lrwxrwxrwx root/root -> /lib/systemd/system/containerd.service"
		checks["/opt/cni/bin/bridge"] = "-rwxr-xr-x root/root"
		// The pod network's CNI plugin; its config comes from the
		// DaemonSet, not the image (docs/pod-network.md).
		checks["/opt/cni/bin/flannel"] = "-rwxr-xr-x root/root"
		checks["/etc/cni/net.d"] = "drwxr-xr-x root/root"
		checks[nodepath.ImagesIndex] = "-rw-r--r-- root/root"
		checks[images.HostsPath("registry.k8s.io")] = "-rw-r--r-- root/root"
		// containerd's store with every pinned image is on STATE.
		ls := debugfs("ls /lib/containerd")
		for _, d := range []string{"io.containerd.metadata.v1.bolt", "io.containerd.content.v1.content", "io.containerd.snapshotter.v1.overlayfs"} {
			if !strings.Contains(ls, d) {
				t.Errorf("STATE's lib/containerd lacks %s:\n%s", d, ls)
			}
		}
	} else {
		t.Log("image built with --os-only: no Kubernetes binaries to check")
	}
	// firewalld (configs/image.yaml installs it) is enabled by its Debian
	// package; bootstrapd's firewall backend auto relies on it running.
	if entry("/usr/lib/systemd/system/firewalld.service") != "" {
		checks["/etc/systemd/system/multi-user.target.wants/firewalld.service"] = "lrwxrwxrwx root/root -> /usr/lib/systemd/system/firewalld.service"
	}
	// sshd (keys only; skipped until the node made its host keys) and
	// timesyncd, from configs/image.yaml's packages (docs/image.md).
	if entry("/usr/sbin/sshd") != "" {
		checks["/etc/ssh/sshd_config.d/50-kubeboot.conf"] = "-rw-r--r-- root/root"
		checks["/usr/lib/systemd/system/ssh.service.d/50-kubeboot.conf"] = "-rw-r--r-- root/root"
		checks["/etc/systemd/system/multi-user.target.wants/ssh.service"] = "lrwxrwxrwx root/root -> /usr/lib/systemd/system/ssh.service"
	}
	if entry("/usr/lib/systemd/system/systemd-timesyncd.service") != "" {
		checks["/etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service"] = "lrwxrwxrwx root/root -> /usr/lib/systemd/system/systemd-timesyncd.service"
	}
	if cfg := os.Getenv("KUBEBOOT_TEST_MACHINE_CONFIG"); cfg != "" {
		// A per-node image: the config is baked where bootstrapd reads it,
		// readable by root only (it may hold join credentials).
		checks["/usr/share/kubeboot/machine.yaml"] = "-rw------- root/root"
		want, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := exec.Command("unsquashfs", "-cat", "-o", strconv.FormatInt(parts[1].Start*512, 10), img, "/usr/share/kubeboot/machine.yaml").Output()
		if err != nil || string(got) != string(want) {
			t.Errorf("baked machine config differs from %s (%v)", cfg, err)
		}
	} else if entry("/usr/share/kubeboot/machine.yaml") != "" {
		t.Error("a generic image carries a machine config")
	}
	for p, w := range checks {
		if got := entry(p); got != w {
			t.Errorf("%s in ROOT-A: %q, want %q", p, got, w)
		}
	}
	for _, gone := range []string{"/etc/hostname", "/etc/resolv.conf", "/etc/apt/sources.list", "/var/lib/apt/lists/lock",
		"/etc/cni/net.d/10-containerd-net.conflist"} {
		if entry(gone) != "" {
			t.Errorf("%s is in the image", gone)
		}
	}
	if m := regexp.MustCompile(`(?m)^\S+ \S+ .* squashfs-root/etc/ssh/ssh_host_\S+$`).Find(listing); m != nil {
		t.Errorf("SSH host key in the image: %s", m)
	}

	q := strings.TrimSuffix(img, filepath.Ext(img)) + ".qcow2"
	if _, err := os.Stat(q); err == nil {
		if out, err := exec.Command("qemu-img", "check", q).CombinedOutput(); err != nil {
			t.Errorf("qemu-img check %s: %v\n%s", q, err, out)
		}
	}
}
