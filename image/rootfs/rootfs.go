// Package rootfs makes the node's Debian base with mmdebstrap and records
// the exact version of every package it installed. mmdebstrap's output is
// not bit-identical across runs (dpkg and maintainer scripts write
// timestamps and random bits), so the builder caches the tree by its inputs
// and pins what was installed in packages.lock next to it.
package rootfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"

	"kubeboot.dev/kubeboot/internal/redact"
)

// Required are the packages the image layout itself depends on, added to
// every spec's list: the kernel and initramfs-tools for the initrd,
// systemd-repart and e2fsprogs to make STATE, systemd-boot's EFI binary for
// the ESP, zstd for the initrd compression.
var Required = []string{
	"systemd", "systemd-sysv", "udev", "dbus", "linux-image-amd64",
	"initramfs-tools", "zstd", "systemd-repart", "e2fsprogs", "systemd-boot-efi", "kmod",
}

// Options say what to install.
type Options struct {
	Suite           string   // trixie
	Mirror          string   // resolved: base.mirror or the build machine's (aptmirror)
	Packages        []string // added to Required
	SourceDateEpoch int64
}

// PackageList is Required plus opts.Packages, sorted, without duplicates.
func (o Options) PackageList() []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range append(append([]string{}, Required...), o.Packages...) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// Key identifies the rootfs made from opts (and this package's recipe).
func (o Options) Key() string {
	h := sha256.New()
	fmt.Fprintf(h, "rootfs v1\nminbase\n%s\n%s\n%s\n%d\n", o.Suite, o.Mirror, strings.Join(o.PackageList(), ","), o.SourceDateEpoch)
	return hex.EncodeToString(h.Sum(nil))
}

// Args are mmdebstrap's arguments for dir.
func (o Options) Args(dir string) []string {
	return []string{"--variant=minbase", "--mode=root", "--format=directory",
		"--include=" + strings.Join(o.PackageList(), ","),
		o.Suite, dir, o.Mirror}
}

// Build runs mmdebstrap into dir (which must not exist) and writes the
// installed package versions to lockFile ("name version arch" per line).
func Build(ctx context.Context, dir, lockFile string, opts Options, log *os.File) error {
	if opts.Suite == "" || opts.Mirror == "" {
		return fmt.Errorf("rootfs: base.suite must be set in the spec and the mirror resolved")
	}
	cmd := exec.CommandContext(ctx, "mmdebstrap", opts.Args(dir)...)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(opts.SourceDateEpoch, 10), "LC_ALL=C.UTF-8")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if log != nil {
		cmd.Stdout, cmd.Stderr = log, log
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mmdebstrap %s %s (%s): %w\n%s", opts.Suite, redact.URL(opts.Mirror), strings.Join(opts.PackageList(), ","), err, tail(out.String()))
	}
	versions, err := Versions(dir)
	if err != nil {
		return err
	}
	return os.WriteFile(lockFile, []byte(versions), 0o644)
}

// Versions lists the packages installed in the rootfs dir, one
// "name version architecture" line each, sorted.
func Versions(dir string) (string, error) {
	if _, err := os.Stat(dir + "/var/lib/dpkg/status"); err != nil {
		return "", fmt.Errorf("rootfs %s has no dpkg database: %w", dir, err)
	}
	cmd := exec.Command("dpkg-query", "--admindir="+dir+"/var/lib/dpkg", "-W", "-f", "${Package} ${Version} ${Architecture}\n")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("dpkg-query in %s: %w", dir, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n", nil
}

func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
