package fetch

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// localFile stores a file:// URL's file, verified like a download.
func (c *Cache) localFile(u, wantSHA string) (string, string, error) {
	parsed, err := url.Parse(u)
	if err != nil || parsed.Path == "" {
		return "", "", fmt.Errorf("%s: not a file:///absolute/path URL", u)
	}
	f, err := os.Open(parsed.Path)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", u, err)
	}
	defer f.Close()
	return c.PutReader(f, u, wantSHA, 0o755)
}

// LocalImage takes the image ref from a local OCI layout ("oci-layout:DIR")
// or OCI archive ("oci-archive:FILE"), checks it against wantDigest (empty
// while locking), stores it as an OCI archive and returns its digest and
// path. The layout's entry is chosen by its ref annotation (full reference
// or tag); a layout with a single image needs none.
func (c *Cache) LocalImage(ctx context.Context, ref, from, wantDigest string) (string, string, error) {
	if wantDigest != "" {
		if p := c.ImagePath(wantDigest); fileExists(p) {
			return wantDigest, p, nil
		}
	}
	dir, isLayout := strings.CutPrefix(from, "oci-layout:")
	if !isLayout {
		archive, ok := strings.CutPrefix(from, "oci-archive:")
		if !ok {
			return "", "", fmt.Errorf("%s: source %q is neither oci-layout:DIR nor oci-archive:FILE", ref, from)
		}
		tmp, err := os.MkdirTemp(c.TempDir(), "layout-")
		if err != nil {
			return "", "", err
		}
		defer os.RemoveAll(tmp)
		if err := untarLayout(archive, tmp); err != nil {
			return "", "", fmt.Errorf("%s: %s: %w", ref, from, err)
		}
		dir = tmp
	}
	img, err := imageFromLayout(dir, ref)
	if err != nil {
		return "", "", fmt.Errorf("%s: %s: %w", ref, from, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", "", err
	}
	if wantDigest != "" && d.String() != wantDigest {
		return "", "", &MismatchError{What: ref + " from " + from, Expected: wantDigest, Actual: d.String()}
	}
	p, err := c.PutImage(img, ref, d.String())
	return d.String(), p, err
}

func imageFromLayout(dir, ref string) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return nil, err
	}
	var match []v1.Descriptor
	for _, m := range im.Manifests {
		n := m.Annotations["io.containerd.image.name"]
		r := m.Annotations["org.opencontainers.image.ref.name"]
		if n == tag.Name() || r == tag.Name() || r == tag.TagStr() || (len(im.Manifests) == 1 && n == "" && r == "") {
			match = append(match, m)
		}
	}
	if len(match) != 1 {
		return nil, fmt.Errorf("the layout has %d entries for %s (annotate it with org.opencontainers.image.ref.name)", len(match), ref)
	}
	desc := match[0]
	if desc.MediaType.IsIndex() {
		child, err := idx.ImageIndex(desc.Digest)
		if err != nil {
			return nil, err
		}
		cm, err := child.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, m := range cm.Manifests {
			if m.Platform != nil && m.Platform.OS == Platform.OS && m.Platform.Architecture == Platform.Architecture {
				return child.Image(m.Digest)
			}
		}
		return nil, errors.New("its index has no linux/amd64 image")
	}
	return idx.Image(desc.Digest)
}

// untarLayout unpacks an OCI archive's regular files (oci-layout,
// index.json, blobs/...) into dir, refusing paths that leave it.
func untarLayout(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		clean := filepath.Clean(h.Name)
		if filepath.IsAbs(clean) || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("unsafe path %q in the archive", h.Name)
		}
		p := filepath.Join(dir, clean)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		out, err := os.Create(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
