package images_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/internal/containerdtest"
)

// BenchmarkPlanNoChange is the images stage on a node whose pinned images
// are all in place (every boot, the first too with the build-time store):
// connecting to a real containerd and checking three small images.
func BenchmarkPlanNoChange(b *testing.B) {
	n := newNode(b)
	benchPlan(b, n)
}

// BenchmarkPlanNoChangeLockedSet is the same with the seven images of
// configs/image.lock, from the artifact cache.
func BenchmarkPlanNoChangeLockedSet(b *testing.B) {
	entries, archives := containerdtest.LockedImages(b)
	n := newNodeWith(b, func(dir string) []images.Entry {
		for i, e := range entries {
			if err := os.Symlink(archives[i], filepath.Join(dir, e.File)); err != nil {
				b.Fatal(err)
			}
		}
		return entries
	})
	benchPlan(b, n)
}

func benchPlan(b *testing.B, n *node) {
	s := images.New()
	if _, err := s.Apply(context.Background(), n.env); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		ch, err := s.Plan(context.Background(), n.env)
		if err != nil || len(ch) != 0 {
			b.Fatalf("plan: %q, %v", ch, err)
		}
	}
}
