package images

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"kubeboot.dev/kubeboot/nodepath"
)

// Limits of the baked index: it is written by the builder, but bootstrapd
// bounds everything it reads.
const (
	maxIndexBytes   = 64 << 10
	maxIndexEntries = 256
)

// Entry is one pinned image: its reference, the manifest digest the lock
// pins and the archive (a file name in nodepath.ImagesDir) that holds it.
type Entry struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	File   string `json:"file"`
}

// Repository is the reference without its tag: registry.k8s.io/pause.
func (e Entry) Repository() string {
	named, err := reference.ParseNormalizedNamed(e.Ref)
	if err != nil {
		return e.Ref
	}
	return named.Name()
}

// DigestRef is the repository pinned by digest, the second name CRI gives a
// pulled image: registry.k8s.io/pause@sha256:….
func (e Entry) DigestRef() string { return e.Repository() + "@" + e.Digest }

// FileName is the archive name the builder gives ref:
// registry.k8s.io/coredns/coredns:v1.14.6 -> coredns_v1.14.6.tar.
func FileName(ref string) string {
	name := ref[strings.LastIndex(ref, "/")+1:]
	return strings.ReplaceAll(name, ":", "_") + ".tar"
}

// FormatIndex is the index file for entries, in their order.
func FormatIndex(entries []Entry) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		fmt.Fprintf(&b, "%s %s %s\n", e.Ref, e.Digest, e.File)
	}
	return b.Bytes()
}

// ReadIndex reads and checks the index at nodepath.ImagesIndex under root.
func ReadIndex(root string) ([]Entry, error) {
	p := filepath.Join(root, nodepath.ImagesIndex)
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := ParseIndex(io.LimitReader(f, maxIndexBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", nodepath.ImagesIndex, err)
	}
	return entries, nil
}

// ParseIndex parses an index: every line "<ref> <digest> <file>" with a
// tagged reference, a sha256 digest and a plain file name; no reference
// twice. Errors name the line.
func ParseIndex(r io.Reader) ([]Entry, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if len(data) > maxIndexBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxIndexBytes)
	}
	var (
		entries []Entry
		errs    []error
		seen    = map[string]int{}
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			errs = append(errs, fmt.Errorf("line %d: want \"<ref> <digest> <file>\", got %d fields", n, len(f)))
			continue
		}
		e := Entry{Ref: f[0], Digest: f[1], File: f[2]}
		if err := e.check(); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		if prev, ok := seen[e.Ref]; ok {
			errs = append(errs, fmt.Errorf("line %d: %s is listed again (first on line %d)", n, e.Ref, prev))
			continue
		}
		seen[e.Ref] = n
		if len(entries) == maxIndexEntries {
			return nil, fmt.Errorf("more than %d images", maxIndexEntries)
		}
		entries = append(entries, e)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, errors.New("lists no image")
	}
	return entries, nil
}

func (e Entry) check() error {
	named, err := reference.ParseNormalizedNamed(e.Ref)
	if err != nil {
		return fmt.Errorf("reference %q: %w", e.Ref, err)
	}
	_, tagged := named.(reference.NamedTagged)
	_, digested := named.(reference.Digested)
	if !tagged || digested || named.String() != e.Ref {
		return fmt.Errorf("reference %q: want a full reference with a tag and no digest, like registry.k8s.io/pause:3.10.2", e.Ref)
	}
	d, err := digest.Parse(e.Digest)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%s: digest %q is not sha256:<64 hex digits>", e.Ref, e.Digest)
	}
	if e.File != path.Base(e.File) || e.File == "." || e.File == ".." || !strings.HasSuffix(e.File, ".tar") {
		return fmt.Errorf("%s: archive %q is not a .tar file name in %s", e.Ref, e.File, nodepath.ImagesDir)
	}
	return nil
}
