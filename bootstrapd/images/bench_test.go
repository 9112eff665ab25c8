package images_test

import (
	"context"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/images"
)

// BenchmarkPlanNoChange is the images stage on a node whose pinned images
// are all in place (every boot after the first, and the first too with the
// build-time store): the check of three images against a real containerd.
func BenchmarkPlanNoChange(b *testing.B) {
	n := newNode(b)
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
