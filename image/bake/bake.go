// Package bake turns a cached Debian rootfs into the node's root tree: it
// lays the overlays and the artifacts over a copy of the rootfs, enables
// units offline with systemctl --root, and removes everything that must not
// be shared by every machine flashed from the image (machine id, SSH host
// keys, the build host's hostname and resolver, apt lists and sources, logs,
// caches).
package bake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// File is one file placed in the image.
type File struct {
	Path   string      // absolute path in the image
	Source string      // file on the build host; empty: use Data
	Data   []byte      // contents when Source is empty
	Mode   os.FileMode // permission bits; owner is always root:root
	// SHA256, when set, is what Source's bytes must hash to (hex): an
	// artifact is named by its hash in the cache and re-hashed as it is
	// copied, so a cache file changed after it was stored never reaches
	// an image.
	SHA256 string
}

// Options say what to add to the rootfs.
type Options struct {
	// Overlays are directory trees copied over the rootfs in order, as
	// root:root with their permission bits (git keeps 0644/0755).
	Overlays []string
	// Files are copied after the overlays.
	Files []File
	// Enable are units enabled with systemctl --root.
	Enable []string
	// Mask are units masked with systemctl --root.
	Mask []string
}

// removed are the machine-specific and volatile paths of a fresh rootfs
// (globs relative to the root).
var removed = []string{
	"etc/hostname", "etc/resolv.conf", "etc/ssh/ssh_host_*",
	"etc/apt/sources.list", "etc/apt/sources.list.d/*",
	"var/lib/apt/lists/*", "var/cache/apt/*", "var/cache/debconf/*-old",
	"var/cache/ldconfig/aux-cache", "var/lib/dpkg/*-old",
	"var/lib/systemd/random-seed", "var/lib/systemd/catalog/database",
	"var/lib/dbus/machine-id", "var/log/*", "etc/*-",
	"boot/initrd.img*", "tmp/*", "var/tmp/*",
}

// Bake builds the root tree in dst (which must not exist) from rootfs.
func Bake(ctx context.Context, rootfs, dst string, opts Options) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("bake: %s already exists", dst)
	}
	if err := run(ctx, "cp", "-a", "--reflink=auto", rootfs, dst); err != nil {
		return err
	}
	for _, o := range opts.Overlays {
		if err := copyTree(o, dst); err != nil {
			return fmt.Errorf("overlay %s: %w", o, err)
		}
	}
	for _, f := range opts.Files {
		if err := placeFile(dst, f); err != nil {
			return err
		}
	}
	for _, g := range removed {
		matches, err := filepath.Glob(filepath.Join(dst, g))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	// "uninitialized" (not an empty file) gives systemd's first-boot
	// semantics: a new machine id is committed to /etc on first boot and
	// ConditionFirstBoot units (sshd-keygen) run. See machine-id(5).
	if err := os.WriteFile(filepath.Join(dst, "etc/machine-id"), []byte("uninitialized\n"), 0o444); err != nil {
		return err
	}
	for _, d := range []string{"var/log/journal"} {
		if err := os.MkdirAll(filepath.Join(dst, d), 0o755); err != nil {
			return err
		}
	}
	if err := homesOnState(dst); err != nil {
		return err
	}
	if len(opts.Enable) > 0 {
		if err := run(ctx, "systemctl", append([]string{"--root=" + dst, "enable"}, opts.Enable...)...); err != nil {
			return err
		}
	}
	if len(opts.Mask) > 0 {
		if err := run(ctx, "systemctl", append([]string{"--root=" + dst, "mask"}, opts.Mask...)...); err != nil {
			return err
		}
	}
	return nil
}

// stateHomes are the home directories moved onto STATE, as Fedora CoreOS
// does: the image's / is a read-only squashfs, so /home and /root become
// relative links into /var (relative, so they also resolve inside a tree
// mounted elsewhere), and their contents move with them. The initrd
// copies the image's /var onto STATE on first boot; a tmpfiles.d line
// (overlays/etc/tmpfiles.d/home.conf, provision.conf) makes the
// directories on a STATE seeded by an older image.
var stateHomes = []struct {
	link, dir string
	mode      os.FileMode
}{
	{"home", "var/home", 0o755},
	{"root", "var/roothome", 0o700},
}

func homesOnState(root string) error {
	for _, h := range stateHomes {
		link, dir := filepath.Join(root, h.link), filepath.Join(root, h.dir)
		info, err := os.Lstat(link)
		switch {
		case err == nil && info.IsDir():
			// Rename keeps the contents with their owners and modes.
			if err := os.Rename(link, dir); err != nil {
				return fmt.Errorf("move /%s to /%s: %w", h.link, h.dir, err)
			}
		case err == nil || errors.Is(err, fs.ErrNotExist):
			if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			if err := os.MkdirAll(dir, h.mode); err != nil {
				return err
			}
		default:
			return err
		}
		if err := os.Chmod(dir, h.mode); err != nil {
			return err
		}
		if err := os.Lchown(dir, 0, 0); err != nil {
			return err
		}
		if err := os.Symlink(h.dir, link); err != nil {
			return err
		}
	}
	return nil
}

// keepFile marks an otherwise empty overlay directory for git; it is not
// copied into the image.
const keepFile = ".keep"

// copyTree copies the regular files, directories and symlinks of src over
// dst as root:root, keeping only the permission bits of src.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Lchown(target, 0, 0)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_ = os.Remove(target)
			if err := os.Symlink(link, target); err != nil {
				return err
			}
			return os.Lchown(target, 0, 0)
		case d.Type().IsRegular() && d.Name() == keepFile:
			return nil
		case d.Type().IsRegular():
			return placeFile(dst, File{Path: "/" + rel, Source: p, Mode: info.Mode().Perm()})
		default:
			return fmt.Errorf("%s: unsupported file type %s", p, d.Type())
		}
	})
}

func placeFile(root string, f File) error {
	if !filepath.IsAbs(f.Path) {
		return fmt.Errorf("image path %q is not absolute", f.Path)
	}
	target := filepath.Join(root, f.Path)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	// Replace, never write through: the target may be a symlink or a
	// hard link shared with other files of the rootfs.
	_ = os.Remove(target)
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.Mode)
	if err != nil {
		return fmt.Errorf("place %s: %w", f.Path, err)
	}
	if f.Source != "" {
		in, err := os.Open(f.Source)
		if err != nil {
			out.Close()
			return fmt.Errorf("place %s: %w", f.Path, err)
		}
		var w io.Writer = out
		h := sha256.New()
		if f.SHA256 != "" {
			w = io.MultiWriter(out, h)
		}
		_, err = io.Copy(w, in)
		in.Close()
		if err != nil {
			out.Close()
			return fmt.Errorf("place %s from %s: %w", f.Path, f.Source, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); f.SHA256 != "" && got != f.SHA256 {
			out.Close()
			return fmt.Errorf("place %s: %s hashes to %s, not the pinned %s: the artifact cache was changed or corrupted after it was filled; delete the file and run make artifacts", f.Path, f.Source, got, f.SHA256)
		}
	} else if _, err := out.Write(f.Data); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	// Chmod again: the umask trimmed the mode given to OpenFile.
	if err := os.Chmod(target, f.Mode); err != nil {
		return err
	}
	return os.Chown(target, 0, 0)
}

func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, firstLines(strings.TrimSpace(out.String()), 5))
	}
	return nil
}

// firstLines keeps the first n lines of a command's output: cp on a full
// disk prints a line per file of the tree it copies.
func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) <= n {
		return s
	}
	return strings.Join(lines[:n], "\n") + fmt.Sprintf("\n... and %d more lines", strings.Count(lines[n], "\n")+1)
}
