package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"kubeboot.dev/kubeboot/nodepath"
)

// What the CRI plugin (the kubelet's runtime) expects of an image it owns.
const (
	// Namespace is the CRI plugin's containerd namespace.
	Namespace = "k8s.io"
	// Snapshotter is the CRI plugin's snapshotter (overlays/etc/containerd/config.toml).
	Snapshotter = "overlayfs"
	// LabelPinned keeps the kubelet's image garbage collector away from an
	// image (containerd internal/cri/labels.PinnedImageLabelKey).
	LabelPinned = "io.cri-containerd.pinned"
	// LabelManaged marks an image the CRI plugin manages, as on images it
	// pulls itself (containerd internal/cri/labels.ImageLabelKey).
	LabelManaged = "io.cri-containerd.image"
)

// Labels are set on every reference of every pinned image.
func Labels() map[string]string {
	return map[string]string{LabelPinned: "pinned", LabelManaged: "managed"}
}

// Status is the state of one pinned image in containerd.
type Status struct {
	Entry
	// Found is the manifest digest the image's tag points at; "" when the
	// tag does not exist.
	Found string `json:"found,omitempty"`
	// Refs: the digest reference (repo@digest) and the ID reference (the
	// config digest) exist and point at the pinned manifest, as CRI makes
	// them for a pulled image.
	Refs bool `json:"refs"`
	// Pinned: every reference carries LabelPinned and LabelManaged.
	Pinned bool `json:"pinned"`
	// Unpacked: the image's layers are unpacked for Snapshotter.
	Unpacked bool `json:"unpacked"`
}

// Present reports whether the tag points at the pinned manifest.
func (s Status) Present() bool { return s.Found == s.Digest }

// OK reports whether the image is ready for the CRI plugin as pinned.
func (s Status) OK() bool { return s.Present() && s.Refs && s.Pinned && s.Unpacked }

// Missing says what is wrong, for plans and status output; "" when OK.
func (s Status) Missing() string {
	switch {
	case s.Found == "":
		return "missing"
	case !s.Present():
		return "wrong digest " + s.Found
	case !s.Unpacked:
		return "not unpacked"
	case !s.Refs:
		return "digest or ID reference missing"
	case !s.Pinned:
		return "not pinned"
	}
	return ""
}

// MismatchError is a pinned image whose content is not what the lock pins:
// in containerd (an image of the same name but another digest) or in the
// baked archive. It is never temporary: retrying cannot fix it.
type MismatchError struct {
	Ref, Want, Got string
	// Where holds the wrong image: "containerd" or the archive's path.
	Where string
}

func (e *MismatchError) Error() string {
	if e.Where == "containerd" {
		return fmt.Sprintf("image %s in containerd is %s, but the lock pins %s: remove it (ctr -n %s images rm %s) and rerun bootstrapd to import the pinned one",
			e.Ref, e.Got, e.Want, Namespace, e.Ref)
	}
	return fmt.Sprintf("archive %s holds %s at %s, but the lock pins %s: the image's files are damaged; reflash the node",
		e.Where, e.Ref, e.Got, e.Want)
}

// Connect dials containerd at address (a unix socket) in Namespace and
// checks that it serves. Not answering yet is an error wrapping
// errdefs.ErrUnavailable: containerd may still be starting.
func Connect(ctx context.Context, address string) (*client.Client, error) {
	// A plain connect fails at once on a socket nobody listens on, where
	// gRPC would retry until its timeout.
	conn, err := net.DialTimeout("unix", address, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("containerd is not running (%w): %w", err, errdefs.ErrUnavailable)
	}
	conn.Close()
	c, err := client.New(address, client.WithDefaultNamespace(Namespace), client.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w: %w", address, err, errdefs.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if ok, err := c.IsServing(ctx); err != nil || !ok {
		c.Close()
		return nil, fmt.Errorf("containerd at %s does not answer (%v): %w", address, err, errdefs.ErrUnavailable)
	}
	return c, nil
}

// Verify reads the state of every entry's image in containerd. It only
// reads; an image whose tag points at another digest is reported in its
// Status (see Mismatches), not as an error. It lists the image records
// once and checks the images in parallel: each check is a few round trips
// (manifest, config, snapshot).
func Verify(ctx context.Context, c *client.Client, entries []Entry) ([]Status, error) {
	ctx = withNamespace(ctx)
	all, err := c.ImageService().List(ctx)
	if err != nil {
		return nil, err
	}
	records := make(map[string]ctrimages.Image, len(all))
	for _, im := range all {
		records[im.Name] = im
	}
	out := make([]Status, len(entries))
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Go(func() {
			out[i], errs[i] = verifyOne(ctx, c, records, e)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("%s: %w", e.Ref, errs[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Mismatches returns one MismatchError per image whose tag points at
// another digest than the pinned one.
func Mismatches(sts []Status) error {
	var errs []error
	for _, s := range sts {
		if s.Found != "" && !s.Present() {
			errs = append(errs, &MismatchError{Ref: s.Ref, Want: s.Digest, Got: s.Found, Where: "containerd"})
		}
	}
	return errors.Join(errs...)
}

// maxBlob bounds the manifests and configs Verify reads (containerd's own
// limit for a fetched manifest).
const maxBlob = 4 << 20

func verifyOne(ctx context.Context, c *client.Client, records map[string]ctrimages.Image, e Entry) (Status, error) {
	st := Status{Entry: e}
	tag, ok := records[e.Ref]
	if !ok {
		return st, nil
	}
	st.Found = tag.Target.Digest.String()
	if !st.Present() {
		return st, nil
	}
	cs := c.ContentStore()
	manifest, err := readJSON[ocispec.Manifest](ctx, cs, tag.Target)
	if errdefs.IsNotFound(err) {
		// The manifest or config blob is gone: only an import brings it back.
		return st, nil
	}
	if err != nil {
		return st, err
	}
	config, err := readJSON[ocispec.Image](ctx, cs, manifest.Config)
	if errdefs.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	chain := identity.ChainID(config.RootFS.DiffIDs).String()
	switch _, err := c.SnapshotService(Snapshotter).Stat(ctx, chain); {
	case err == nil:
		st.Unpacked = true
	case !errdefs.IsNotFound(err):
		return st, err
	}
	st.Refs, st.Pinned = true, pinned(tag)
	for _, name := range []string{e.DigestRef(), manifest.Config.Digest.String()} {
		ref, ok := records[name]
		st.Refs = st.Refs && ok && ref.Target.Digest.String() == e.Digest
		st.Pinned = st.Pinned && ok && pinned(ref)
	}
	return st, nil
}

// readJSON reads and decodes the blob desc names, at most maxBlob bytes.
func readJSON[T any](ctx context.Context, cs content.Provider, desc ocispec.Descriptor) (T, error) {
	var v T
	if desc.Size > maxBlob {
		return v, fmt.Errorf("blob %s is %d bytes, more than %d", desc.Digest, desc.Size, maxBlob)
	}
	data, err := content.ReadBlob(ctx, cs, desc)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	return v, nil
}

func pinned(img ctrimages.Image) bool {
	for k, v := range Labels() {
		if img.Labels[k] != v {
			return false
		}
	}
	return true
}

// Import imports e from the OCI archive at archive into containerd the way
// the CRI plugin keeps a pulled image: the tag, the digest reference and
// the ID reference, all labelled with Labels, unpacked for Snapshotter.
// The archive must hold exactly e.Ref at e.Digest (checked before anything
// is written, and again on what containerd imported). Layer blobs are
// discarded once unpacked, as with the CRI option discard_unpacked_layers:
// the snapshots are what containers use, and the archive stays on the
// read-only root should an image ever need importing again. Run it on a
// store that already holds the image and it only restores what is missing.
func Import(ctx context.Context, c *client.Client, e Entry, archive string) (err error) {
	ctx = withNamespace(ctx)
	if err := CheckArchive(e, archive); err != nil {
		return err
	}

	// One lease holds everything imported until the image references and
	// snapshots do; deleting it synchronously lets the garbage collector
	// drop the discarded layer blobs before we return.
	ls := c.LeasesService()
	lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return err
	}
	defer func() {
		// Also after a cancelled import, but not forever.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := ls.Delete(dctx, lease, leases.SynchronousDelete); derr != nil && err == nil {
			err = fmt.Errorf("release the import lease: %w", derr)
		}
	}()
	ctx = leases.WithLease(ctx, lease.ID)

	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	imgs, err := c.Import(ctx, f,
		client.WithImageLabels(Labels()),
		client.WithDigestRef(func(d digest.Digest) string { return e.Repository() + "@" + d.String() }),
		client.WithDiscardUnpackedLayers(),
	)
	if err != nil {
		return fmt.Errorf("import %s: %w", archive, err)
	}
	var tag *ctrimages.Image
	for i := range imgs {
		if imgs[i].Name == e.Ref {
			tag = &imgs[i]
		}
	}
	if tag == nil || tag.Target.Digest.String() != e.Digest {
		return fmt.Errorf("import %s: containerd did not create %s at %s", archive, e.Ref, e.Digest)
	}
	img := client.NewImage(c, *tag)
	config, err := img.Config(ctx)
	if err != nil {
		return err
	}
	if err := putRef(ctx, c.ImageService(), config.Digest.String(), tag.Target); err != nil {
		return err
	}
	if err := img.Unpack(ctx, Snapshotter); err != nil {
		return fmt.Errorf("unpack %s: %w", e.Ref, err)
	}
	return nil
}

// CheckArchive checks, reading only its index.json, that the OCI archive
// at archive holds e.Ref at e.Digest.
func CheckArchive(e Entry, archive string) error {
	in, err := readArchive(archive)
	if err != nil {
		return err
	}
	if in.Name != e.Ref {
		return fmt.Errorf("archive %s holds %q, the index says %s", archive, in.Name, e.Ref)
	}
	if in.Target.Digest.String() != e.Digest {
		return &MismatchError{Ref: e.Ref, Want: e.Digest, Got: in.Target.Digest.String(), Where: archive}
	}
	return nil
}

// putRef creates or updates the image name -> target with Labels.
func putRef(ctx context.Context, is ctrimages.Store, name string, target ocispec.Descriptor) error {
	img := ctrimages.Image{Name: name, Target: target, Labels: Labels()}
	if _, err := is.Update(ctx, img, "target", "labels"); err == nil || !errdefs.IsNotFound(err) {
		return err
	}
	_, err := is.Create(ctx, img)
	return err
}

// ArchivePath is where e's archive is under root.
func ArchivePath(root string, e Entry) string { return filepath.Join(root, nodepath.ImagesDir, e.File) }

func withNamespace(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, Namespace)
}
