package network

import (
	"context"
	"testing"
)

// BenchmarkApplyNoChange re-applies configs/controller.yaml's network to a
// namespace that already matches it: the cost of a second boot's stage.
func BenchmarkApplyNoChange(b *testing.B) {
	n := newTestNet(b, referenceLinks)
	env := n.env(controllerNetwork(b))
	s := testStage()
	apply(b, s, env)
	for b.Loop() {
		ch, err := s.Apply(context.Background(), env)
		if err != nil || len(ch) != 0 {
			b.Fatalf("re-Apply: %q, %v", ch, err)
		}
	}
}
