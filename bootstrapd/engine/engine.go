// Package engine runs bootstrapd's first-boot plan: a table of steps, each a
// stage with the rules for running it (Step). It validates every step that
// applies to the node before the first change, runs each with its own
// retries and time limit, and records what finished under the state
// directory, so a crash resumes where it stopped and a rerun changes
// nothing.
//
// A step's record holds the fingerprint of the part of the config its stage
// reads (stage.Stage.Inputs), not the hash of the whole config: rotating a
// token does not make the network stage stale, and adding a sysctl does not
// make `kubeadm init` undone.
//
// Two kinds of steps:
//   - Converge steps make state that is lost or drifts (addresses, nftables,
//     sysctls are gone after every reboot while the records stay). When the
//     record is current the engine asks the stage's Plan, which only reads:
//     an empty plan proves the host still matches; otherwise the stage is
//     applied again. A Plan that fails is a failure of the step, like a
//     failed Apply, never a reason to apply blindly.
//   - Once steps do what happens once in a node's life (kubeadm init or
//     join): once recorded they are done until the node is reflashed, even
//     if the config they read changed since (the engine says so).
package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/backoff"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/machineconfig"
)

// Kind says what a step's record means.
type Kind string

const (
	Converge Kind = "converge" // re-checked with Plan on every run
	Once     Kind = "once"     // done when recorded, until the node is reflashed
)

// Backoff bounds the retries of errors marked stage.Temporary.
type Backoff struct {
	Initial  time.Duration // wait after the first failure
	Max      time.Duration // cap of one wait; waits double up to it
	Attempts int           // tries in all, the first included
}

// DefaultBackoff waits 1+2+4+8+16+30+30 s ≈ 1.5 min before giving up: long
// enough for a link to get carrier or a service to start, short enough that
// a broken node reports its failure while someone is watching. Steps that
// wait on other machines (an API server to come up) set their own.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 30 * time.Second, Attempts: 8}

// Step is one line of the plan: a stage and how to run it.
type Step struct {
	Stage stage.Stage
	Kind  Kind
	// Phase names the group of steps this one belongs to; the engine calls
	// AfterPhase when a run leaves a phase (bootstrapd tells systemd it is
	// ready once the host phase is through, so the services that wait for
	// the network can start while the Kubernetes steps go on).
	Phase string
	// When says whether the step applies to a config (by role, say); nil
	// means always. A step that does not apply is neither run, nor
	// validated, nor needed for the node to be done.
	When func(*machineconfig.MachineConfig) bool
	// Retry bounds the retries of temporary errors; zero: DefaultBackoff.
	Retry Backoff
	// Timeout bounds the whole step, retries included; zero: only Retry
	// bounds it.
	Timeout time.Duration
}

// Name is the stage's name.
func (s Step) Name() string { return s.Stage.Name() }

// AppliesTo reports whether the step is part of the plan for cfg.
func (s Step) AppliesTo(cfg *machineconfig.MachineConfig) bool {
	return s.When == nil || s.When(cfg)
}

// ForRoles is a When that applies a step to the given roles only.
func ForRoles(roles ...machineconfig.Role) func(*machineconfig.MachineConfig) bool {
	return func(cfg *machineconfig.MachineConfig) bool { return slices.Contains(roles, cfg.Role) }
}

// Fingerprint identifies the part of cfg that the stage reads.
func Fingerprint(s stage.Stage, cfg *machineconfig.MachineConfig) string {
	b, err := json.Marshal(s.Inputs(cfg))
	if err != nil {
		// Only for inputs JSON cannot hold (NaN in a patch), which Parse
		// rejects; the error text still tells configs apart.
		b = []byte(err.Error())
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", machineconfig.APIVersion, s.Name())
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Engine runs steps against one Env and one state directory.
type Engine struct {
	Env   *stage.Env
	State *state.Store
	// Source names where Env.Config came from, for the done marker.
	Source string
	// Backoff, when set, replaces every step's Retry and the validation's
	// backoff: tests use it to fail fast.
	Backoff Backoff
	// AfterStage runs right after a step's record is written; tests use it
	// to stop the process at a stage boundary as a crash would.
	AfterStage func(name string)
	// AfterPhase runs when a run has gone through the last selected step
	// of a phase.
	AfterPhase func(phase string)
	// Status reports progress in one line (sd_notify STATUS=); may be nil.
	// A stage's Env.Report comes here too, prefixed with its name.
	Status func(string)
	// StepStarted and StepEnded, when set, hear every step of a run that
	// applies to the node as it starts and ends (with its outcome, or the
	// error that failed the run, after the failed marker is written): the
	// per-boot view of bootstrapd status and the console banner.
	StepStarted func(name string)
	StepEnded   func(o Outcome, err error)
}

// Action is what the engine did with a step.
type Action string

const (
	Applied  Action = "applied"    // Apply ran (it may have found nothing to change)
	UpToDate Action = "up to date" // recorded with these inputs and its plan is empty
	DoneOnce Action = "done"       // a Once step recorded on an earlier run
)

// Outcome is the result of one step in a run.
type Outcome struct {
	Stage    string
	Action   Action
	Changes  []stage.Change
	Attempts int
	Duration time.Duration
}

// Planned is what a step would change now.
type Planned struct {
	Stage string
	Kind  Kind
	// Recorded: finished before with the current inputs (Once: at all).
	Recorded bool
	Changes  []stage.Change
	// Err is why the stage could not tell (a service it asks is not up yet).
	Err error
}

// Select returns the steps of plan named in only, in plan order; an empty
// only selects all. Unknown names are an error listing the valid ones.
func Select(plan []Step, only []string) ([]Step, error) {
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
	var out []Step
	for _, s := range plan {
		if slices.Contains(only, s.Name()) {
			out = append(out, s)
		}
	}
	return out, nil
}

// applicable keeps the steps that apply to the config. A step named by
// --only that does not apply is an error, not a silent no-op.
func (e *Engine) applicable(steps []Step, explicit bool) ([]Step, error) {
	var out []Step
	for _, s := range steps {
		if s.AppliesTo(e.Env.Config) {
			out = append(out, s)
		} else if explicit {
			return nil, fmt.Errorf("stage %s does not apply to role %s", s.Name(), e.Env.Config.Role)
		}
	}
	return out, nil
}

// Validate asks every step that applies and may still run whether the host
// can take the config, and reports every problem at once.
func (e *Engine) Validate(ctx context.Context, steps []Step) error {
	_, err := e.validateOnce(ctx, steps)
	return err
}

// validateOnce is one round of Validate; temporary says every problem was
// marked stage.Temporary.
func (e *Engine) validateOnce(ctx context.Context, steps []Step) (temporary bool, err error) {
	var errs []error
	temporary = true
	for _, s := range steps {
		v, ok := s.Stage.(stage.Validator)
		if !ok {
			continue
		}
		if done, err := e.doneOnce(s); err != nil {
			return false, err
		} else if done {
			continue // it will not run again: nothing to validate
		}
		env, err := e.envFor(s, false)
		if err != nil {
			return false, err
		}
		if err := v.Validate(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name(), err))
			temporary = temporary && stage.IsTemporary(err)
		}
	}
	return temporary, errors.Join(errs...)
}

// doneOnce reports whether s is a Once step recorded before.
func (e *Engine) doneOnce(s Step) (bool, error) {
	if s.Kind != Once {
		return false, nil
	}
	rec, err := e.State.Stage(s.Name())
	return rec != nil, err
}

// envFor is the Env a stage runs in: the shared one with the stage's own
// state directory and log. mkdir creates the directory (0700).
func (e *Engine) envFor(s Step, mkdir bool) (*stage.Env, error) {
	env := *e.Env
	env.StateDir = e.State.StageDir(s.Name())
	env.Log = e.Env.Log.With("stage", s.Name())
	env.Progress = func(msg string) { e.status(s.Name() + ": " + msg) }
	if env.Data == nil {
		e.Env.Data = &stage.RunData{}
		env.Data = e.Env.Data
	}
	if mkdir {
		if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("state directory of %s: %w", s.Name(), err)
		}
	}
	return &env, nil
}

// Plan lists what each selected step would change now, changing nothing.
func (e *Engine) Plan(ctx context.Context, selected []Step, explicit bool) ([]Planned, error) {
	steps, err := e.applicable(selected, explicit)
	if err != nil {
		return nil, err
	}
	var out []Planned
	for _, s := range steps {
		rec, err := e.State.Stage(s.Name())
		if err != nil {
			return out, err
		}
		p := Planned{Stage: s.Name(), Kind: s.Kind}
		if s.Kind == Once && rec != nil {
			p.Recorded = true
			out = append(out, p)
			continue
		}
		p.Recorded = rec != nil && rec.Fingerprint == Fingerprint(s.Stage, e.Env.Config)
		env, err := e.envFor(s, false)
		if err != nil {
			return out, err
		}
		p.Changes, p.Err = s.Stage.Plan(ctx, env)
		out = append(out, p)
	}
	return out, nil
}

// Run validates the selected steps that apply to the config, then runs
// them in order. plan is the whole plan, used to decide whether the node is
// done (every step that applies recorded) when selected is only part of it;
// explicit says selected came from --only. On failure the failed marker
// names the stage and the reason; a successful run removes a failed marker
// left by a stage it has now completed.
func (e *Engine) Run(ctx context.Context, plan, selected []Step, explicit bool) ([]Outcome, error) {
	hash := e.Env.Config.Hash()
	if done, err := e.State.Done(); err != nil {
		return nil, err
	} else if done != nil && done.ConfigHash != hash {
		// Not done with this config until every step has seen it.
		if err := e.State.ClearDone(); err != nil {
			return nil, err
		}
	}
	steps, err := e.applicable(selected, explicit)
	if err != nil {
		return nil, err
	}

	e.status("validating")
	if attempts, err := e.validateWithRetry(ctx, steps); err != nil {
		return nil, e.fail("validate", attempts, err)
	}

	var outcomes []Outcome
	for i, s := range steps {
		if e.StepStarted != nil {
			e.StepStarted(s.Name())
		}
		o, err := e.runStep(ctx, s)
		if err != nil {
			err = e.fail(s.Name(), o.Attempts, err)
		}
		if e.StepEnded != nil {
			e.StepEnded(o, err)
		}
		if err != nil {
			return outcomes, err
		}
		outcomes = append(outcomes, o)
		if e.AfterPhase != nil && (i == len(steps)-1 || steps[i+1].Phase != s.Phase) {
			e.AfterPhase(s.Phase)
		}
	}
	return outcomes, e.finish(plan, steps, hash)
}

func (e *Engine) validateWithRetry(ctx context.Context, steps []Step) (int, error) {
	return e.retry(ctx, "validating", e.Env.Log, Backoff{}, func() (bool, error) {
		return e.validateOnce(ctx, steps)
	})
}

func (e *Engine) runStep(ctx context.Context, s Step) (Outcome, error) {
	name := s.Name()
	o := Outcome{Stage: name}
	env, err := e.envFor(s, true)
	if err != nil {
		return o, err
	}
	log := env.Log
	rec, err := e.State.Stage(name)
	if err != nil {
		return o, err
	}
	fp := Fingerprint(s.Stage, env.Config)
	if s.Kind == Once && rec != nil {
		if rec.Fingerprint != fp {
			log.Warn("done on an earlier run; the config it read has changed since, and a once-only stage does not run again: reflash the node to apply the change", "recorded", rec.Finished.Format(time.RFC3339))
		} else {
			log.Info("done on an earlier run", "recorded", rec.Finished.Format(time.RFC3339))
		}
		o.Action = DoneOnce
		return o, nil
	}
	recorded := rec != nil && rec.Fingerprint == fp

	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}
	e.status("running " + name)
	started := time.Now()
	upToDate := false
	var changes []stage.Change
	o.Attempts, err = e.retry(ctx, name, log, s.Retry, func() (bool, error) {
		if recorded {
			planned, err := s.Stage.Plan(ctx, env)
			if err != nil {
				return stage.IsTemporary(err), fmt.Errorf("checking the host against its record: %w", err)
			}
			if len(planned) == 0 {
				upToDate = true
				return false, nil
			}
			log.Info("recorded as done but the host drifted; applying again", "changes", len(planned))
		}
		var err error
		changes, err = s.Stage.Apply(ctx, env)
		return stage.IsTemporary(err), err
	})
	o.Duration = time.Since(started)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w (the stage's time limit of %s is up)", err, s.Timeout)
		}
		return o, err
	}
	if upToDate {
		log.Info("up to date", "recorded", rec.Finished.Format(time.RFC3339))
		o.Action = UpToDate
		return o, nil
	}
	o.Action, o.Changes = Applied, changes
	for _, c := range changes {
		log.Info("changed", "change", string(c))
	}
	log.Info("applied", "changes", len(changes), "attempts", o.Attempts, "duration", o.Duration.Round(time.Millisecond).String())

	finished := time.Now()
	r := state.StageRecord{
		Stage: name, Kind: string(s.Kind), Phase: s.Phase, Fingerprint: fp, ConfigHash: env.Config.Hash(),
		Started: started, Finished: finished,
		Duration: finished.Sub(started).Round(time.Millisecond).String(), Attempts: o.Attempts,
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

// retry calls try until it succeeds, fails for good (not temporary), the
// attempts are used up or ctx ends, waiting between attempts with
// exponential backoff and saying so in the log and the unit's status.
func (e *Engine) retry(ctx context.Context, what string, log *slog.Logger, b Backoff, try func() (temporary bool, err error)) (int, error) {
	switch {
	case e.Backoff.Attempts > 0:
		b = e.Backoff
	case b.Attempts < 1:
		b = DefaultBackoff
	}
	pause := backoff.New(b.Initial, b.Max)
	for attempt := 1; ; attempt++ {
		temporary, err := try()
		if err == nil {
			return attempt, nil
		}
		if !temporary || attempt >= b.Attempts || ctx.Err() != nil {
			if attempt > 1 {
				err = fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
			}
			return attempt, err
		}
		log.Warn("temporary failure; retrying", "err", err, "attempt", attempt, "wait", pause.Next().String())
		e.status(fmt.Sprintf("%s: retry %d/%d in %s: %v", what, attempt+1, b.Attempts, pause.Next(), err))
		if werr := pause.Wait(ctx); werr != nil {
			return attempt, fmt.Errorf("%w (stopped while waiting to retry: %v)", err, werr)
		}
	}
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

// finish writes the done marker when every step of the plan that applies
// is recorded (Converge: with its current inputs), and drops a failed
// marker this run has overcome.
func (e *Engine) finish(plan, ran []Step, hash string) error {
	steps, err := e.applicable(plan, false)
	if err != nil {
		return err
	}
	all := true
	var timings []state.StageTiming
	for _, s := range steps {
		rec, err := e.State.Stage(s.Name())
		if err != nil {
			return err
		}
		if rec == nil || (s.Kind == Converge && rec.Fingerprint != Fingerprint(s.Stage, e.Env.Config)) {
			all = false
			continue
		}
		timings = append(timings, state.StageTiming{Stage: s.Name(), Duration: rec.Duration, Attempts: rec.Attempts})
	}
	f, err := e.State.Failure()
	if err != nil {
		return err
	}
	overcome := all || (f != nil && (f.Stage == "source" || f.Stage == "validate" ||
		slices.ContainsFunc(ran, func(s Step) bool { return s.Name() == f.Stage })))
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
	return e.State.PutDone(state.Done{ConfigHash: hash, Source: e.Source, Stages: timings, Time: time.Now()})
}

func (e *Engine) status(s string) {
	if e.Status != nil {
		e.Status(s)
	}
}
