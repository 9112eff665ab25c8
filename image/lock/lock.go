// Package lock is the lock file written next to an ImageSpec: for every
// artifact its source, version and content hash (sha256 of a file, manifest
// digest of an OCI image). Fetch and build refuse anything that does not
// match it.
package lock

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"sort"

	"kubeboot.dev/kubeboot/atomicfile"

	"go.yaml.in/yaml/v3"
)

const (
	APIVersion = "kubeboot.dev/v1alpha1"
	Kind       = "ImageLock"
)

// Lock is the document in configs/image.lock.
type Lock struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	// Spec is the spec file this lock pins (relative to the lock).
	Spec              string `yaml:"spec"`
	KubernetesVersion string `yaml:"kubernetesVersion"`
	// GoVersion is the toolchain that built from-source artifacts: image
	// digests are reproducible only with the same toolchain.
	GoVersion string  `yaml:"goVersion,omitempty"`
	Files     []File  `yaml:"files"`
	Images    []Image `yaml:"images"`
}

// Kinds of locked files.
const (
	KindBinary    = "binary"     // an executable
	KindCNIPlugin = "cni-plugin" // named cni-<plugin>
	KindRootfs    = "rootfs"     // a Debian rootfs tarball files are taken from
	KindArchive   = "archive"    // a release archive binaries are extracted from
)

// File is a single file artifact (a binary, a CNI plugin, a rootfs tar).
type File struct {
	Name    string `yaml:"name"`
	Kind    string `yaml:"kind"` // one of the Kind constants
	Version string `yaml:"version"`
	// Source is where it came from: "go:<package>@<version>", "gcc:<file>",
	// a URL, or "url#member" for a member of a downloaded archive.
	Source string `yaml:"source"`
	SHA256 string `yaml:"sha256"`
	Size   int64  `yaml:"size"`
}

// Image is an OCI image, stored in the cache as an OCI archive.
type Image struct {
	Ref string `yaml:"ref"`
	// Source is "built" (assembled here from locked files) or the
	// registry reference it was pulled from.
	Source string `yaml:"source"`
	// Digest is the manifest digest (sha256:...).
	Digest string `yaml:"digest"`
	// ArchiveSHA256 is the sha256 of the OCI archive in the cache.
	ArchiveSHA256 string `yaml:"archiveSHA256,omitempty"`
	ArchiveSize   int64  `yaml:"archiveSize,omitempty"`
}

var (
	hexRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// Read loads and checks a lock file.
func Read(path string) (*Lock, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("lock file %s does not exist: run `kubeboot artifacts lock` (or `build --from-source`) first", path)
		}
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var l Lock
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if err := l.Check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &l, nil
}

// Check verifies the lock is well formed.
func (l *Lock) Check() error {
	if l.APIVersion != APIVersion || l.Kind != Kind {
		return fmt.Errorf("not a %s %s (apiVersion %q, kind %q)", APIVersion, Kind, l.APIVersion, l.Kind)
	}
	names := map[string]bool{}
	for i, f := range l.Files {
		if f.Name == "" || names[f.Name] {
			return fmt.Errorf("files[%d]: name %q is empty or duplicated", i, f.Name)
		}
		names[f.Name] = true
		if !hexRE.MatchString(f.SHA256) {
			return fmt.Errorf("files[%d] (%s): sha256 %q is not 64 hex digits", i, f.Name, f.SHA256)
		}
	}
	refs := map[string]bool{}
	for i, im := range l.Images {
		if im.Ref == "" || refs[im.Ref] {
			return fmt.Errorf("images[%d]: ref %q is empty or duplicated", i, im.Ref)
		}
		refs[im.Ref] = true
		if !digestRE.MatchString(im.Digest) {
			return fmt.Errorf("images[%d] (%s): digest %q is not sha256:<64 hex>", i, im.Ref, im.Digest)
		}
		if im.ArchiveSHA256 != "" && !hexRE.MatchString(im.ArchiveSHA256) {
			return fmt.Errorf("images[%d] (%s): archiveSHA256 %q is not 64 hex digits", i, im.Ref, im.ArchiveSHA256)
		}
	}
	return nil
}

// Write stores the lock with entries sorted so that equal content gives an
// equal file; it replaces path atomically.
func (l *Lock) Write(path string) error {
	l.APIVersion, l.Kind = APIVersion, Kind
	sort.Slice(l.Files, func(i, j int) bool { return l.Files[i].Name < l.Files[j].Name })
	sort.Slice(l.Images, func(i, j int) bool { return l.Images[i].Ref < l.Images[j].Ref })
	if err := l.Check(); err != nil {
		return fmt.Errorf("refusing to write %s: %w", path, err)
	}
	var buf bytes.Buffer
	buf.WriteString("# Written by `kubeboot artifacts lock|build`. Do not edit by hand.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(l); err != nil {
		return err
	}
	return atomicfile.Write(path, buf.Bytes(), 0o644, 0o755)
}

// File returns the locked file called name.
func (l *Lock) File(name string) (File, bool) {
	for _, f := range l.Files {
		if f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

// Image returns the locked image with reference ref.
func (l *Lock) Image(ref string) (Image, bool) {
	for _, im := range l.Images {
		if im.Ref == ref {
			return im, true
		}
	}
	return Image{}, false
}

// SetFile adds or replaces a file entry.
func (l *Lock) SetFile(f File) {
	for i := range l.Files {
		if l.Files[i].Name == f.Name {
			l.Files[i] = f
			return
		}
	}
	l.Files = append(l.Files, f)
}

// SetImage adds or replaces an image entry.
func (l *Lock) SetImage(im Image) {
	for i := range l.Images {
		if l.Images[i].Ref == im.Ref {
			l.Images[i] = im
			return
		}
	}
	l.Images = append(l.Images, im)
}
