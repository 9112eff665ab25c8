package images_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"kubeboot.dev/kubeboot/bootstrapd/images"
)

// TestViewMountsThePinnedImage mounts the etcd test image's file system
// from a real containerd, reads its binary, and releases the view: the
// directory is gone and containerd has no snapshot left but the image's.
func TestViewMountsThePinnedImage(t *testing.T) {
	n := newNode(t)
	if _, err := images.New().Apply(context.Background(), n.env); err != nil {
		t.Fatal(err)
	}
	e, err := images.Find(n.entries, "registry.k8s.io/etcd")
	if err != nil {
		t.Fatal(err)
	}
	countSnapshots := func() int {
		count := 0
		if err := n.client.SnapshotService(images.Snapshotter).Walk(ctx(), func(context.Context, snapshots.Info) error { count++; return nil }); err != nil {
			t.Fatal(err)
		}
		return count
	}
	before := countSnapshots()
	parent := t.TempDir()
	dir, release, err := images.View(context.Background(), n.client, e, parent)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "usr/local/bin/etcd"))
	if err != nil || string(got) != "etcd" {
		t.Errorf("etcd in the view: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err == nil {
		t.Error("the view is writable")
	}
	if countSnapshots() != before+1 {
		t.Errorf("snapshots with the view: %d, before: %d", countSnapshots(), before)
	}
	release()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("view directory after release: %v", err)
	}
	if countSnapshots() != before {
		t.Errorf("snapshots after release: %d, before: %d", countSnapshots(), before)
	}

	if _, err := images.Find(n.entries, "registry.k8s.io/kube-apiserver"); err == nil {
		t.Error("Find found an image the index does not list")
	}
	wrong := e
	wrong.Digest = n.entries[0].Digest
	if _, _, err := images.View(context.Background(), n.client, wrong, parent); err == nil {
		t.Error("a view of an image with another digest than the lock's was made")
	}
}
