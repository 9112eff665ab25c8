package oci

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations on the index entry. containerd's importer names the image
// after io.containerd.image.name; other OCI tools read ref.name (the tag).
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// WriteArchive writes img as an OCI archive (oci-layout, index.json and
// blobs/sha256/*, sorted, fixed timestamps) tagged ref. Every blob is
// checked against its digest while it is copied, so a tampered layer from
// a registry fails here. It returns the manifest digest.
func WriteArchive(w io.Writer, img v1.Image, ref string) (v1.Hash, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: manifest: %w", ref, err)
	}
	digest, size, err := v1.SHA256(strings.NewReader(string(manifest)))
	if err != nil {
		return v1.Hash{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Hash{}, err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: config: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return v1.Hash{}, err
	}
	if got, _, _ := v1.SHA256(strings.NewReader(string(config))); got != m.Config.Digest {
		return v1.Hash{}, fmt.Errorf("%s: config blob digest is %s, manifest says %s", ref, got, m.Config.Digest)
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt,
			Size:      size,
			Digest:    digest,
			Annotations: map[string]string{
				annotationContainerdName: tag.Name(),
				annotationRefName:        tag.TagStr(),
			},
			Platform: &v1.Platform{Architecture: "amd64", OS: "linux"},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return v1.Hash{}, err
	}

	type blob struct {
		digest v1.Hash
		size   int64
		data   []byte
		layer  v1.Layer
	}
	blobs := map[string]blob{
		digest.Hex:          {digest: digest, size: size, data: manifest},
		m.Config.Digest.Hex: {digest: m.Config.Digest, size: int64(len(config)), data: config},
	}
	for _, d := range m.Layers {
		l, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("%s: layer %s: %w", ref, d.Digest, err)
		}
		blobs[d.Digest.Hex] = blob{digest: d.Digest, size: d.Size, layer: l}
	}
	keys := make([]string, 0, len(blobs))
	for k := range blobs {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	tw := tar.NewWriter(w)
	mtime := Epoch()
	dir := func(n string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: 0o755, ModTime: mtime})
	}
	file := func(n string, size int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: size, ModTime: mtime})
	}
	if err := dir("blobs/"); err != nil {
		return v1.Hash{}, err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return v1.Hash{}, err
	}
	for _, k := range keys {
		b := blobs[k]
		if err := file("blobs/sha256/"+k, b.size); err != nil {
			return v1.Hash{}, err
		}
		if b.data != nil {
			if _, err := tw.Write(b.data); err != nil {
				return v1.Hash{}, err
			}
			continue
		}
		if err := copyVerified(tw, b.layer, b.digest, b.size); err != nil {
			return v1.Hash{}, fmt.Errorf("%s: layer %s: %w", ref, b.digest, err)
		}
	}
	if err := file("index.json", int64(len(indexJSON))); err != nil {
		return v1.Hash{}, err
	}
	if _, err := tw.Write(indexJSON); err != nil {
		return v1.Hash{}, err
	}
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	if err := file("oci-layout", int64(len(layout))); err != nil {
		return v1.Hash{}, err
	}
	if _, err := tw.Write(layout); err != nil {
		return v1.Hash{}, err
	}
	return digest, tw.Close()
}

// copyVerified copies a layer's compressed bytes and checks digest and size
// itself, whatever the layer implementation does.
func copyVerified(w io.Writer, l v1.Layer, want v1.Hash, size int64) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(rc, size+1))
	if err != nil {
		return err
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if n != size || got != want.String() {
		return fmt.Errorf("content does not match the manifest: expected %s (%d bytes), got %s (%d bytes)", want, size, got, n)
	}
	return nil
}

// ArchiveInfo describes an OCI archive written by WriteArchive.
type ArchiveInfo struct {
	Ref    string  // full reference (io.containerd.image.name)
	Digest v1.Hash // manifest digest
	Config v1.ConfigFile
	Layers int
}

// ReadArchive checks an OCI archive: every blob matches its name, the
// index names exactly one image, and its manifest and config are present.
func ReadArchive(path string) (*ArchiveInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	small := map[string][]byte{} // index.json, manifests, configs (not layers)
	present := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		h := sha256.New()
		var keep []byte
		r := io.TeeReader(tr, h)
		if hdr.Size < 1<<20 {
			if keep, err = io.ReadAll(r); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, hdr.Name, err)
			}
		} else if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, hdr.Name, err)
		}
		if hexName, ok := strings.CutPrefix(hdr.Name, "blobs/sha256/"); ok {
			if got := hex.EncodeToString(h.Sum(nil)); got != hexName {
				return nil, fmt.Errorf("%s: blob %s has sha256 %s", path, hdr.Name, got)
			}
			present[hexName] = true
		}
		if keep != nil {
			small[hdr.Name] = keep
		}
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(small["index.json"], &index); err != nil {
		return nil, fmt.Errorf("%s: index.json: %w", path, err)
	}
	if len(index.Manifests) != 1 {
		return nil, fmt.Errorf("%s: index.json lists %d images, want 1", path, len(index.Manifests))
	}
	desc := index.Manifests[0]
	var m v1.Manifest
	if err := json.Unmarshal(small["blobs/sha256/"+desc.Digest.Hex], &m); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", path, desc.Digest, err)
	}
	info := &ArchiveInfo{Ref: desc.Annotations[annotationContainerdName], Digest: desc.Digest, Layers: len(m.Layers)}
	if err := json.Unmarshal(small["blobs/sha256/"+m.Config.Digest.Hex], &info.Config); err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", path, m.Config.Digest, err)
	}
	for _, l := range m.Layers {
		if !present[l.Digest.Hex] {
			return nil, fmt.Errorf("%s: layer %s is missing", path, l.Digest)
		}
	}
	return info, nil
}
