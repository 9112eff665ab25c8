package oci

import (
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Config is the runtime configuration baked into an image.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	Labels     map[string]string
}

// DefaultPath is the PATH of every assembled image: kubeadm's static pods
// call etcd and kube-* by name.
const DefaultPath = "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"

// Image is an assembled single-layer image whose layer lives in a temp
// file until Close.
type Image struct {
	v1.Image
	layer *fileLayer
}

// Close removes the layer's temp file.
func (i *Image) Close() error { return os.Remove(i.layer.path) }

// Build assembles a linux/amd64 OCI image with one layer holding entries.
// /tmp (mode 1777) is always present. tmpDir holds the layer file.
func Build(tmpDir string, cfg Config, entries []Entry) (*Image, error) {
	entries = append([]Entry{{Path: "/tmp", Dir: true, Mode: os.ModeSticky | 0o777}}, entries...)
	layer, err := buildLayer(tmpDir, entries)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: Epoch()}
	cf := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      created,
		Config: v1.Config{
			Entrypoint: cfg.Entrypoint,
			Cmd:        cfg.Cmd,
			Env:        cfg.Env,
			User:       cfg.User,
			WorkingDir: cfg.WorkingDir,
			Labels:     cfg.Labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	base, err := mutate.ConfigFile(empty.Image, cf)
	if err != nil {
		return nil, err
	}
	base = mutate.MediaType(base, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: created, CreatedBy: "kubeboot artifacts build", Comment: "single layer"},
	})
	if err != nil {
		os.Remove(layer.path)
		return nil, fmt.Errorf("assemble image: %w", err)
	}
	return &Image{Image: img, layer: layer}, nil
}
