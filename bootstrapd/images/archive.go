package images

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxArchiveIndex bounds the index.json read from an archive.
const maxArchiveIndex = 1 << 20

// archiveImage is what an OCI archive says it holds: the manifest its
// index.json names and the reference containerd's importer will give it.
type archiveImage struct {
	Name   string
	Target ocispec.Descriptor
}

// readArchive reads index.json of the OCI archive at p without reading the
// blobs (tar skips them by seeking). The archive must hold exactly one image
// named by io.containerd.image.name, as the builder writes them.
func readArchive(p string) (archiveImage, error) {
	f, err := os.Open(p)
	if err != nil {
		return archiveImage{}, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return archiveImage{}, fmt.Errorf("%s: no index.json: not an OCI archive", p)
		}
		if err != nil {
			return archiveImage{}, fmt.Errorf("%s: %w", p, err)
		}
		if hdr.Name != "index.json" && hdr.Name != "./index.json" {
			continue
		}
		if hdr.Size > maxArchiveIndex {
			return archiveImage{}, fmt.Errorf("%s: index.json is %d bytes, more than %d", p, hdr.Size, maxArchiveIndex)
		}
		var idx ocispec.Index
		if err := json.NewDecoder(io.LimitReader(tr, maxArchiveIndex)).Decode(&idx); err != nil {
			return archiveImage{}, fmt.Errorf("%s: index.json: %w", p, err)
		}
		if len(idx.Manifests) != 1 {
			return archiveImage{}, fmt.Errorf("%s: index.json lists %d images, want 1", p, len(idx.Manifests))
		}
		m := idx.Manifests[0]
		return archiveImage{Name: m.Annotations[imageNameAnnotation], Target: m}, nil
	}
}

// imageNameAnnotation names the image containerd's importer creates.
const imageNameAnnotation = "io.containerd.image.name"
