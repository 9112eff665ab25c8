// Package atomicfile replaces files so that readers, and the file system
// after a power cut, see either the old or the new content, never a mix:
// the first boot may be cut at any moment and must resume from whole files,
// and an interrupted build must not leave half a lock file behind.
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Write replaces path with data and mode perm. Missing parent directories
// are created with dirPerm; a private dirPerm is enforced on the file's own
// directory even when it exists (see MkdirAll).
func Write(path string, data []byte, perm, dirPerm fs.FileMode) error {
	return writeWith(path, perm, dirPerm, fill(data, perm), os.Rename)
}

// WriteNew is Write for a path that must not exist yet: it fails with an
// error matching fs.ErrExist instead of replacing a file, and there is no
// moment when path exists with partial content.
func WriteNew(path string, data []byte, perm, dirPerm fs.FileMode) error {
	return writeWith(path, perm, dirPerm, fill(data, perm), os.Link)
}

func fill(data []byte, perm fs.FileMode) func(tmp string) error {
	return func(tmp string) error { return os.WriteFile(tmp, data, perm) }
}

// WriteWith makes path through write, which creates and fills the file
// named tmp (a tool such as qemu-img writing its output there; tmp does
// not exist when write is called): tmp, in path's directory, is given
// perm, synced and renamed over path when write succeeds, removed when it
// fails. Missing parent directories are created with dirPerm.
func WriteWith(path string, perm, dirPerm fs.FileMode, write func(tmp string) error) error {
	return writeWith(path, perm, dirPerm, write, os.Rename)
}

// writeWith is WriteWith moving tmp into place with place (rename
// replaces, link refuses an existing path).
func writeWith(path string, perm, dirPerm fs.FileMode, write func(tmp string) error, place func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	if err := MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	// A private file is made in a private directory beside path: write
	// may create it with the umask's mode, readable by others until the
	// chmod below.
	tmpDir := dir
	if perm&0o077 == 0 {
		work, err := os.MkdirTemp(dir, "."+filepath.Base(path)+".tmp-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(work)
		tmpDir = work
	}
	// A unique name, reserved by creating it and handed over empty.
	f, err := os.CreateTemp(tmpDir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp) // after a link, the temporary name goes; after a rename, a no-op
	if err := os.Remove(tmp); err != nil {
		return err
	}
	if err := write(tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := place(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p, err)
	}
	return nil
}

// MkdirAll is os.MkdirAll, and when perm is private (no group or other
// bits) an existing dir that grants more is narrowed to perm: the initrd
// creates /var/lib/kubeboot 0755 before bootstrapd first runs, and a
// directory meant for root's eyes only must not stay readable by all.
func MkdirAll(dir string, perm fs.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	if perm&0o077 != 0 {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&^perm != 0 {
		return os.Chmod(dir, perm)
	}
	return nil
}

// WriteIfChanged is Write, skipped when path already holds exactly data;
// it reports whether it wrote, so a rerun leaves mtimes alone.
func WriteIfChanged(path string, data []byte, perm, dirPerm fs.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	return true, Write(path, data, perm, dirPerm)
}

// Remove deletes path if it exists, durably.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes a rename or removal in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	// Some file systems cannot fsync a directory (EINVAL); nothing more can be done there.
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
