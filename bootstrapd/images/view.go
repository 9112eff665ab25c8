package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/opencontainers/image-spec/identity"
)

// View mounts a read-only view of pinned image e's file system on a new
// directory under parent, for a program the node runs outside a container:
// the etcd that stands in for a stale member (bootstrapd/rejoin) comes from
// the pinned etcd image, so the node carries one etcd, not two. The image
// must be the locked one. release unmounts the view and lets containerd
// drop it; it is safe to call once the program has exited.
func View(ctx context.Context, c *client.Client, e Entry, parent string) (dir string, release func(), err error) {
	ctx = withNamespace(ctx)
	img, err := c.GetImage(ctx, e.Ref)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", e.Ref, err)
	}
	if got := img.Target().Digest.String(); got != e.Digest {
		return "", nil, &MismatchError{Ref: e.Ref, Got: got, Want: e.Digest, Where: "containerd"}
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", e.Ref, err)
	}
	// The lease keeps the view from the garbage collector while it is
	// mounted, and expires should bootstrapd die before release.
	ls := c.LeasesService()
	lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return "", nil, err
	}
	lctx := leases.WithLease(ctx, lease.ID)
	sn := c.SnapshotService(Snapshotter)
	key := "kubeboot-view-" + lease.ID
	var cleanup []func() error
	release = func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			_ = cleanup[i]()
		}
	}
	dctx := context.WithoutCancel(ctx)
	cleanup = append(cleanup, func() error { return ls.Delete(dctx, lease, leases.SynchronousDelete) })
	mounts, err := sn.View(lctx, key, identity.ChainID(diffIDs).String())
	if err != nil {
		release()
		return "", nil, fmt.Errorf("%s: view of its snapshot: %w", e.Ref, err)
	}
	cleanup = append(cleanup, func() error { return sn.Remove(dctx, key) })
	if dir, err = os.MkdirTemp(parent, "view-"); err != nil {
		release()
		return "", nil, err
	}
	cleanup = append(cleanup, func() error { return os.Remove(dir) })
	if err := mount.All(mounts, dir); err != nil {
		release()
		return "", nil, fmt.Errorf("%s: mount its snapshot on %s: %w", e.Ref, dir, err)
	}
	cleanup = append(cleanup, func() error { return mount.UnmountAll(dir, 0) })
	return dir, release, nil
}

// Find is the entry of the index whose repository is repo.
func Find(entries []Entry, repo string) (Entry, error) {
	for _, e := range entries {
		if e.Repository() == repo {
			return e, nil
		}
	}
	return Entry{}, errors.New(repo + " is not a pinned image of this node")
}
