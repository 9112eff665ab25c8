package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestDoubling: the pauses double from the first to the ceiling and stay
// there.
func TestDoubling(t *testing.T) {
	d := New(time.Microsecond, 5*time.Microsecond)
	var got []time.Duration
	for range 5 {
		got = append(got, d.Next())
		if err := d.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	want := []time.Duration{1000, 2000, 4000, 5000, 5000}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pauses %v, want %v", got, want)
		}
	}
	if d := New(time.Hour, time.Minute); d.Next() != time.Minute {
		t.Errorf("a first pause beyond the ceiling: Next() = %s, want the ceiling", d.Next())
	}
}

// TestWaitStopsWithTheContext: an ended context ends the pause with its
// error, and the pause does not double.
func TestWaitStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := New(time.Hour, 2*time.Hour)
	if err := d.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with an ended context: %v, want context.Canceled", err)
	}
	if d.Next() != time.Hour {
		t.Errorf("after an interrupted Wait: Next() = %s, want the same hour", d.Next())
	}
}
