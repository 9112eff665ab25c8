package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/state"
)

func TestUsageErrorsTouchNothing(t *testing.T) {
	root := t.TempDir()
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"run", "--only", "hostname,netwrk", "--root", root},
		{"plan", "--root", root, "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := dispatch(args, &stdout, &stderr); code != exitUsage {
			t.Errorf("bootstrapd %v: exit %d, want %d\n%s", args, code, exitUsage, stderr.String())
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("usage errors wrote %v", entries)
	}
}

func TestStatusWithoutState(t *testing.T) {
	var stdout, stderr bytes.Buffer
	root := t.TempDir()
	if code := dispatch([]string{"status", "--root", root}, &stdout, &stderr); code != exitFail {
		t.Errorf("exit %d, want %d", code, exitFail)
	}
	if want := "no state under " + filepath.Join(root, "var/lib/kubeboot"); !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q lacks %q", stderr.String(), want)
	}
}

// TestStatusOnFailureShowsWhatToDo builds a state directory as a failed
// join leaves it (records of the host stages, the failed marker, the
// kubeadm stage's masked log of 30 lines) and checks status shows the
// reason, the last 20 lines of the log, how to retry, and the stages of
// both phases, with no control character reaching the terminal.
func TestStatusOnFailureShowsWhatToDo(t *testing.T) {
	root := t.TempDir()
	st := state.Open(root)
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	if err := st.PutSource(state.Source{Source: "NoCloud CIDATA", ConfigHash: "abc", Loaded: now}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"hostname", "network"} {
		if err := st.PutStage(state.StageRecord{Stage: name, Kind: "converge", Phase: "host", Fingerprint: "f", ConfigHash: "abc",
			Started: now, Finished: now, Duration: "12ms", Attempts: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.PutFailure(state.Failure{Stage: "kubeadm-join", Reason: "stage kubeadm-join: endpoint controller.home.local:6443 unreachable, retrying\x1b[2J",
		Attempts: 12, ConfigHash: "abc", Time: now}); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&log, "[preflight] line %d\n", i)
	}
	dir := st.StageDir("kubeadm-join")
	os.MkdirAll(dir, 0o700)
	if err := os.WriteFile(filepath.Join(dir, "kubeadm.log"), []byte(log.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"status", "--root", root}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	t.Log("\n" + out)
	for _, want := range []string{
		"failed:  stage kubeadm-join at 2026-11-29T12:00:00Z after 12 attempts: stage kubeadm-join: endpoint controller.home.local:6443 unreachable, retrying\\u001b[2J\n",
		"         last 20 lines of /var/lib/kubeboot/stages/kubeadm-join/kubeadm.log:\n           | [preflight] line 11\n",
		"           | [preflight] line 30\n         to retry: ",
		"boot:    bootstrapd has not run on this boot\n",
		"phase host:\n", "phase kubernetes:\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	if strings.Contains(out, "line 10\n") || strings.ContainsRune(out, 0x1b) {
		t.Error("status shows more than 20 lines of the log, or a raw escape")
	}
	if !regexp.MustCompile(`(?m)^  network +converge +recorded +12ms +1 +2026-11-29T12:00:00Z +abc$`).MatchString(out) {
		t.Error("status lacks the network stage's record")
	}
}

// TestStatusShowsTheDoneMarkersTimings: the done marker's per-stage
// timings and their sum.
func TestStatusShowsTheDoneMarkersTimings(t *testing.T) {
	root := t.TempDir()
	st := state.Open(root)
	if err := st.PutDone(state.Done{ConfigHash: "abc", Source: "test", Time: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC),
		Stages: []state.StageTiming{{Stage: "hostname", Duration: "5ms", Attempts: 1}, {Stage: "kubeadm-init", Duration: "2m10s", Attempts: 1}, {Stage: "wait-ready", Duration: "55.995s", Attempts: 1}}}); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"status", "--root", root}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	want := "done:    2026-11-29T12:00:00Z (config abc); the stages took 3m6s\n         hostname 5ms, kubeadm-init 2m10s, wait-ready 55.995s\n"
	if !strings.Contains(stdout.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, stdout.String())
	}
}
