package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/image/oci"
)

// Platform is the only platform kubeboot nodes run.
var Platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// ResolveImage asks the registry which linux/amd64 image manifest ref (a
// tag) points at now. A multi-platform index is resolved to its
// linux/amd64 entry, so the digest pins exactly the bytes the node gets.
func ResolveImage(ctx context.Context, ref string, opts ...remote.Option) (string, error) {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	opts = append(opts, remote.WithContext(ctx), remote.WithPlatform(Platform))
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", ref, err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", ref, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", ref, err)
		}
		for _, m := range im.Manifests {
			if m.Platform != nil && m.Platform.OS == Platform.OS && m.Platform.Architecture == Platform.Architecture {
				return m.Digest.String(), nil
			}
		}
		return "", fmt.Errorf("resolve %s: the index has no linux/amd64 image", ref)
	}
	return desc.Digest.String(), nil
}

// TagMovedError says a tag no longer points at the pinned digest.
type TagMovedError struct {
	Ref, Expected, Actual string
}

func (e *TagMovedError) Error() string {
	return fmt.Sprintf("%s: the tag now points at %s but the lock pins %s; refusing to use it (re-run `kubeboot artifacts lock` if the change is intended)", e.Ref, e.Actual, e.Expected)
}

// PullImage stores the image ref pinned to digest as an OCI archive in the
// cache and returns its path. The tag must still resolve to digest, the
// manifest is fetched by digest, and every blob is verified while it is
// written; on any error nothing is left in the cache.
func (c *Cache) PullImage(ctx context.Context, ref, digest string, opts ...remote.Option) (string, error) {
	dst := c.ImagePath(digest)
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	now, err := ResolveImage(ctx, ref, opts...)
	if err != nil {
		return "", err
	}
	if now != digest {
		return "", &TagMovedError{Ref: ref, Expected: digest, Actual: now}
	}
	byDigest, err := name.NewDigest(tag.Context().Name()+"@"+digest, name.StrictValidation)
	if err != nil {
		return "", err
	}
	// Fetching by digest makes go-containerregistry check the manifest
	// bytes against it; WriteArchive checks every layer.
	img, err := remote.Image(byDigest, append(opts, remote.WithContext(ctx))...)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", byDigest, err)
	}
	return c.PutImage(img, ref, digest)
}

// PutImage writes img, tagged ref, as an OCI archive into the cache. If
// wantDigest is set the manifest digest must equal it. It returns the path.
func (c *Cache) PutImage(img v1.Image, ref, wantDigest string) (string, error) {
	tmp, err := os.CreateTemp(c.TempDir(), "image-*.tar")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	got, err := oci.WriteArchive(tmp, img, ref)
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if wantDigest != "" && got.String() != wantDigest {
		return "", &MismatchError{What: ref + " manifest", Expected: wantDigest, Actual: got.String()}
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	dst := c.ImagePath(got.String())
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, atomicfile.SyncDir(filepath.Dir(dst))
}

// HashFile returns the sha256 and size of a file.
func HashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
