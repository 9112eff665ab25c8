package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordsRoundTripAtomically(t *testing.T) {
	s := Open(t.TempDir())
	if r, err := s.Stage("network"); r != nil || err != nil {
		t.Fatalf("missing record = %v, %v", r, err)
	}
	rec := StageRecord{Stage: "network", ConfigHash: "abc", Started: time.Unix(10, 0).UTC(), Finished: time.Unix(11, 0).UTC(), Duration: "1s", Attempts: 2, Changes: []string{"enp1s0: add address 172.16.0.11/24"}}
	if err := s.PutStage(rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.Stage("network")
	if err != nil || got.ConfigHash != "abc" || got.Attempts != 2 || len(got.Changes) != 1 || !got.Finished.Equal(rec.Finished) {
		t.Fatalf("read back %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(filepath.Join(s.Dir, "stages"))
	if len(entries) != 1 {
		t.Errorf("stages dir holds %v; temporary files must not stay", entries)
	}
	info, _ := os.Stat(s.Dir)
	if info.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v", info.Mode())
	}

	if err := os.WriteFile(filepath.Join(s.Dir, "failed"), []byte("{half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Failure(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt marker: %v", err)
	}
	if err := s.ClearFailure(); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearFailure(); err != nil {
		t.Errorf("clearing a missing marker: %v", err)
	}
}

func TestLockIsExclusive(t *testing.T) {
	s := Open(t.TempDir())
	release, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description: a second open, as a
	// second process would make, is refused.
	if _, err := s.Lock(); err == nil || !strings.Contains(err.Error(), "another bootstrapd is running") {
		t.Errorf("second lock: %v", err)
	}
	release()
	again, err := s.Lock()
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again()
}
