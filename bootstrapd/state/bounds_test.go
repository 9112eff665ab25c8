package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 10 item 9: the initrd makes /var/lib/kubeboot 0755, and it stayed
// 0755 although the state in it is root's alone.
func TestExistingStateDirIsMadePrivate(t *testing.T) {
	for name, touch := range map[string]func(*Store) error{
		"lock":   func(s *Store) error { release, err := s.Lock(); release(); return err },
		"record": func(s *Store) error { return s.PutSource(Source{Source: "test", Loaded: time.Now()}) },
	} {
		t.Run(name, func(t *testing.T) {
			s := Open(t.TempDir())
			if err := os.MkdirAll(s.Dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(s.Dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := touch(s); err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(s.Dir); st.Mode().Perm() != 0o700 {
				t.Errorf("state dir mode %v, want 0700", st.Mode().Perm())
			}
		})
	}
}

// Issue 10 item 2: a 4 MB config wrote a 30 MB failed marker that status
// printed whole.
func TestFailureReasonIsBounded(t *testing.T) {
	s := Open(t.TempDir())
	long := strings.Repeat("user-data:1:1: unknown key \"é\"\n", 100000)
	if err := s.PutFailure(Failure{Stage: "source", Reason: long, Attempts: 1, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(s.Dir, "failed"))
	if err != nil || st.Size() > 2*MaxReason {
		t.Fatalf("failed marker of %v bytes (%v), want about %d", st.Size(), err, MaxReason)
	}
	f, err := s.Failure()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.Reason, long[:1000]) || !strings.Contains(f.Reason, "more bytes; bootstrapd plan shows the whole error") {
		t.Errorf("reason = %q...", f.Reason[:200])
	}

	// A record bootstrapd could not have written is refused, not read whole.
	if err := os.WriteFile(filepath.Join(s.Dir, "source.json"), []byte(`{"source":"`+strings.Repeat("x", 2<<20)+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Source(); err == nil || !strings.Contains(err.Error(), "larger than 1024 KiB") {
		t.Errorf("oversized record: err = %v", err)
	}
}
