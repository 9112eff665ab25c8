// Package fetch is kubeboot's content-addressed artifact cache and the
// verified downloads that fill it. Files live at sha256/<hex>, OCI image
// archives at images/sha256/<manifest hex>.tar. Everything is written to a
// temp name under tmp/, verified, then renamed into place, so an entry
// that exists is complete and correct; nothing partial is ever visible.
package fetch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/atomicfile"
)

// Cache is a content-addressed store rooted at Dir.
type Cache struct {
	Dir string
	// Stall fails a download that receives nothing for this long; zero
	// means DefaultStall.
	Stall time.Duration
}

// DefaultDir is $XDG_CACHE_HOME/kubeboot, or ~/.cache/kubeboot.
func DefaultDir() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kubeboot"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: set XDG_CACHE_HOME or HOME: %w", err)
	}
	return filepath.Join(home, ".cache", "kubeboot"), nil
}

// Open creates the cache layout under dir.
func Open(dir string) (*Cache, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, sub := range []string{"sha256", "images/sha256", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o755); err != nil {
			return nil, fmt.Errorf("cache %s: %w", abs, err)
		}
	}
	return &Cache{Dir: abs}, nil
}

// FilePath is where a file with this sha256 (hex) lives.
func (c *Cache) FilePath(sha string) string { return filepath.Join(c.Dir, "sha256", sha) }

// ImagePath is where the OCI archive of the image with this manifest
// digest ("sha256:<hex>") lives.
func (c *Cache) ImagePath(digest string) string {
	return filepath.Join(c.Dir, "images", "sha256", strings.TrimPrefix(digest, "sha256:")+".tar")
}

// TempDir is a directory on the cache's file system for scratch files.
func (c *Cache) TempDir() string { return filepath.Join(c.Dir, "tmp") }

// HasFile reports whether a file with this sha256 is cached.
func (c *Cache) HasFile(sha string) bool {
	st, err := os.Stat(c.FilePath(sha))
	return err == nil && st.Mode().IsRegular()
}

// MismatchError is a content hash that differs from the pinned one.
type MismatchError struct {
	What, Expected, Actual string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s: sha256 mismatch: expected %s, got %s (the source changed or the download was corrupted; nothing was cached)", e.What, e.Expected, e.Actual)
}

// PutReader stores r's content. If wantSHA is not empty the content must
// hash to it, else a *MismatchError names what and both hashes. It returns
// the sha256 and the cache path.
func (c *Cache) PutReader(r io.Reader, what, wantSHA string, mode os.FileMode) (string, string, error) {
	tmp, err := os.CreateTemp(c.TempDir(), "put-*")
	if err != nil {
		return "", "", err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), r); err != nil {
		tmp.Close()
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", "", err
	}
	if err := tmp.Close(); err != nil {
		return "", "", err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if wantSHA != "" && got != wantSHA {
		return "", "", &MismatchError{What: what, Expected: wantSHA, Actual: got}
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return "", "", err
	}
	dst := c.FilePath(got)
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", "", err
	}
	return got, dst, atomicfile.SyncDir(filepath.Dir(dst))
}

// PutFile copies a local file into the cache, keeping its exec bit.
func (c *Cache) PutFile(src, wantSHA string) (string, string, error) {
	f, err := os.Open(src)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", "", err
	}
	mode := os.FileMode(0o644)
	if st.Mode()&0o111 != 0 {
		mode = 0o755
	}
	return c.PutReader(f, src, wantSHA, mode)
}

// VerifyFile re-hashes a cached file.
func (c *Cache) VerifyFile(sha string) error {
	got, _, err := HashFile(c.FilePath(sha))
	if err != nil {
		return err
	}
	if got != sha {
		return &MismatchError{What: c.FilePath(sha), Expected: sha, Actual: got}
	}
	return nil
}
