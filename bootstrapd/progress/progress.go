// Package progress is what bootstrapd did on this boot: which steps of the
// plan apply to the node, which one runs now and what it waits for, and
// how each one ended (applied, up to date, done earlier). The stage records
// under /var/lib/kubeboot say what finished, ever; this says what happened
// since the machine started, so `bootstrapd status` and the console banner
// can tell "up to date on this boot" from "done on an earlier boot" and
// name the step a pending stage waits on.
//
// It is kept in /run/kubeboot/progress.json, on the tmpfs that every boot
// starts empty, so it never describes another boot, and writing it on
// every run does not touch the node's persistent state.
package progress

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/engine"
	"kubeboot.dev/kubeboot/machineconfig"
)

// Dir holds the per-boot files: progress.json and the console banner.
const Dir = "/run/kubeboot"

// File is the per-boot record, relative to the root.
const File = Dir + "/progress.json"

// maxSize bounds the file read back: a plan of a few dozen steps.
const maxSize = 1 << 20

// States of a step on this boot.
const (
	Running  = "running"
	Applied  = string(engine.Applied)
	UpToDate = string(engine.UpToDate)
	DoneOnce = string(engine.DoneOnce)
	Failed   = "failed"
)

// Boot is the progress of the runs of this boot.
type Boot struct {
	BootID string `json:"bootID"`
	// PID is the bootstrapd that wrote last; a step "running" whose
	// process is gone was interrupted.
	PID      int       `json:"pid"`
	Role     string    `json:"role"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	Activity string    `json:"activity,omitempty"` // the last STATUS= line
	// Ended is when the last run returned; zero while it runs (or if it
	// died).
	Ended time.Time `json:"ended,omitzero"`
	Steps []Step    `json:"steps"`
}

// Step is one line of the plan as this boot saw it.
type Step struct {
	Stage   string `json:"stage"`
	Phase   string `json:"phase"`
	Kind    string `json:"kind"`
	Applies bool   `json:"applies"`
	// State is empty until the step starts on this boot.
	State    string    `json:"state,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	Duration string    `json:"duration,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
}

// Recorder keeps the file up to date through a run.
type Recorder struct {
	path string
	boot Boot
}

// Start begins the record of a run of plan for cfg under root. A run
// earlier on the same boot keeps what it found for the steps this run
// does not touch (a later `bootstrapd run --only network` does not make
// the other stages look unchecked).
func Start(root string, plan []engine.Step, cfg *machineconfig.MachineConfig) (*Recorder, error) {
	r := &Recorder{path: filepath.Join(root, File)}
	id, err := BootID()
	if err != nil {
		return nil, err
	}
	prev, err := Read(root)
	if err != nil || prev == nil || prev.BootID != id {
		prev = nil
	}
	now := time.Now()
	r.boot = Boot{BootID: id, PID: os.Getpid(), Role: string(cfg.Role), Started: now}
	if prev != nil {
		r.boot.Started = prev.Started
	}
	for _, s := range plan {
		st := Step{Stage: s.Name(), Phase: s.Phase, Kind: string(s.Kind), Applies: s.AppliesTo(cfg)}
		if prev != nil {
			if old := prev.step(s.Name()); old != nil && old.State != Running {
				st.State, st.Started, st.Duration, st.Attempts = old.State, old.Started, old.Duration, old.Attempts
			}
		}
		r.boot.Steps = append(r.boot.Steps, st)
	}
	return r, r.write()
}

// Activity records the unit's last status line.
func (r *Recorder) Activity(s string) error {
	r.boot.Activity = s
	return r.write()
}

// StepStarted marks a step running.
func (r *Recorder) StepStarted(name string) error {
	if s := r.boot.step(name); s != nil {
		*s = Step{Stage: s.Stage, Phase: s.Phase, Kind: s.Kind, Applies: s.Applies, State: Running, Started: time.Now()}
	}
	return r.write()
}

// StepEnded records how a step ended.
func (r *Recorder) StepEnded(o engine.Outcome, err error) error {
	if s := r.boot.step(o.Stage); s != nil {
		s.State = string(o.Action)
		if err != nil {
			s.State = Failed
		}
		s.Duration = o.Duration.Round(time.Millisecond).String()
		s.Attempts = o.Attempts
	}
	return r.write()
}

func (b *Boot) step(name string) *Step {
	for i := range b.Steps {
		if b.Steps[i].Stage == name {
			return &b.Steps[i]
		}
	}
	return nil
}

// End records that the run returned.
func (r *Recorder) End() error {
	r.boot.Ended = time.Now()
	return r.write()
}

// Alive reports whether the run that wrote b is still at work: it has not
// ended and its process exists.
func (b *Boot) Alive() bool {
	if !b.Ended.IsZero() || b.PID <= 0 {
		return false
	}
	err := unix.Kill(b.PID, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

func (r *Recorder) write() error {
	r.boot.Updated = time.Now()
	data, err := json.MarshalIndent(r.boot, "", "  ")
	if err != nil {
		return err
	}
	// Stage names and status lines only; 0600 as the state records, since
	// a status line may quote host details.
	if err := atomicfile.Write(r.path, append(data, '\n'), 0o600, 0o755); err != nil {
		return fmt.Errorf("progress: %w", err)
	}
	return nil
}

// Read returns this boot's record under root, or nil when bootstrapd has
// not run since the machine started (or the record is of another boot).
func Read(root string) (*Boot, error) {
	p := filepath.Join(root, File)
	info, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if info.Size() > maxSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, maxSize)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var b Boot
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %v", p, err)
	}
	if id, err := BootID(); err != nil || id != b.BootID {
		return nil, err
	}
	return &b, nil
}

// BootID is the kernel's id of this boot.
func BootID() (string, error) {
	id, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read the boot id: %w", err)
	}
	return strings.TrimSpace(string(id)), nil
}
