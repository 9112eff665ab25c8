// Package engine applies bootstrapd's stages in order: it validates them all
// before the first change, applies each with bounded retries, and records
// what finished under the state directory so that a crash resumes where it
// stopped and a rerun with the same config changes nothing.
//
// A stage recorded as done with the current config hash is not applied
// again blindly, nor skipped blindly: the engine asks its Plan. Kernel state
// (hostname, addresses, nftables, sysctls) is gone after every reboot while
// the records stay, so "recorded" cannot mean "still true"; Plan is cheap
// (it only reads) and an empty plan proves the host still matches. When the
// plan is not empty the stage is applied again and its record rewritten.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/state"
)

// Backoff bounds the retries of errors marked stage.Temporary.
type Backoff struct {
	Initial  time.Duration // wait after the first failure
	Max      time.Duration // cap of one wait; waits double up to it
	Attempts int           // tries in all, the first included
}

// DefaultBackoff waits 1+2+4+8+16+30+30 s ≈ 1.5 min before giving up: long
// enough for a link to get carrier or a service to start, short enough that
// a broken node reports its failure while someone is watching.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 30 * time.Second, Attempts: 8}

// Engine runs stages against one Env and one state directory.
type Engine struct {
	Env   *stage.Env
	State *state.Store
	// Source names where Env.Config came from, for the done marker.
	Source  string
	Backoff Backoff
	// AfterStage runs right after a stage's record is written; tests use it
	// to stop the process at a stage boundary as a crash would.
	AfterStage func(name string)
	// Status reports progress in one line (sd_notify STATUS=); may be nil.
	Status func(string)
}

// Action is what the engine did with a stage.
type Action string

const (
	Applied  Action = "applied"    // Apply ran (it may have found nothing to change)
	UpToDate Action = "up to date" // recorded with this config and its plan is empty
)

// Outcome is the result of one stage in a run.
type Outcome struct {
	Stage    string
	Action   Action
	Changes  []stage.Change
	Attempts int
	Duration time.Duration
}

// Planned is what a stage would change now.
type Planned struct {
	Stage    string
	Recorded bool // finished before with the current config
	Changes  []stage.Change
}

// Select returns the stages of plan named in only, in plan order; an empty
// only selects all. Unknown names are an error listing the valid ones.
func Select(plan []stage.Stage, only []string) ([]stage.Stage, error) {
	if len(only) == 0 {
		return plan, nil
	}
	var names []string
	for _, s := range plan {
		names = append(names, s.Name())
	}
	for _, n := range only {
		if !slices.Contains(names, n) {
			return nil, fmt.Errorf("unknown stage %q; stages are %s", n, strings.Join(names, ", "))
		}
	}
	var out []stage.Stage
	for _, s := range plan {
		if slices.Contains(only, s.Name()) {
			out = append(out, s)
		}
	}
	return out, nil
}

// Validate asks every stage that can check the host whether it can take
// the config, and reports every problem at once.
func (e *Engine) Validate(ctx context.Context, stages []stage.Stage) error {
	_, err := e.validateOnce(ctx, stages)
	return err
}

// validateOnce is one round of Validate; temporary says every problem was
// marked stage.Temporary.
func (e *Engine) validateOnce(ctx context.Context, stages []stage.Stage) (temporary bool, err error) {
	var errs []error
	temporary = true
	for _, s := range stages {
		v, ok := s.(stage.Validator)
		if !ok {
			continue
		}
		if err := v.Validate(ctx, e.Env); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name(), err))
			temporary = temporary && stage.IsTemporary(err)
		}
	}
	return temporary, errors.Join(errs...)
}

// validateWithRetry validates like Validate, retrying as long as every
// problem is temporary: a NIC that udev has not brought up yet fails
// validation now and passes a few seconds later.
func (e *Engine) validateWithRetry(ctx context.Context, stages []stage.Stage) (int, error) {
	return e.retry(ctx, "validating", e.Env.Log, func() (bool, error) {
		return e.validateOnce(ctx, stages)
	})
}

func (e *Engine) applyWithRetry(ctx context.Context, s stage.Stage, log *slog.Logger) ([]stage.Change, int, error) {
	var changes []stage.Change
	attempts, err := e.retry(ctx, s.Name(), log, func() (bool, error) {
		var err error
		changes, err = s.Apply(ctx, e.Env)
		return stage.IsTemporary(err), err
	})
	if err != nil {
		return nil, attempts, err
	}
	return changes, attempts, nil
}

// retry calls try until it succeeds, fails for good (not temporary), or
// the backoff's attempts are used up, waiting between attempts with
// exponential backoff and saying so in the log and the unit's status.
func (e *Engine) retry(ctx context.Context, what string, log *slog.Logger, try func() (temporary bool, err error)) (int, error) {
	b := e.backoff()
	wait := b.Initial
	for attempt := 1; ; attempt++ {
		temporary, err := try()
		if err == nil {
			return attempt, nil
		}
		if !temporary || attempt >= b.Attempts {
			if attempt > 1 {
				err = fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
			}
			return attempt, err
		}
		log.Warn("temporary failure; retrying", "err", err, "attempt", attempt, "wait", wait.String())
		e.status(fmt.Sprintf("%s: retry %d/%d in %s: %v", what, attempt+1, b.Attempts, wait, err))
		select {
		case <-ctx.Done():
			return attempt, fmt.Errorf("%w (stopped while waiting to retry: %v)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, b.Max)
	}
}

func (e *Engine) backoff() Backoff {
	if e.Backoff.Attempts < 1 {
		return DefaultBackoff
	}
	return e.Backoff
}

// Plan lists what each stage would change now, changing nothing.
func (e *Engine) Plan(ctx context.Context, stages []stage.Stage) ([]Planned, error) {
	hash := e.Env.Config.Hash()
	var out []Planned
	for _, s := range stages {
		rec, err := e.State.Stage(s.Name())
		if err != nil {
			return out, err
		}
		changes, err := s.Plan(ctx, e.Env)
		if err != nil {
			return out, fmt.Errorf("%s: plan: %w", s.Name(), err)
		}
		out = append(out, Planned{Stage: s.Name(), Recorded: rec != nil && rec.ConfigHash == hash, Changes: changes})
	}
	return out, nil
}

// Run validates the selected stages, then applies them in order. plan is
// the whole first-boot plan, used to decide whether the node is done (every
// stage recorded with this config) when selected is only part of it. On
// failure the failed marker names the stage and the reason; a successful
// run removes a failed marker left by a stage it has now completed.
func (e *Engine) Run(ctx context.Context, plan, selected []stage.Stage) ([]Outcome, error) {
	hash := e.Env.Config.Hash()
	if done, err := e.State.Done(); err != nil {
		return nil, err
	} else if done != nil && done.ConfigHash != hash {
		// The node is no longer done: a different config is being applied.
		if err := e.State.ClearDone(); err != nil {
			return nil, err
		}
	}

	e.status("validating")
	if attempts, err := e.validateWithRetry(ctx, selected); err != nil {
		return nil, e.fail("validate", attempts, err)
	}

	var outcomes []Outcome
	for _, s := range selected {
		o, err := e.runStage(ctx, s, hash)
		if err != nil {
			return outcomes, e.fail(s.Name(), o.Attempts, err)
		}
		outcomes = append(outcomes, o)
	}
	return outcomes, e.finish(plan, selected, hash)
}

func (e *Engine) runStage(ctx context.Context, s stage.Stage, hash string) (Outcome, error) {
	name := s.Name()
	log := e.Env.Log.With("stage", name)
	rec, err := e.State.Stage(name)
	if err != nil {
		return Outcome{Stage: name}, err
	}
	if rec != nil && rec.ConfigHash == hash {
		changes, err := s.Plan(ctx, e.Env)
		switch {
		case err != nil:
			log.Warn("recorded as done but its plan failed; applying again", "err", err)
		case len(changes) == 0:
			log.Info("up to date", "recorded", rec.Finished.Format(time.RFC3339))
			return Outcome{Stage: name, Action: UpToDate}, nil
		default:
			log.Info("recorded as done but the host drifted; applying again", "changes", len(changes))
		}
	}

	e.status("applying " + name)
	started := time.Now()
	changes, attempts, err := e.applyWithRetry(ctx, s, log)
	o := Outcome{Stage: name, Action: Applied, Changes: changes, Attempts: attempts, Duration: time.Since(started)}
	if err != nil {
		return o, err
	}
	for _, c := range changes {
		log.Info("changed", "change", string(c))
	}
	log.Info("applied", "changes", len(changes), "attempts", attempts, "duration", o.Duration.Round(time.Millisecond).String())

	finished := time.Now()
	r := state.StageRecord{
		Stage: name, ConfigHash: hash, Started: started, Finished: finished,
		Duration: finished.Sub(started).Round(time.Millisecond).String(), Attempts: attempts,
	}
	for _, c := range changes {
		r.Changes = append(r.Changes, string(c))
	}
	if err := e.State.PutStage(r); err != nil {
		return o, err
	}
	if e.AfterStage != nil {
		e.AfterStage(name)
	}
	return o, nil
}

// fail writes the failed marker and returns err named by stage.
func (e *Engine) fail(stageName string, attempts int, err error) error {
	err = fmt.Errorf("stage %s: %w", stageName, err)
	e.Env.Log.Error("failed", "stage", stageName, "err", err)
	e.status("failed: " + err.Error())
	if werr := e.State.PutFailure(state.Failure{
		Stage: stageName, Reason: err.Error(), Attempts: attempts,
		ConfigHash: e.Env.Config.Hash(), Time: time.Now(),
	}); werr != nil {
		return errors.Join(err, fmt.Errorf("writing the failed marker: %w", werr))
	}
	return err
}

// finish writes the done marker when every stage of the plan is recorded
// with this config, and drops a failed marker this run has overcome.
func (e *Engine) finish(plan, selected []stage.Stage, hash string) error {
	all := true
	var names []string
	for _, s := range plan {
		names = append(names, s.Name())
		rec, err := e.State.Stage(s.Name())
		if err != nil {
			return err
		}
		if rec == nil || rec.ConfigHash != hash {
			all = false
		}
	}
	f, err := e.State.Failure()
	if err != nil {
		return err
	}
	overcome := all || (f != nil && (f.Stage == "source" || f.Stage == "validate" ||
		slices.ContainsFunc(selected, func(s stage.Stage) bool { return s.Name() == f.Stage })))
	if f != nil && overcome {
		if err := e.State.ClearFailure(); err != nil {
			return err
		}
	}
	if !all {
		e.status("selected stages done")
		return nil
	}
	e.status("done")
	if done, err := e.State.Done(); err != nil || (done != nil && done.ConfigHash == hash) {
		return err // already done with this config: a rerun rewrites nothing
	}
	return e.State.PutDone(state.Done{ConfigHash: hash, Source: e.Source, Stages: names, Time: time.Now()})
}

func (e *Engine) status(s string) {
	if e.Status != nil {
		e.Status(s)
	}
}
