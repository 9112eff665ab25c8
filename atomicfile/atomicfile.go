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
// are created with dirPerm.
func Write(path string, data []byte, perm, dirPerm fs.FileMode) error {
	return write(path, data, perm, dirPerm, os.Rename)
}

// write puts data into a temporary file beside path and moves it into
// place with place (rename replaces, link refuses an existing path).
func write(path string, data []byte, perm, dirPerm fs.FileMode, place func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a link, the temporary name goes; after a rename, a no-op
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := place(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// WriteNew is Write for a path that must not exist yet: it fails with an
// error matching fs.ErrExist instead of replacing a file, and there is no
// moment when path exists with partial content.
func WriteNew(path string, data []byte, perm, dirPerm fs.FileMode) error {
	return write(path, data, perm, dirPerm, os.Link)
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
