package progress

import (
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/engine"
	"kubeboot.dev/kubeboot/bootstrapd/state"
)

// Line is one stage as `bootstrapd status` and the console banner show it.
type Line struct {
	Stage, Phase, Kind string
	// State in words: "applied on this boot", "up to date on this boot",
	// "done", "running", "failed", "interrupted", "not for this role",
	// "waits for STAGE", "recorded", "not run".
	State string
	// Detail is the failure reason or what a running step waits for.
	Detail string
	// Duration is this boot's when the step ran on it, else the record's.
	Duration string
	Attempts int
	// Finished is when the stage last applied (its record); zero if never.
	Finished time.Time
	// Problem marks a failed or interrupted step.
	Problem bool
}

// Settled reports whether the line counts as done for the steps after it.
func (l Line) Settled() bool {
	switch l.State {
	case "applied on this boot", "up to date on this boot", "done", "not for this role":
		return true
	}
	return false
}

// Lines describes every step of plan: from this boot's record b when
// bootstrapd ran on this boot (b's own copy of the plan, which knows the
// role), else from plan and the stage records alone. failed is the failed
// marker, or nil.
func Lines(st *state.Store, b *Boot, plan []engine.Step, failed *state.Failure) ([]Line, error) {
	var steps []Step
	if b != nil {
		steps = b.Steps
	} else {
		for _, s := range plan {
			steps = append(steps, Step{Stage: s.Name(), Phase: s.Phase, Kind: string(s.Kind), Applies: true})
		}
	}
	var out []Line
	// blocker is the first step (or source/validate) that stops the ones
	// after it on this boot.
	blocker := ""
	if b != nil && failed != nil && (failed.Stage == "source" || failed.Stage == "validate") && !anyStarted(steps) {
		blocker = failed.Stage + " (failed)"
	}
	for _, s := range steps {
		l := Line{Stage: s.Stage, Phase: s.Phase, Kind: s.Kind}
		rec, err := st.Stage(s.Stage)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			l.Duration, l.Attempts, l.Finished = rec.Duration, rec.Attempts, rec.Finished
		}
		if s.State != "" && s.State != Running {
			l.Duration, l.Attempts = s.Duration, s.Attempts
		}
		switch {
		case !s.Applies:
			l.State = "not for this role"
		case s.State == Running && b.Alive():
			l.State = "running"
			l.Detail = strings.TrimPrefix(b.Activity, s.Stage+": ")
			if l.Detail == "running "+s.Stage {
				l.Detail = ""
			}
		case s.State == Running:
			l.State, l.Problem = "interrupted", true
			l.Detail = "bootstrapd stopped during this step"
		case s.State == Failed:
			l.State, l.Problem = "failed", true
			if failed != nil && failed.Stage == s.Stage {
				l.Detail = failed.Reason
			}
		case s.State == Applied || s.State == UpToDate:
			l.State = s.State + " on this boot"
		case s.State == DoneOnce || (rec != nil && s.Kind == string(engine.Once)):
			l.State = "done"
		case b != nil && blocker != "":
			l.State = "waits for " + blocker
		case b != nil && b.Alive():
			l.State = "next"
		case b != nil:
			l.State = "not run on this boot"
		case rec != nil:
			l.State = "recorded"
		default:
			l.State = "not run"
		}
		if blocker == "" && s.Applies && !l.Settled() {
			blocker = s.Stage
			if l.Problem {
				blocker += " (" + l.State + ")"
			}
		}
		out = append(out, l)
	}
	return out, nil
}

func anyStarted(steps []Step) bool {
	for _, s := range steps {
		if s.State != "" {
			return true
		}
	}
	return false
}

// Total is the sum of the stage timings in the done marker: how long the
// stages took when they last applied.
func Total(d *state.Done) time.Duration {
	var sum time.Duration
	for _, s := range d.Stages {
		if v, err := time.ParseDuration(s.Duration); err == nil {
			sum += v
		}
	}
	return sum
}
