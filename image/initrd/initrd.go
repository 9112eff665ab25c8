// Package initrd builds the node's initramfs with the rootfs's own
// initramfs-tools, so kernel, modules and tools always match. mkinitramfs
// runs chrooted into an overlay of the rootfs (the cached rootfs is never
// written) inside a private mount namespace, so every mount disappears with
// the process even when the build is interrupted.
package initrd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// KernelVersion returns the one kernel version installed in rootfs.
func KernelVersion(rootfs string) (string, error) {
	entries, err := os.ReadDir(filepath.Join(rootfs, "usr/lib/modules"))
	if err != nil {
		return "", fmt.Errorf("find kernel in %s: %w", rootfs, err)
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() {
			versions = append(versions, e.Name())
		}
	}
	if len(versions) != 1 {
		return "", fmt.Errorf("rootfs %s has %d kernels (%s) under /usr/lib/modules, want exactly 1", rootfs, len(versions), strings.Join(versions, ", "))
	}
	return versions[0], nil
}

// Build writes to out the initrd for rootfs's kernel, generated with the
// files of extra (a directory tree laid over rootfs: initramfs-tools hooks,
// scripts and the files they copy) and timestamps clamped to epoch.
func Build(ctx context.Context, rootfs, extra, out string, epoch int64) error {
	kver, err := KernelVersion(rootfs)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".initrd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	upper, work, merged := filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"), filepath.Join(tmp, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	lower := rootfs
	if extra != "" {
		lower = extra + ":" + rootfs
	}
	// The script runs in the new mount namespace; $1.. are paths, never
	// interpolated into the script text.
	script := `set -e
mount -t overlay initrd-build -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
mount -t proc proc "$4/proc"
mount -t sysfs sysfs "$4/sys"
mount --bind /dev "$4/dev"
mount -t tmpfs tmpfs "$4/tmp"
chroot "$4" /usr/sbin/mkinitramfs -o /var/tmp/kubeboot-initrd.img "$5"
`
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", script, "initrd", lower, upper, work, merged, kver)
	cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(epoch, 10),
		"LC_ALL=C.UTF-8",
		"TMPDIR=/tmp",
	}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mkinitramfs %s in %s: %w\n%s", kver, rootfs, err, tail(log.String(), 40))
	}
	built := filepath.Join(upper, "var/tmp/kubeboot-initrd.img")
	if _, err := os.Stat(built); err != nil {
		return errors.New("mkinitramfs exited 0 but wrote no initrd:\n" + tail(log.String(), 40))
	}
	return os.Rename(built, out)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
