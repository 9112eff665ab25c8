package main

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

func TestJournalEntry(t *testing.T) {
	h := (&journalHandler{}).WithAttrs([]slog.Attr{slog.String("stage", "network")}).(*journalHandler)
	r := slog.NewRecord(time.Now(), slog.LevelWarn, "temporary failure; retrying", 0)
	r.AddAttrs(slog.String("err", "no carrier on enp1s0"), slog.Int("attempt", 2))
	msg, pri, fields := h.entry(r)
	if want := `temporary failure; retrying stage=network err="no carrier on enp1s0" attempt=2`; msg != want {
		t.Errorf("MESSAGE = %q, want %q", msg, want)
	}
	if pri != journal.PriWarning {
		t.Errorf("priority %v", pri)
	}
	want := map[string]string{"BOOTSTRAPD_STAGE": "network", "BOOTSTRAPD_ERR": "no carrier on enp1s0", "BOOTSTRAPD_ATTEMPT": "2"}
	if fmt.Sprint(fields) != fmt.Sprint(want) {
		t.Errorf("fields = %v, want %v", fields, want)
	}
}

func TestStderrIsJournal(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !stderrIsJournal() {
		t.Error("JOURNAL_STREAM naming stderr not recognised")
	}
	// A child that inherited the variable but writes elsewhere.
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1))
	if stderrIsJournal() {
		t.Error("JOURNAL_STREAM naming another file taken for stderr")
	}
	os.Unsetenv("JOURNAL_STREAM")
	if stderrIsJournal() {
		t.Error("no JOURNAL_STREAM taken for the journal")
	}
}
