// Package backoff paces the retries of something that is not ready yet:
// a pause that doubles after each try up to a ceiling, cut short when the
// context ends. bootstrapd's engine, config fetch, rejoin wait and
// wait-ready all retry this way.
package backoff

import (
	"context"
	"time"
)

// Doubling is a pause that starts at first and doubles after each Wait,
// never beyond most.
type Doubling struct {
	next, most time.Duration
}

// New returns a Doubling whose first pause is first, its longest most.
func New(first, most time.Duration) *Doubling {
	return &Doubling{next: min(first, most), most: most}
}

// Next is the pause the next Wait sleeps, for logs and status lines.
func (d *Doubling) Next() time.Duration { return d.next }

// Wait sleeps for the next pause and doubles it. It returns ctx's error
// when ctx ends first.
func (d *Doubling) Wait(ctx context.Context) error {
	t := time.NewTimer(d.next)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	d.next = min(d.next*2, d.most)
	return nil
}
