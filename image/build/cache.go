package build

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/image/fetch"
)

// stepCache keeps each step's output in <dir>/<step>/<key>/, where key is a
// hash of everything the step reads. An entry is complete when its
// .complete file exists; it is built under a temporary name and renamed, so
// an interrupted build leaves no half entry.
type stepCache struct{ dir string }

const completeMark = ".complete"

// keep is how many entries per step survive pruning: the current one and
// the one before (switching back and forth between two configs stays warm).
const keep = 2

// get returns the entry directory of step/key and whether it is complete.
func (c stepCache) get(step, key string) (string, bool) {
	dir := filepath.Join(c.dir, step, key)
	_, err := os.Stat(filepath.Join(dir, completeMark))
	return dir, err == nil
}

// make builds step/key with fill (which writes into the directory it is
// given) unless it is cached, and returns the entry directory.
func (c stepCache) make(step, key string, fill func(dir string) error) (dir string, cached bool, err error) {
	dir, ok := c.get(step, key)
	if ok {
		now := timeNow()
		_ = os.Chtimes(dir, now, now) // most recently used, for pruning
		return dir, true, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", false, err
	}
	tmp := fmt.Sprintf("%s.tmp-%d", dir, os.Getpid())
	if err := os.RemoveAll(tmp); err != nil {
		return "", false, err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", false, err
	}
	if err := fill(tmp); err != nil {
		os.RemoveAll(tmp)
		return "", false, err
	}
	// The entry's files (a whole rootfs tree) reach the disk before the
	// mark that says they are there: one syncfs instead of an fsync per
	// file. Without it a power cut could leave a complete-looking entry
	// of empty files, and every later image would be built from it.
	if err := syncFS(tmp); err != nil {
		os.RemoveAll(tmp)
		return "", false, err
	}
	if err := atomicfile.Write(filepath.Join(tmp, completeMark), nil, 0o644, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", false, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", false, err
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return "", false, err
	}
	c.prune(step, key)
	return dir, false, nil
}

// syncFS flushes the file system holding dir.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// prune removes all but the keep most recently used entries of step, and
// leftovers of interrupted builds.
func (c stepCache) prune(step, current string) {
	entries, err := os.ReadDir(filepath.Join(c.dir, step))
	if err != nil {
		return
	}
	type entry struct {
		name string
		mod  int64
	}
	var done []entry
	for _, e := range entries {
		p := filepath.Join(c.dir, step, e.Name())
		if strings.Contains(e.Name(), ".tmp-") {
			var pid int
			if _, err := fmt.Sscanf(e.Name()[strings.LastIndex(e.Name(), ".tmp-")+5:], "%d", &pid); err == nil && !processAlive(pid) {
				os.RemoveAll(p)
			}
			continue
		}
		if info, err := e.Info(); err == nil && e.Name() != current {
			done = append(done, entry{e.Name(), info.ModTime().UnixNano()})
		}
	}
	sort.Slice(done, func(i, j int) bool { return done[i].mod > done[j].mod })
	for i, e := range done {
		if i >= keep-1 {
			os.RemoveAll(filepath.Join(c.dir, step, e.name))
		}
	}
}

// hasher builds a step key from labelled parts, so that two different
// inputs never hash alike by concatenation.
type hasher struct{ h interface{ io.Writer } }

func newHasher(step string) *hasher {
	h := &hasher{h: sha256.New()}
	h.add("step", step)
	return h
}

func (h *hasher) add(label string, values ...string) {
	fmt.Fprintf(h.h, "%d:%s", len(label), label)
	for _, v := range values {
		fmt.Fprintf(h.h, "|%d:%s", len(v), v)
	}
	fmt.Fprint(h.h, "\n")
}

func (h *hasher) sum() string {
	return hex.EncodeToString(h.h.(interface{ Sum([]byte) []byte }).Sum(nil))
}

// cacheName is the sha256 a file of the artifact cache is named by
// (…/sha256/<hex>), if path is one.
func cacheName(path string) (string, bool) {
	base := filepath.Base(path)
	if filepath.Base(filepath.Dir(path)) == "sha256" && len(base) == 64 {
		if _, err := hex.DecodeString(base); err == nil {
			return base, true
		}
	}
	return "", false
}

// fileHash is the sha256 of a file. A file of the artifact cache is keyed
// by its name without reading it; the bake step re-hashes it as it copies
// it (bake.File.SHA256), so a changed cache file fails there.
func fileHash(path string) (string, error) {
	if sum, ok := cacheName(path); ok {
		if _, err := os.Stat(path); err != nil {
			return "", err
		}
		return sum, nil
	}
	sum, _, err := fetch.HashFile(path)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return sum, nil
}

// treeHash hashes a directory tree: every path, its type, permission bits,
// symlink target and file contents, in a fixed order. A missing tree hashes
// as empty.
func treeHash(root string) (string, error) {
	h := sha256.New()
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if os.IsNotExist(err) && p == root {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s\x00%s\x00", rel, info.Mode().String())
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s\x00", t)
		case info.Mode().IsRegular():
			sum, err := fileHash(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s\x00", sum)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
