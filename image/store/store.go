// Package store prepares, at build time, the containerd image store a node
// starts with: our own containerd (the pinned build from the artifact
// cache) runs on a private root with the CRI plugin off, every locked image
// is imported into namespace k8s.io by the same code as the node's images
// stage (bootstrapd/images.Import: tag, digest and ID references labelled
// pinned and managed, unpacked for overlayfs, layer blobs discarded), and
// the result is made reproducible:
//
//   - only the store itself is kept: the metadata database, the content
//     blobs (manifests and configs), the overlayfs snapshots and their
//     database; containerd's other directories (its introspection UUID
//     above all, which must differ per node) are dropped and recreated by
//     containerd on the node;
//   - both bolt databases are rewritten key by key into fresh files, with
//     every createdat/updatedat timestamp set to SOURCE_DATE_EPOCH: the
//     copy holds no freed pages with stale data, and the same inputs give
//     the same bytes.
//
// File times in the snapshots are left as extracted; the file system that
// carries the store (squashfs -all-time) fixes them.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/image/privatecontainerd"
)

// Image is one image to import: its index entry and its archive.
type Image struct {
	images.Entry
	Archive string
}

// Options of one store build.
type Options struct {
	// Containerd is the containerd binary.
	Containerd string
	Images     []Image
	// Root is the new store (containerd's root; /var/lib/containerd on
	// the node). It must not exist.
	Root            string
	SourceDateEpoch int64
	Log             *slog.Logger
}

// kept are the parts of containerd's root that make the store, relative to
// it; everything else is removed.
var kept = []string{
	"io.containerd.metadata.v1.bolt/meta.db",
	"io.containerd.content.v1.content/blobs",
	"io.containerd.snapshotter.v1.overlayfs/metadata.db",
	"io.containerd.snapshotter.v1.overlayfs/snapshots",
}

// databases are rewritten with fixed timestamps.
var databases = []string{
	"io.containerd.metadata.v1.bolt/meta.db",
	"io.containerd.snapshotter.v1.overlayfs/metadata.db",
}

// Build imports every image into a new store at o.Root. containerd is
// stopped by its pid before Build returns, also on error or cancellation.
func Build(ctx context.Context, o Options) (err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(o.Root); err == nil {
		return fmt.Errorf("store %s already exists", o.Root)
	}
	d, err := privatecontainerd.Start(ctx, privatecontainerd.Options{
		Binaries: map[string]string{"containerd": o.Containerd}, Root: o.Root,
	})
	if err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	defer func() {
		if serr := d.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	if err := importAll(ctx, d, o); err != nil {
		if ctx.Err() != nil {
			return err // interrupted: containerd's log adds nothing
		}
		return fmt.Errorf("%w\ncontainerd's log:\n%s", err, d.LogTail())
	}
	if err := d.Stop(); err != nil {
		return err
	}
	return normalize(o.Root, time.Unix(o.SourceDateEpoch, 0))
}

// importAll imports one image at a time, in order: the snapshot ids
// containerd hands out follow the order of the unpacks.
func importAll(ctx context.Context, d *privatecontainerd.Daemon, o Options) error {
	c, err := images.Connect(ctx, d.Socket)
	if err != nil {
		return err
	}
	defer c.Close()
	entries := make([]images.Entry, 0, len(o.Images))
	for _, im := range o.Images {
		start := time.Now()
		if err := images.Import(ctx, c, im.Entry, im.Archive); err != nil {
			return fmt.Errorf("%s: %w", im.Ref, err)
		}
		o.Log.Info("image imported", "ref", im.Ref, "seconds", time.Since(start).Round(time.Millisecond).Seconds())
		entries = append(entries, im.Entry)
	}
	sts, err := images.Verify(ctx, c, entries)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range sts {
		if !st.OK() {
			errs = append(errs, fmt.Errorf("%s after import: %s", st.Ref, st.Missing()))
		}
	}
	return errors.Join(errs...)
}

// normalize keeps only the store and rewrites its databases.
func normalize(root string, epoch time.Time) error {
	if err := prune(root, ""); err != nil {
		return err
	}
	stamp, err := epoch.UTC().MarshalBinary()
	if err != nil {
		return err
	}
	for _, db := range databases {
		if err := rewriteDB(filepath.Join(root, db), stamp); err != nil {
			return fmt.Errorf("%s: %w", db, err)
		}
	}
	return nil
}

// prune removes every entry under root/rel that is neither kept nor on the
// way to something kept.
func prune(root, rel string) error {
	entries, err := os.ReadDir(filepath.Join(root, rel))
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(rel, e.Name())
		switch {
		case slices.Contains(kept, p):
		case e.IsDir() && slices.ContainsFunc(kept, func(k string) bool { return len(k) > len(p) && k[:len(p)+1] == p+"/" }):
			if err := prune(root, p); err != nil {
				return err
			}
		default:
			if err := os.RemoveAll(filepath.Join(root, p)); err != nil {
				return err
			}
		}
	}
	return nil
}

// timestampKeys are where containerd's bolt databases keep times
// (core/metadata/boltutil).
var timestampKeys = []string{"createdat", "updatedat"}

// rewriteDB copies the bolt database at path into a fresh file, with every
// timestamp set to stamp, and replaces it. bbolt writes the dirty child
// buckets of a bucket in Go map order, so the copy runs one transaction
// per bucket (its own keys, in key order): each transaction dirties one
// chain of buckets and the same database always gives the same bytes.
func rewriteDB(path string, stamp []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	src, err := bolt.Open(path, 0, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := path + ".rewrite"
	_ = os.Remove(tmp)
	dst, err := bolt.Open(tmp, st.Mode().Perm(), &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return err
	}
	err = src.View(func(stx *bolt.Tx) error {
		return stx.ForEach(func(name []byte, sb *bolt.Bucket) error {
			return copyBucket(dst, [][]byte{name}, sb, stamp)
		})
	})
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, st.Mode().Perm()) // Open's mode went through the umask
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// copyBucket creates the bucket at path in dst with src's sequence and
// keys, then its child buckets, each in a transaction of its own.
func copyBucket(dst *bolt.DB, path [][]byte, src *bolt.Bucket, stamp []byte) error {
	var children [][]byte
	err := dst.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(path[0])
		for _, name := range path[1:] {
			if err != nil {
				return err
			}
			b, err = b.CreateBucketIfNotExists(name)
		}
		if err != nil {
			return err
		}
		if err := b.SetSequence(src.Sequence()); err != nil {
			return err
		}
		return src.ForEach(func(k, v []byte) error {
			if v == nil {
				children = append(children, k)
				return nil
			}
			if slices.Contains(timestampKeys, string(k)) {
				v = stamp
			}
			return b.Put(k, v)
		})
	})
	if err != nil {
		return err
	}
	for _, k := range children {
		if err := copyBucket(dst, append(slices.Clip(path), k), src.Bucket(k), stamp); err != nil {
			return err
		}
	}
	return nil
}
