// Package oci assembles small single-layer OCI images from local files,
// deterministically (fixed timestamps, sorted entries, fixed owners), and
// reads and writes them as OCI archives (a tar of an OCI image layout).
package oci

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entry is one path in a layer. Exactly one of Source, Data, Link or Dir
// says what it is.
type Entry struct {
	Path   string // absolute path inside the image
	Source string // host file to copy
	Data   []byte // literal file content
	Link   string // symlink target
	Dir    bool
	Mode   os.FileMode // permission bits (with os.ModeSticky); 0 means 0755 / 0644
	UID    int
	GID    int
}

// Epoch is the timestamp written everywhere: SOURCE_DATE_EPOCH when set,
// else the Unix epoch.
func Epoch() time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}

// fileLayer is a gzip-compressed layer tar held in a file.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return types.OCILayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return gunzipFile(l.path) }

func gunzipFile(p string) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// normalize sorts entries, adds missing parent directories and rejects
// duplicates, so the same set of entries always gives the same tar.
func normalize(entries []Entry) ([]Entry, error) {
	byPath := map[string]Entry{}
	for _, e := range entries {
		p := path.Clean("/" + e.Path)
		if p == "/" {
			return nil, fmt.Errorf("layer entry %q: the root cannot be an entry", e.Path)
		}
		kinds := 0
		for _, set := range []bool{e.Source != "", e.Data != nil, e.Link != "", e.Dir} {
			if set {
				kinds++
			}
		}
		if kinds > 1 {
			return nil, fmt.Errorf("layer entry %s: set only one of Source, Data, Link, Dir", p)
		}
		if old, dup := byPath[p]; dup && !(old.Dir && e.Dir) {
			return nil, fmt.Errorf("layer entry %s: listed twice", p)
		}
		e.Path = p
		byPath[p] = e
	}
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = Entry{Path: d, Dir: true}
			} else if !byPath[d].Dir {
				return nil, fmt.Errorf("layer entry %s: parent %s is not a directory", p, d)
			}
		}
	}
	out := make([]Entry, 0, len(byPath))
	for _, e := range byPath {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// buildLayer writes the entries as a gzip-compressed tar into a new file
// in tmpDir, computing digest and diffID in the same pass.
func buildLayer(tmpDir string, entries []Entry) (*fileLayer, error) {
	entries, err := normalize(entries)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(tmpDir, "layer-*.tar.gz")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	compressedHash, diffHash := sha256.New(), sha256.New()
	counter := &countWriter{w: io.MultiWriter(f, compressedHash)}
	// gzip headers carry no name and a zero time: the output depends only
	// on the content (and the Go toolchain's deflate).
	zw, err := gzip.NewWriterLevel(counter, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(io.MultiWriter(zw, diffHash))
	mtime := Epoch()
	for _, e := range entries {
		if err := writeEntry(tw, e, mtime); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	ok = true
	return &fileLayer{
		path:   f.Name(),
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(compressedHash.Sum(nil))},
		diffID: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diffHash.Sum(nil))},
		size:   counter.n,
	}, nil
}

func writeEntry(tw *tar.Writer, e Entry, mtime time.Time) error {
	name := strings.TrimPrefix(e.Path, "/")
	hdr := &tar.Header{Name: name, Uid: e.UID, Gid: e.GID, ModTime: mtime, Format: tar.FormatPAX}
	perm := e.Mode & (os.ModePerm | os.ModeSticky | os.ModeSetuid | os.ModeSetgid)
	switch {
	case e.Dir:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		if perm == 0 {
			perm = 0o755
		}
		hdr.Mode = tarMode(perm)
		return tw.WriteHeader(hdr)
	case e.Link != "":
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, e.Link, 0o777
		return tw.WriteHeader(hdr)
	case e.Data != nil:
		if perm == 0 {
			perm = 0o644
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, tarMode(perm), int64(len(e.Data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(e.Data)
		return err
	case e.Source != "":
		src, err := os.Open(e.Source)
		if err != nil {
			return fmt.Errorf("layer entry %s: %w", e.Path, err)
		}
		defer src.Close()
		st, err := src.Stat()
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("layer entry %s: source %s is not a regular file", e.Path, e.Source)
		}
		if perm == 0 {
			perm = st.Mode().Perm()
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, tarMode(perm), st.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, src); err != nil {
			return fmt.Errorf("layer entry %s: copy %s: %w", e.Path, e.Source, err)
		}
		return nil
	}
	return fmt.Errorf("layer entry %s: none of Source, Data, Link, Dir is set", e.Path)
}

func tarMode(m os.FileMode) int64 {
	mode := int64(m.Perm())
	if m&os.ModeSticky != 0 {
		mode |= 0o1000
	}
	if m&os.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&os.ModeSetuid != 0 {
		mode |= 0o4000
	}
	return mode
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
