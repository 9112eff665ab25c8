package kubeadm

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// A join's preparation is retried while it fails temporarily (the
// endpoint not answering), keeping what each try changed, and stops at
// once on a lasting error or when the step's time is up.
func TestWaitWhileTemporary(t *testing.T) {
	var reports []string
	env := &stage.Env{Log: slog.New(slog.DiscardHandler)}
	env.Progress = func(msg string) { reports = append(reports, msg) }
	unreachable := stage.Temporary(errors.New("ask the API server controller.home.local:6443 about Node w1: context deadline exceeded"))

	tries := 0
	changes, err := waitWhileTemporary(context.Background(), env, time.Millisecond, 4*time.Millisecond, func() ([]stage.Change, error) {
		tries++
		if tries == 1 {
			return []stage.Change{"remove the stale etcd member"}, unreachable
		}
		if tries < 5 {
			return nil, unreachable
		}
		return nil, nil
	})
	if err != nil || tries != 5 || len(changes) != 1 {
		t.Errorf("after 4 temporary failures: %d tries, changes %q, err %v; want 5 tries, the first try's change, nil", tries, changes, err)
	}
	if len(reports) != 4 {
		t.Errorf("reports %q, want one per failed try", reports)
	}

	tries = 0
	lasting := errors.New("the cluster refuses the token")
	if _, err := waitWhileTemporary(context.Background(), env, time.Millisecond, time.Millisecond, func() ([]stage.Change, error) {
		tries++
		return nil, lasting
	}); !errors.Is(err, lasting) || tries != 1 {
		t.Errorf("lasting error: %d tries, %v; want 1 try and the error", tries, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := waitWhileTemporary(ctx, env, time.Millisecond, 10*time.Millisecond, func() ([]stage.Change, error) {
		return nil, unreachable
	}); !stage.IsTemporary(err) || ctx.Err() == nil {
		t.Errorf("step time up: %v, ctx %v; want the temporary error once the context ended", err, ctx.Err())
	}
}
