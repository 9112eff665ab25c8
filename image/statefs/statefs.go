// Package statefs makes the node's STATE file system at build time: ext4
// holding the image's /var and containerd's prepared image store, so the
// first boot finds every pinned image unpacked on real ext4 (overlayfs
// snapshots cannot sit on the squashfs root) without copying anything.
// The node only grows it (systemd-repart and resize2fs in the initrd).
//
// mke2fs is the rootfs's own (the node's e2fsprogs, run through the
// rootfs's dynamic loader), for two reasons: e2fsprogs 1.47.1 and later
// clamp every inode time to SOURCE_DATE_EPOCH and sort directories, where
// older ones copy each file's ctime from the build host; and the features
// it enables are the ones the node's e2fsck and resize2fs know. UUID and
// directory hash seed are given, so the same inputs give the same bytes.
package statefs

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Label is STATE's file system label (the partition's GPT name is the
// same; the initrd finds it by that).
const Label = "STATE"

// SeededMarker, relative to STATE's root, tells the initrd that STATE
// already holds the image's /var (overlays/etc/initramfs-tools/scripts/
// local-bottom/kubeboot seeds a STATE without it, made on the node).
const SeededMarker = "lib/kubeboot/state-seeded"

// Options of one STATE file system.
type Options struct {
	// Rootfs is the Debian rootfs tree whose mke2fs runs.
	Rootfs string
	// Var is the tree that becomes STATE's root (the node's /var).
	Var string
	// Out is the image file to write, Size bytes (a multiple of 4 KiB).
	Out  string
	Size int64
	// UUID is the file system UUID; HashSeed the directory hash seed.
	UUID, HashSeed  string
	SourceDateEpoch int64
}

// Build writes the ext4 image o.Out from o.Var.
func Build(ctx context.Context, o Options) error {
	if o.Size <= 0 || o.Size%4096 != 0 {
		return fmt.Errorf("STATE size %d is not a positive multiple of 4 KiB", o.Size)
	}
	if err := os.MkdirAll(filepath.Join(o.Var, filepath.Dir(SeededMarker)), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.Var, SeededMarker), nil, 0o644); err != nil {
		return err
	}
	if err := atimeIsMtime(o.Var); err != nil {
		return err
	}
	loader := filepath.Join(o.Rootfs, "usr/lib64/ld-linux-x86-64.so.2")
	libs := filepath.Join(o.Rootfs, "usr/lib/x86_64-linux-gnu")
	mke2fs := filepath.Join(o.Rootfs, "usr/sbin/mke2fs")
	for _, p := range []string{loader, mke2fs} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("the rootfs has no %s (package e2fsprogs): %w", strings.TrimPrefix(p, o.Rootfs), err)
		}
	}
	cmd := exec.CommandContext(ctx, loader, append([]string{"--library-path", libs, mke2fs}, Args(o)...)...)
	cmd.Env = append(os.Environ(),
		"MKE2FS_CONFIG="+filepath.Join(o.Rootfs, "etc/mke2fs.conf"),
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(o.SourceDateEpoch, 10),
		"E2FSPROGS_FAKE_TIME="+strconv.FormatInt(o.SourceDateEpoch, 10))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mke2fs %s: %w: %s", strings.Join(Args(o), " "), err, strings.TrimSpace(log.String()))
	}
	return nil
}

// atimeIsMtime sets every entry's access time under dir to its
// modification time: mke2fs copies access times, which tell when the build
// host last read a file, and clamps only times after SOURCE_DATE_EPOCH
// (image layers often carry older ones).
func atimeIsMtime(dir string) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		ts := []unix.Timespec{st.Mtim, st.Mtim}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// Args are mke2fs's arguments. lazy_itable_init=0: the inode tables are
// zeroed here (they stay holes in the image), so the node's kernel does not
// spend the first boot zeroing them in the background.
func Args(o Options) []string {
	return []string{"-q", "-F", "-t", "ext4", "-L", Label, "-U", o.UUID,
		"-E", "hash_seed=" + o.HashSeed + ",root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
		"-d", o.Var, o.Out, strconv.FormatInt(o.Size/1024, 10) + "k"}
}
