package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/state"
)

// Issue 10 item 9: status printed the instance id raw, so escape sequences
// and newlines in a NoCloud meta-data spoofed its output.
func TestStatusEscapesEveryField(t *testing.T) {
	root := t.TempDir()
	st := state.Open(root)
	spoof := "iid-1\x1b[2J\x1b[H\ndone:    yes\u202e\xff"
	if err := st.PutSource(state.Source{Source: "NoCloud volume /dev/sr0 (iso9660, label \"cidata\x07\")", ConfigHash: "abc\r", InstanceID: spoof, Loaded: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutFailure(state.Failure{Stage: "source\tx", Reason: "user-data:1:1: bad \x1b]0;title\x07\nfailed:  no", Attempts: 1, Time: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutStage(state.StageRecord{Stage: "net\nwork", ConfigHash: "abc", Duration: "1s\x1b[31m"}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := printStatus(root, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, bad := range []string{"\x1b", "\x07", "\r", "\u202e", "\xff", "\nfailed:  no", "\ndone:    yes", "source\tx"} {
		if strings.Contains(got, bad) {
			t.Errorf("status output holds %q:\n%s", bad, got)
		}
	}
	for _, want := range []string{`instance-id: iid-1\u001b[2J\u001b[H\u000adone:    yes\u202e` + "\ufffd" /* JSON stores \xff so */, "\n         failed:  no", `net\u000awork`} {
		if !strings.Contains(got, want) {
			t.Errorf("status output lacks %q:\n%s", want, got)
		}
	}
}

func TestStatusLine(t *testing.T) {
	for in, want := range map[string]string{
		"network: 2 changes":                 "network: 2 changes",
		"failed: a\nb\nc":                    "failed: a (and 2 more lines: bootstrapd status)",
		"failed: \x1b[2J":                    `failed: \u001b[2J`,
		"x" + strings.Repeat("é", 400) + "y": "x" + strings.Repeat("é", 149) + "... (and 0 more lines: bootstrapd status)",
	} {
		if got := statusLine(in); got != want {
			t.Errorf("statusLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// The journal's MESSAGE quotes a value holding an escape sequence, so
// journalctl shows it rather than the terminal obeying it.
func TestJournalMessageQuotesControlCharacters(t *testing.T) {
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "machine config loaded", 0)
	r.AddAttrs(slog.String("source", "NoCloud volume /dev/sr0 (iso9660, label \"x\x1b[2J\")"), slog.String("id", "iid\x1b]0;t\x07"))
	msg, _, _ := (&journalHandler{}).entry(r)
	if strings.ContainsAny(msg, "\x1b\x07") || !strings.Contains(msg, `id="iid\x1b]0;t\a"`) {
		t.Errorf("MESSAGE = %q", msg)
	}
}
