package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/machineconfig"
)

// fileStage is a test stage with a real effect: it makes <root>/<path> hold
// the config's hostname, so the engine's records and reruns can be checked
// against the file system.
type fileStage struct {
	name, path string
	applies    int
}

func (s *fileStage) Name() string { return s.name }

// Inputs: the hostname, which is all it writes.
func (s *fileStage) Inputs(cfg *machineconfig.MachineConfig) any { return cfg.Hostname }

func (s *fileStage) Plan(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	cur, _ := os.ReadFile(env.Path(s.path))
	if string(cur) == env.Config.Hostname {
		return nil, nil
	}
	return []stage.Change{stage.Change("write " + s.path)}, nil
}

func (s *fileStage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	s.applies++
	changes, _ := s.Plan(ctx, env)
	if len(changes) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(env.Path(s.path)), 0o755); err != nil {
		return nil, err
	}
	return changes, os.WriteFile(env.Path(s.path), []byte(env.Config.Hostname), 0o644)
}

// flakyStage fails its first failures applies, temporarily or not, and
// remembers when each apply happened.
type flakyStage struct {
	failures  int
	permanent bool
	calls     []time.Time
}

func (s *flakyStage) Name() string                            { return "flaky" }
func (s *flakyStage) Inputs(*machineconfig.MachineConfig) any { return nil }
func (s *flakyStage) Plan(context.Context, *stage.Env) ([]stage.Change, error) {
	if len(s.calls) > s.failures {
		return nil, nil
	}
	return []stage.Change{"flaky thing"}, nil
}
func (s *flakyStage) Apply(context.Context, *stage.Env) ([]stage.Change, error) {
	s.calls = append(s.calls, time.Now())
	if len(s.calls) <= s.failures {
		err := fmt.Errorf("link enp1s0 has no carrier yet (try %d)", len(s.calls))
		if s.permanent {
			return nil, err
		}
		return nil, stage.Temporary(err)
	}
	return []stage.Change{"flaky thing"}, nil
}

// invalidStage refuses the host in Validate.
type invalidStage struct{ fileStage }

func (s *invalidStage) Validate(context.Context, *stage.Env) error {
	return errors.New("no link with MAC 52:54:00:80:ad:b6")
}

func newEngine(t *testing.T, hostname string) *Engine {
	t.Helper()
	root := t.TempDir()
	return &Engine{
		Env: &stage.Env{
			Root: root, NetNS: netns.None(), Log: slog.New(slog.DiscardHandler),
			Config: &machineconfig.MachineConfig{APIVersion: machineconfig.APIVersion, Kind: machineconfig.Kind, Hostname: hostname},
		},
		State:   state.Open(root),
		Source:  "test",
		Backoff: Backoff{Initial: 20 * time.Millisecond, Max: 40 * time.Millisecond, Attempts: 4},
	}
}

// snapshot returns every file under dir with its content and mtime.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		out[strings.TrimPrefix(p, dir)] = fmt.Sprintf("%s@%d", data, info.ModTime().UnixNano())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// steps makes a plan of Converge steps.
func steps(stages ...stage.Stage) []Step {
	var out []Step
	for _, s := range stages {
		out = append(out, Step{Stage: s, Kind: Converge})
	}
	return out
}

func TestRunRecordsStagesAndSecondRunChangesNothing(t *testing.T) {
	e := newEngine(t, "controller.home.local")
	a, b := &fileStage{name: "a", path: "/etc/a"}, &fileStage{name: "b", path: "/etc/b"}
	plan := steps(a, b)

	out, err := e.Run(context.Background(), plan, plan, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if o.Action != Applied || len(o.Changes) != 1 || o.Attempts != 1 {
			t.Errorf("first run %s: %+v, want applied with 1 change in 1 attempt", o.Stage, o)
		}
	}
	hash := e.Env.Config.Hash()
	for _, st := range []stage.Stage{a, b} {
		n := st.Name()
		r, err := e.State.Stage(n)
		if err != nil || r == nil {
			t.Fatalf("record of %s: %v %v", n, r, err)
		}
		if r.ConfigHash != hash || r.Fingerprint != Fingerprint(st, e.Env.Config) || r.Kind != "converge" || r.Attempts != 1 || r.Finished.Before(r.Started) || len(r.Changes) != 1 {
			t.Errorf("record of %s = %+v", n, r)
		}
	}
	done, err := e.State.Done()
	if err != nil || done == nil || done.ConfigHash != hash || len(done.Stages) != 2 || done.Stages[0].Stage != "a" || done.Stages[1].Stage != "b" || done.Stages[0].Duration == "" {
		t.Fatalf("done marker = %+v, %v", done, err)
	}
	info, err := os.Stat(filepath.Join(e.State.Dir, "done"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("done marker mode: %v %v", info, err)
	}

	before := snapshot(t, e.Env.Root)
	out, err = e.Run(context.Background(), plan, plan, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if o.Action != UpToDate || len(o.Changes) != 0 {
			t.Errorf("second run %s: %+v, want up to date", o.Stage, o)
		}
	}
	if a.applies != 1 || b.applies != 1 {
		t.Errorf("second run applied again: a %d, b %d times", a.applies, b.applies)
	}
	after := snapshot(t, e.Env.Root)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("second run changed files:\nbefore %v\nafter  %v", before, after)
	}
}

func TestRecordedStageThatDriftedIsAppliedAgain(t *testing.T) {
	e := newEngine(t, "n1")
	a, b := &fileStage{name: "a", path: "/etc/a"}, &fileStage{name: "b", path: "/etc/b"}
	plan := steps(a, b)
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	// What a reboot does to kernel state: the effect is gone, the record stays.
	if err := os.Remove(filepath.Join(e.Env.Root, "etc/b")); err != nil {
		t.Fatal(err)
	}
	out, err := e.Run(context.Background(), plan, plan, false)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Action != UpToDate || out[1].Action != Applied || len(out[1].Changes) != 1 {
		t.Errorf("outcomes %+v, want a up to date and b applied again", out)
	}
	if data, _ := os.ReadFile(filepath.Join(e.Env.Root, "etc/b")); string(data) != "n1" {
		t.Errorf("etc/b = %q after the rerun", data)
	}
}

func TestNewConfigClearsDoneAndAppliesAgain(t *testing.T) {
	e := newEngine(t, "n1")
	a := &fileStage{name: "a", path: "/etc/a"}
	plan := steps(a)
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	e.Env.Config.Hostname = "n2"
	// Only part of a two-stage plan runs: the node is not done with n2.
	other := &fileStage{name: "other", path: "/etc/other"}
	if _, err := e.Run(context.Background(), steps(a, other), plan, false); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(e.Env.Root, "etc/a")); string(data) != "n2" {
		t.Errorf("etc/a = %q, want n2", data)
	}
	if done, _ := e.State.Done(); done != nil {
		t.Errorf("done marker %+v stayed while stage other has not applied the new config", done)
	}
	if r, _ := e.State.Stage("a"); r == nil || r.Fingerprint != Fingerprint(a, e.Env.Config) {
		t.Errorf("record of a = %+v, want the new hash", r)
	}
}

func TestTemporaryErrorsAreRetriedWithBackoff(t *testing.T) {
	e := newEngine(t, "n1")
	f := &flakyStage{failures: 2}
	plan := steps(f)
	out, err := e.Run(context.Background(), plan, plan, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 3 || out[0].Attempts != 3 {
		t.Fatalf("applied %d times, outcome %+v; want 3 attempts", len(f.calls), out[0])
	}
	// Waits double: 20 ms, then 40 ms.
	if d := f.calls[1].Sub(f.calls[0]); d < 20*time.Millisecond {
		t.Errorf("first wait %v, want >= 20ms", d)
	}
	if d := f.calls[2].Sub(f.calls[1]); d < 40*time.Millisecond {
		t.Errorf("second wait %v, want >= 40ms", d)
	}
	if r, _ := e.State.Stage("flaky"); r == nil || r.Attempts != 3 {
		t.Errorf("record = %+v, want 3 attempts", r)
	}
}

func TestFailureMarkerAndItsClearing(t *testing.T) {
	e := newEngine(t, "n1")
	f := &flakyStage{failures: 10}
	after := &fileStage{name: "after", path: "/etc/after"}
	plan := steps(f, after)

	_, err := e.Run(context.Background(), plan, plan, false)
	if err == nil || !strings.Contains(err.Error(), "no carrier") || !strings.Contains(err.Error(), "gave up after 4 attempts") {
		t.Fatalf("err = %v, want the stage's error after 4 attempts", err)
	}
	if len(f.calls) != 4 {
		t.Errorf("applied %d times, want 4 (Backoff.Attempts)", len(f.calls))
	}
	if after.applies != 0 {
		t.Error("the stage after the failed one ran")
	}
	fail, rerr := e.State.Failure()
	if rerr != nil || fail == nil {
		t.Fatalf("failed marker: %v %v", fail, rerr)
	}
	if fail.Stage != "flaky" || fail.Attempts != 4 || !strings.Contains(fail.Reason, "no carrier") || time.Since(fail.Time) > time.Minute {
		t.Errorf("failed marker = %+v", fail)
	}
	info, _ := os.Stat(filepath.Join(e.State.Dir, "failed"))
	if info == nil || info.Mode().Perm() != 0o600 {
		t.Errorf("failed marker mode = %v, want 0600", info)
	}
	if d, _ := e.State.Done(); d != nil {
		t.Error("done marker written by a failed run")
	}

	f.failures = 0 // the link got its carrier
	f.calls = nil
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	if fail, _ := e.State.Failure(); fail != nil {
		t.Errorf("failed marker %+v left after a successful run", fail)
	}
	if d, _ := e.State.Done(); d == nil {
		t.Error("no done marker after the successful run")
	}
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	e := newEngine(t, "n1")
	f := &flakyStage{failures: 1, permanent: true}
	if _, err := e.Run(context.Background(), steps(f), steps(f), false); err == nil {
		t.Fatal("no error")
	}
	if len(f.calls) != 1 {
		t.Errorf("applied %d times, want 1", len(f.calls))
	}
}

func TestValidationFailsBeforeAnyChange(t *testing.T) {
	e := newEngine(t, "n1")
	a := &fileStage{name: "a", path: "/etc/a"}
	bad := &invalidStage{fileStage{name: "network", path: "/etc/b"}}
	plan := steps(a, bad)
	_, err := e.Run(context.Background(), plan, plan, false)
	if err == nil || !strings.Contains(err.Error(), "network: no link with MAC") {
		t.Fatalf("err = %v", err)
	}
	if a.applies != 0 {
		t.Error("stage a applied although validation failed")
	}
	if _, serr := os.Stat(filepath.Join(e.Env.Root, "etc/a")); serr == nil {
		t.Error("etc/a written although validation failed")
	}
	if fail, _ := e.State.Failure(); fail == nil || fail.Stage != "validate" {
		t.Errorf("failed marker = %+v, want stage validate", fail)
	}
}

func TestAfterStageSeesTheRecord(t *testing.T) {
	e := newEngine(t, "n1")
	plan := steps(&fileStage{name: "a", path: "/etc/a"}, &fileStage{name: "b", path: "/etc/b"})
	var seen []string
	e.AfterStage = func(name string) {
		r, err := e.State.Stage(name)
		if err != nil || r == nil {
			t.Errorf("AfterStage(%s) before its record was written", name)
		}
		seen = append(seen, name)
	}
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "a,b" {
		t.Errorf("AfterStage saw %v", seen)
	}
}

func TestSelect(t *testing.T) {
	plan := steps(&fileStage{name: "hostname"}, &fileStage{name: "network"}, &fileStage{name: "sysprep"})
	got, err := Select(plan, []string{"sysprep", "hostname"})
	if err != nil || len(got) != 2 || got[0].Name() != "hostname" || got[1].Name() != "sysprep" {
		t.Errorf("Select = %v, %v; want hostname, sysprep in plan order", got, err)
	}
	_, err = Select(plan, []string{"netwrk"})
	if err == nil || !strings.Contains(err.Error(), `unknown stage "netwrk"; stages are hostname, network, sysprep`) {
		t.Errorf("err = %v", err)
	}
}

func TestPlanChangesNothing(t *testing.T) {
	e := newEngine(t, "n1")
	a := &fileStage{name: "a", path: "/etc/a"}
	planned, err := e.Plan(context.Background(), steps(a), false)
	if err != nil || len(planned) != 1 || len(planned[0].Changes) != 1 || planned[0].Recorded {
		t.Fatalf("Plan = %+v, %v", planned, err)
	}
	entries, _ := os.ReadDir(e.Env.Root)
	if len(entries) != 0 || a.applies != 0 {
		t.Errorf("Plan wrote %v", entries)
	}
}

// lateLinkStage fails validation temporarily, like a NIC udev has not
// brought up yet.
type lateLinkStage struct {
	fileStage
	failures, calls int
}

func (s *lateLinkStage) Validate(context.Context, *stage.Env) error {
	s.calls++
	if s.calls <= s.failures {
		return stage.Temporary(errors.New("no link with MAC 52:54:00:80:ad:b6 yet"))
	}
	return nil
}

func TestTemporaryValidationErrorsAreRetried(t *testing.T) {
	e := newEngine(t, "n1")
	late := &lateLinkStage{fileStage: fileStage{name: "network", path: "/etc/net"}, failures: 2}
	plan := steps(late)
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	if late.calls != 3 || late.applies != 1 {
		t.Errorf("validated %d times, applied %d times; want 3 and 1", late.calls, late.applies)
	}

	// A permanent problem next to a temporary one is not worth waiting for.
	e = newEngine(t, "n1")
	late = &lateLinkStage{fileStage: fileStage{name: "network", path: "/etc/net"}, failures: 10}
	bad := &invalidStage{fileStage{name: "other", path: "/etc/other"}}
	plan = steps(late, bad)
	_, err := e.Run(context.Background(), plan, plan, false)
	if err == nil || !strings.Contains(err.Error(), "yet") || !strings.Contains(err.Error(), "other: no link") {
		t.Fatalf("err = %v, want both problems", err)
	}
	if late.calls != 1 {
		t.Errorf("validated %d times, want 1", late.calls)
	}
}

// countingStage records what the engine asked of it, reads only
// cfg.Kubernetes.Version (a stand-in for a stage with a narrow input), and
// can fail its Plan.
type countingStage struct {
	name           string
	plans, applies int
	planErr        error
	planChanges    []stage.Change
	envs           []*stage.Env
	validated      int
	applyPublishes string
	readBackend    *string
}

func (s *countingStage) Name() string { return s.name }
func (s *countingStage) Inputs(cfg *machineconfig.MachineConfig) any {
	return cfg.Kubernetes.Version
}
func (s *countingStage) Validate(context.Context, *stage.Env) error { s.validated++; return nil }
func (s *countingStage) Plan(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	s.plans++
	return s.planChanges, s.planErr
}
func (s *countingStage) Apply(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	s.applies++
	s.envs = append(s.envs, env)
	if s.applyPublishes != "" {
		env.Data.Firewall.Backend = s.applyPublishes
	}
	if s.readBackend != nil {
		*s.readBackend = env.Data.Firewall.Backend
	}
	return []stage.Change{stage.Change("did " + s.name)}, nil
}

func TestRecordsAreKeyedByTheStagesOwnInputs(t *testing.T) {
	e := newEngine(t, "n1")
	e.Env.Config.Kubernetes.Version = "v1.37.2"
	k := &countingStage{name: "kubeadm"}
	h := &fileStage{name: "hostname", path: "/etc/hostname"}
	plan := steps(h, k)
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	// A change the kubeadm stage does not read: it stays up to date, the
	// hostname stage applies again.
	e.Env.Config.Hostname = "n2"
	out, err := e.Run(context.Background(), plan, plan, false)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Action != Applied || out[1].Action != UpToDate || k.applies != 1 || k.plans != 1 {
		t.Errorf("after a hostname change: %+v; kubeadm applied %d, planned %d times; want hostname applied, kubeadm up to date after one plan", out, k.applies, k.plans)
	}
	// A change it reads: applied without asking its plan (the record is stale).
	e.Env.Config.Kubernetes.Version = "v1.37.3"
	if out, err = e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	if out[1].Action != Applied || k.applies != 2 || k.plans != 1 {
		t.Errorf("after a version change: %+v, applied %d, planned %d; want applied again, no plan", out, k.applies, k.plans)
	}
}

func TestAFailingPlanFailsTheStepInsteadOfApplying(t *testing.T) {
	e := newEngine(t, "n1")
	k := &countingStage{name: "join"}
	plan := steps(k)
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	k.planErr = errors.New("API server controller.home.local:6443 unreachable")
	_, err := e.Run(context.Background(), plan, plan, false)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("err = %v, want the plan's error", err)
	}
	if k.applies != 1 {
		t.Errorf("applied %d times; a failed plan must not lead to Apply", k.applies)
	}
	// A temporary plan failure is retried, then the stage is up to date.
	k.planErr = stage.Temporary(errors.New("unreachable"))
	calls := 0
	k2 := &flipPlan{countingStage: k, fixAfter: 2, calls: &calls}
	plan = steps(k2)
	out, err := e.Run(context.Background(), plan, plan, false)
	if err != nil || out[0].Action != UpToDate || out[0].Attempts != 3 || k.applies != 1 {
		t.Errorf("outcome %+v, %v, applies %d; want up to date after 3 attempts, no apply", out, err, k.applies)
	}
}

// flipPlan's plan fails temporarily fixAfter times, then finds nothing to do.
type flipPlan struct {
	*countingStage
	fixAfter int
	calls    *int
}

func (f *flipPlan) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	*f.calls++
	if *f.calls <= f.fixAfter {
		return f.countingStage.Plan(ctx, env)
	}
	return nil, nil
}

func TestOnceStepsAreDoneUntilReflashed(t *testing.T) {
	e := newEngine(t, "n1")
	e.Env.Config.Kubernetes.Version = "v1.37.2"
	k := &countingStage{name: "kubeadm-init"}
	plan := []Step{{Stage: k, Kind: Once}}
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	e.Env.Config.Kubernetes.Version = "v1.37.3"
	out, err := e.Run(context.Background(), plan, plan, false)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Action != DoneOnce || k.applies != 1 || k.plans != 0 || k.validated != 1 {
		t.Errorf("second run: %+v; applied %d, planned %d, validated %d; want done without plan, apply or validation", out, k.applies, k.plans, k.validated)
	}
	if d, _ := e.State.Done(); d == nil {
		t.Error("no done marker: a recorded once step counts as done")
	}
	planned, err := e.Plan(context.Background(), plan, false)
	if err != nil || len(planned) != 1 || !planned[0].Recorded || k.plans != 0 {
		t.Errorf("Plan = %+v, %v; want recorded without asking the stage", planned, err)
	}
	// Reflashing wipes STATE: the step runs again.
	if err := os.RemoveAll(e.State.Dir); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil || k.applies != 2 {
		t.Errorf("after a reflash: %v, applied %d times; want 2", err, k.applies)
	}
}

func TestStepsApplyByRole(t *testing.T) {
	e := newEngine(t, "n1")
	e.Env.Config.Role = machineconfig.RoleWorker
	initOnly := &countingStage{name: "kubeadm-init"}
	join := &countingStage{name: "kubeadm-join"}
	plan := []Step{
		{Stage: initOnly, Kind: Once, When: ForRoles(machineconfig.RoleInit)},
		{Stage: join, Kind: Once, When: ForRoles(machineconfig.RoleControlPlane, machineconfig.RoleWorker)},
	}
	out, err := e.Run(context.Background(), plan, plan, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Stage != "kubeadm-join" || initOnly.applies+initOnly.validated != 0 {
		t.Errorf("outcomes %+v; init stage applied %d, validated %d; want only the join", out, initOnly.applies, initOnly.validated)
	}
	d, _ := e.State.Done()
	if d == nil || len(d.Stages) != 1 {
		t.Errorf("done = %+v; want done with the one step that applies", d)
	}
	sel, _ := Select(plan, []string{"kubeadm-init"})
	if _, err := e.Run(context.Background(), plan, sel, true); err == nil || !strings.Contains(err.Error(), "does not apply to role worker") {
		t.Errorf("--only kubeadm-init on a worker: %v", err)
	}
}

func TestStepRetryAndTimeout(t *testing.T) {
	e := newEngine(t, "n1")
	e.Backoff = Backoff{} // use the steps' own
	f := &flakyStage{failures: 100}
	plan := []Step{{Stage: f, Kind: Converge,
		Retry:   Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Attempts: 1000},
		Timeout: 200 * time.Millisecond}}
	start := time.Now()
	_, err := e.Run(context.Background(), plan, plan, false)
	if err == nil || !strings.Contains(err.Error(), "time limit of 200ms") {
		t.Fatalf("err = %v, want the time limit", err)
	}
	if d := time.Since(start); d > 5*time.Second || len(f.calls) < 2 {
		t.Errorf("took %v with %d attempts; want the step retried, then stopped by its time limit", d, len(f.calls))
	}
	plan[0].Timeout = 0
	plan[0].Retry.Attempts = 2
	f.calls = nil
	if _, err := e.Run(context.Background(), plan, plan, false); err == nil || len(f.calls) != 2 {
		t.Errorf("%v after %d attempts; want 2 (the step's own retry)", err, len(f.calls))
	}
}

func TestStateDirRunDataAndPhases(t *testing.T) {
	e := newEngine(t, "n1")
	var seen string
	fw := &countingStage{name: "firewall", applyPublishes: "firewalld"}
	k := &countingStage{name: "kubeadm", readBackend: &seen}
	plan := []Step{{Stage: fw, Phase: "host"}, {Stage: k, Phase: "kubernetes"}}
	var phases []string
	e.AfterPhase = func(p string) {
		phases = append(phases, p)
		if p == "host" && k.applies != 0 {
			t.Error("AfterPhase(host) after a later phase's stage ran")
		}
	}
	if _, err := e.Run(context.Background(), plan, plan, false); err != nil {
		t.Fatal(err)
	}
	if seen != "firewalld" {
		t.Errorf("kubeadm saw firewall backend %q, want what the firewall stage published", seen)
	}
	if strings.Join(phases, ",") != "host,kubernetes" {
		t.Errorf("phases %v", phases)
	}
	dir := k.envs[0].StateDir
	info, err := os.Stat(dir)
	if err != nil || !info.IsDir() || info.Mode().Perm() != 0o700 || dir != filepath.Join(e.State.Dir, "stages", "kubeadm") {
		t.Errorf("state dir %s: %v %v", dir, info, err)
	}
	if fw.envs[0].StateDir == dir {
		t.Error("two stages share a state directory")
	}
}

// TestStepCallbacksAndReports: StepStarted and StepEnded hear every step
// of a run with its outcome, the failing one after its failed marker is
// written; a stage's Env.Report reaches Status prefixed with its name.
func TestStepCallbacksAndReports(t *testing.T) {
	e := newEngine(t, "n1")
	var events, statuses []string
	e.StepStarted = func(name string) { events = append(events, "start "+name) }
	e.StepEnded = func(o Outcome, err error) {
		f, _ := e.State.Failure()
		events = append(events, fmt.Sprintf("end %s %s err=%v marker=%v", o.Stage, o.Action, err != nil, f != nil))
	}
	e.Status = func(s string) { statuses = append(statuses, s) }
	h := &fileStage{name: "hostname", path: "/etc/hostname"}
	r := &reportingStage{}
	bad := &flakyStage{failures: 1, permanent: true}
	plan := steps(h, r, bad)
	if _, err := e.Run(context.Background(), plan, plan, false); err == nil {
		t.Fatal("the flaky stage did not fail the run")
	}
	want := "[start hostname end hostname applied err=false marker=false start report end report applied err=false marker=false start flaky end flaky  err=true marker=true]"
	if fmt.Sprint(events) != want {
		t.Errorf("events:\n got %v\nwant %s", events, want)
	}
	if !slices.Contains(statuses, "report: waiting for the node") {
		t.Errorf("statuses %q lack the stage's report", statuses)
	}
}

// reportingStage says what it waits for through Env.Report.
type reportingStage struct{}

func (reportingStage) Name() string                                             { return "report" }
func (reportingStage) Inputs(*machineconfig.MachineConfig) any                  { return nil }
func (reportingStage) Plan(context.Context, *stage.Env) ([]stage.Change, error) { return nil, nil }
func (reportingStage) Apply(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	env.Report("waiting for the node")
	return nil, nil
}
