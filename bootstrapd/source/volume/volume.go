// Package volume reads files from a FAT12/16/32 or ISO9660 volume (a
// NoCloud CIDATA disk) without mounting it. Anyone who can attach a disk to
// the VM shapes these bytes, so every structure is read with a hard bound:
// a directory is at most 256 KiB, a path at most 8 levels deep, a file at
// most the size its caller allows (checked against the directory entry
// before a byte is read), a FAT cluster chain is walked only as far as the
// file's size needs and fails on a loop, and nothing is read past the end
// of the volume. Memory is therefore bounded by the caller's limit plus one
// directory, and time by the same number of reads.
//
// go-diskfs, used before, cannot be bounded from outside: its FAT reader
// walks a cluster chain until an end mark (a chain 4 -> 4 never ends) and
// re-walks the chain on every Read (quadratic), and its ISO9660 reader
// allocates the sizes the volume claims (directories, path tables) and
// zero-fills a file record claiming more than the volume holds.
package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"unicode/utf16"
)

const (
	// maxDirBytes bounds one directory: 8192 FAT entries, far more than
	// the handful of files of a NoCloud volume.
	maxDirBytes = 256 << 10
	// maxDepth bounds the components of a path.
	maxDepth = 8
)

// ErrTooLarge is wrapped by the error of a file above the caller's limit.
var ErrTooLarge = errors.New("file too large")

// FS is an opened volume.
type FS struct {
	typ, label string
	fsys       fileSystem
}

// entry is a directory entry, in the terms both formats share.
type entry struct {
	name    string
	dir     bool
	symlink bool
	size    int64
	loc     uint32 // FAT: first cluster; ISO9660: first block of the extent
	// unreadable says why the entry cannot be read (an ISO9660 layout
	// this reader does not follow).
	unreadable error
}

type fileSystem interface {
	root() entry
	readDir(e entry) ([]entry, error)
	readFile(e entry) ([]byte, error)
	// sameName compares names as the format does: FAT ignores case.
	sameName(a, b string) bool
}

// Open reads the volume's super block (ISO9660 volume descriptors or a
// FAT boot sector) from r, a device or image of size bytes.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	v := &bounded{r: r, size: size}
	if iso, label, err := openISO9660(v); err == nil {
		return &FS{typ: "iso9660", label: label, fsys: iso}, nil
	} else if !errors.Is(err, errNotThisFormat) {
		return nil, err
	}
	fat, err := openFAT(v)
	if errors.Is(err, errNotThisFormat) {
		return nil, errors.New("no FAT or ISO9660 file system (no ISO9660 volume descriptor, no FAT boot sector)")
	}
	if err != nil {
		return nil, err
	}
	return &FS{typ: fat.typ, label: fat.label(), fsys: fat}, nil
}

// OpenFile opens a device or image file; the file stays open as long as
// the FS is used, and close releases it.
func OpenFile(name string) (v *FS, close func() error, err error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	// Seek, not Stat: a block device's Stat size is 0.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	v, err = Open(f, size)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return v, f.Close, nil
}

// Type is fat12, fat16, fat32 or iso9660.
func (v *FS) Type() string { return v.typ }

// Label is the volume label, without padding.
func (v *FS) Label() string { return v.label }

// ReadFile returns the content of the regular file at name (a slash path
// from the root), which must be at most max bytes. A missing file is an
// error wrapping fs.ErrNotExist; a larger one wraps ErrTooLarge; a
// directory or a symbolic link is an error too (a link on the volume would
// point into the node's own file system, which the volume must not name).
func (v *FS) ReadFile(name string, max int64) ([]byte, error) {
	clean := strings.TrimPrefix(path.Clean("/"+name), "/")
	if clean == "" {
		return nil, fmt.Errorf("%s: is the root directory", name)
	}
	parts := strings.Split(clean, "/")
	if len(parts) > maxDepth {
		return nil, fmt.Errorf("%s: more than %d levels deep", name, maxDepth)
	}
	cur := v.fsys.root()
	for i, p := range parts {
		entries, err := v.fsys.readDir(cur)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		found := false
		for _, e := range entries {
			if v.fsys.sameName(e.name, p) {
				cur, found = e, true
				break
			}
		}
		if !found {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		if i < len(parts)-1 && (!cur.dir || cur.unreadable != nil) {
			return nil, fmt.Errorf("%s: %s is not a directory", name, path.Join(parts[:i+1]...))
		}
	}
	switch {
	case cur.unreadable != nil:
		return nil, fmt.Errorf("%s: %w", name, cur.unreadable)
	case cur.symlink:
		return nil, fmt.Errorf("%s: is a symbolic link; put the file itself on the volume", name)
	case cur.dir:
		return nil, fmt.Errorf("%s: is a directory", name)
	case cur.size > max:
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed: %w", name, cur.size, max, ErrTooLarge)
	}
	data, err := v.fsys.readFile(cur)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return data, nil
}

// errNotThisFormat means the volume has no super block of a format; any
// other error means it has one that is broken.
var errNotThisFormat = errors.New("not this format")

// bounded reads exactly len(p) bytes inside the volume or fails.
type bounded struct {
	r    io.ReaderAt
	size int64
}

func (b *bounded) read(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off > b.size || int64(n) > b.size-off {
		return nil, fmt.Errorf("%d bytes at offset %d lie past the end of the volume (%d bytes)", n, off, b.size)
	}
	p := make([]byte, n)
	if _, err := b.r.ReadAt(p, off); err != nil {
		return nil, fmt.Errorf("read %d bytes at offset %d: %w", n, off, err)
	}
	return p, nil
}

var (
	le16 = binary.LittleEndian.Uint16
	le32 = binary.LittleEndian.Uint32
)

// ucs2 decodes big- or little-endian UCS-2/UTF-16 text.
func ucs2(b []byte, order binary.ByteOrder) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u = append(u, order.Uint16(b[i:]))
	}
	return string(utf16.Decode(u))
}
