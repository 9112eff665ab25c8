package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
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

func (s *flakyStage) Name() string { return "flaky" }
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

func TestRunRecordsStagesAndSecondRunChangesNothing(t *testing.T) {
	e := newEngine(t, "controller.home.local")
	a, b := &fileStage{name: "a", path: "/etc/a"}, &fileStage{name: "b", path: "/etc/b"}
	plan := []stage.Stage{a, b}

	out, err := e.Run(context.Background(), plan, plan)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if o.Action != Applied || len(o.Changes) != 1 || o.Attempts != 1 {
			t.Errorf("first run %s: %+v, want applied with 1 change in 1 attempt", o.Stage, o)
		}
	}
	hash := e.Env.Config.Hash()
	for _, n := range []string{"a", "b"} {
		r, err := e.State.Stage(n)
		if err != nil || r == nil {
			t.Fatalf("record of %s: %v %v", n, r, err)
		}
		if r.ConfigHash != hash || r.Attempts != 1 || r.Finished.Before(r.Started) || len(r.Changes) != 1 {
			t.Errorf("record of %s = %+v", n, r)
		}
	}
	done, err := e.State.Done()
	if err != nil || done == nil || done.ConfigHash != hash || strings.Join(done.Stages, ",") != "a,b" {
		t.Fatalf("done marker = %+v, %v", done, err)
	}
	info, err := os.Stat(filepath.Join(e.State.Dir, "done"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("done marker mode: %v %v", info, err)
	}

	before := snapshot(t, e.Env.Root)
	out, err = e.Run(context.Background(), plan, plan)
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
	plan := []stage.Stage{a, b}
	if _, err := e.Run(context.Background(), plan, plan); err != nil {
		t.Fatal(err)
	}
	// What a reboot does to kernel state: the effect is gone, the record stays.
	if err := os.Remove(filepath.Join(e.Env.Root, "etc/b")); err != nil {
		t.Fatal(err)
	}
	out, err := e.Run(context.Background(), plan, plan)
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
	plan := []stage.Stage{a}
	if _, err := e.Run(context.Background(), plan, plan); err != nil {
		t.Fatal(err)
	}
	e.Env.Config.Hostname = "n2"
	// Only part of a two-stage plan runs: the node is not done with n2.
	other := &fileStage{name: "other", path: "/etc/other"}
	if _, err := e.Run(context.Background(), []stage.Stage{a, other}, plan); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(e.Env.Root, "etc/a")); string(data) != "n2" {
		t.Errorf("etc/a = %q, want n2", data)
	}
	if done, _ := e.State.Done(); done != nil {
		t.Errorf("done marker %+v stayed while stage other has not applied the new config", done)
	}
	if r, _ := e.State.Stage("a"); r == nil || r.ConfigHash != e.Env.Config.Hash() {
		t.Errorf("record of a = %+v, want the new hash", r)
	}
}

func TestTemporaryErrorsAreRetriedWithBackoff(t *testing.T) {
	e := newEngine(t, "n1")
	f := &flakyStage{failures: 2}
	plan := []stage.Stage{f}
	out, err := e.Run(context.Background(), plan, plan)
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
	plan := []stage.Stage{f, after}

	_, err := e.Run(context.Background(), plan, plan)
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
	if _, err := e.Run(context.Background(), plan, plan); err != nil {
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
	if _, err := e.Run(context.Background(), []stage.Stage{f}, []stage.Stage{f}); err == nil {
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
	plan := []stage.Stage{a, bad}
	_, err := e.Run(context.Background(), plan, plan)
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
	plan := []stage.Stage{&fileStage{name: "a", path: "/etc/a"}, &fileStage{name: "b", path: "/etc/b"}}
	var seen []string
	e.AfterStage = func(name string) {
		r, err := e.State.Stage(name)
		if err != nil || r == nil {
			t.Errorf("AfterStage(%s) before its record was written", name)
		}
		seen = append(seen, name)
	}
	if _, err := e.Run(context.Background(), plan, plan); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "a,b" {
		t.Errorf("AfterStage saw %v", seen)
	}
}

func TestSelect(t *testing.T) {
	plan := []stage.Stage{&fileStage{name: "hostname"}, &fileStage{name: "network"}, &fileStage{name: "sysprep"}}
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
	planned, err := e.Plan(context.Background(), []stage.Stage{a})
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
	plan := []stage.Stage{late}
	if _, err := e.Run(context.Background(), plan, plan); err != nil {
		t.Fatal(err)
	}
	if late.calls != 3 || late.applies != 1 {
		t.Errorf("validated %d times, applied %d times; want 3 and 1", late.calls, late.applies)
	}

	// A permanent problem next to a temporary one is not worth waiting for.
	e = newEngine(t, "n1")
	late = &lateLinkStage{fileStage: fileStage{name: "network", path: "/etc/net"}, failures: 10}
	bad := &invalidStage{fileStage{name: "other", path: "/etc/other"}}
	plan = []stage.Stage{late, bad}
	_, err := e.Run(context.Background(), plan, plan)
	if err == nil || !strings.Contains(err.Error(), "yet") || !strings.Contains(err.Error(), "other: no link") {
		t.Fatalf("err = %v, want both problems", err)
	}
	if late.calls != 1 {
		t.Errorf("validated %d times, want 1", late.calls)
	}
}
